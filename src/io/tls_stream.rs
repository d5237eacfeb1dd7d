//! A TLS connection taken over from rustls (`tls_handoff`) as a tokio stream, for the RFC
//! 6062 splice of a TLS data connection: the same [`RecordLayer`] the data-plane thread used,
//! carried on where it stopped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::tls_records::{MAX_PLAINTEXT, RecordError, RecordLayer};

pub(crate) struct RecordStream {
    tcp: TcpStream,
    records: RecordLayer,
    /// Received, not decrypted yet.
    input: Vec<u8>,
    /// Decrypted, not read yet: `plain[plain_at..]`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Sealed, not written yet: `out[out_at..]`.
    out: Vec<u8>,
    out_at: usize,
    /// close_notify sealed.
    closed: bool,
}

impl RecordStream {
    /// `input`: records received and not opened; `out`: sealed bytes not written yet.
    pub fn new(tcp: TcpStream, records: RecordLayer, input: Vec<u8>, out: Vec<u8>) -> Self {
        Self {
            tcp,
            records,
            input,
            plain: Vec::new(),
            plain_at: 0,
            out,
            out_at: 0,
            closed: false,
        }
    }

    /// Writes what is sealed.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.out.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.out[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        self.out.clear();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for RecordStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                return Poll::Ready(Ok(()));
            }
            match this.records.open(&mut this.input) {
                Ok(Some(opened)) => {
                    this.plain.clear();
                    this.plain_at = 0;
                    this.plain
                        .extend_from_slice(&this.input[opened.plaintext.clone()]);
                    this.input.drain(..opened.len);
                    continue;
                }
                Ok(None) => {}
                // close_notify or a fatal alert: the end of the client's bytes.
                Err(RecordError::Alert) => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(io::Error::other(e))),
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            this.input.extend_from_slice(read.filled());
        }
    }
}

impl AsyncWrite for RecordStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        let n = buf.len().min(MAX_PLAINTEXT);
        this.records
            .seal(&buf[..n], &mut this.out)
            .map_err(io::Error::other)?;
        // Queued either way; a write the socket cannot take yet is finished by the next call.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closed {
            // A clean end for the client, not a truncation (RFC 8446 §6.1).
            this.closed = true;
            this.records
                .seal_close_notify(&mut this.out)
                .map_err(io::Error::other)?;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
