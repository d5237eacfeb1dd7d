//! A TLS client's handshake, on the worker's stream runtime, and the handoff of the
//! established connection to the data-plane thread: rustls negotiates, then gives up the
//! traffic keys ([`RecordLayer`]) and the plain socket.
//!
//! The handshake reads the socket one record at a time and stops as soon as rustls says it is
//! done, so rustls never holds bytes past the record that finished it: whatever the client
//! sends next is still in the socket, where the record layer will read it.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::tls_records::{HEADER, MAX_RECORD, RecordError, RecordLayer};

/// Why a TLS client did not get through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake timed out")]
    TimedOut,
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
    #[error("TLS handshake failed: {0}")]
    Refused(#[source] rustls::Error),
    #[error("TLS handshake left a record half read")]
    MidRecord,
    #[error("cannot take over the TLS session: {0}")]
    Handoff(#[from] rustls::Error),
    #[error("cannot take over the TLS session: {0}")]
    Records(#[from] RecordError),
}

/// An established TLS connection, ready for the data-plane thread.
pub(crate) struct Established {
    /// The plain socket, non-blocking.
    pub socket: std::net::TcpStream,
    pub records: RecordLayer,
    /// Application data rustls decrypted before the handoff (normally none).
    pub early: Vec<u8>,
}

/// Runs the handshake within `within` and takes the session over from rustls.
pub(crate) async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    within: Duration,
) -> Result<Established, HandshakeError> {
    tokio::time::timeout(within, negotiate(config, stream))
        .await
        .map_err(|_| HandshakeError::TimedOut)?
}

async fn negotiate(
    config: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
) -> Result<Established, HandshakeError> {
    let mut conn = rustls::ServerConnection::new(config).map_err(HandshakeError::Refused)?;
    let mut io = RecordAtATime::new(tcp);
    let mut flight = Vec::new();
    let mut record = vec![0u8; MAX_RECORD];
    loop {
        // What rustls has to say first: its handshake flights, an alert on failure, and after
        // the last flight TLS 1.3 session tickets.
        flight.clear();
        while conn.wants_write() {
            conn.write_tls(&mut flight)
                .map_err(HandshakeError::Failed)?;
        }
        io.inner
            .write_all(&flight)
            .await
            .map_err(HandshakeError::Failed)?;
        if !conn.is_handshaking() {
            break;
        }
        // Reading stops the moment the handshake is done: what the client sends next stays
        // in the socket for the record layer.
        let n = io.read(&mut record).await.map_err(HandshakeError::Failed)?;
        if n == 0 {
            return Err(HandshakeError::Failed(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut received = &record[..n];
        while !received.is_empty() {
            conn.read_tls(&mut received)
                .map_err(HandshakeError::Failed)?;
            if let Err(e) = conn.process_new_packets() {
                // Tell the client why (rustls queued an alert), then give up.
                flight.clear();
                while conn.wants_write() && conn.write_tls(&mut flight).is_ok() {}
                let _ = io.inner.write_all(&flight).await;
                return Err(HandshakeError::Refused(e));
            }
        }
    }
    if !io.at_boundary() {
        return Err(HandshakeError::MidRecord);
    }
    let mut early = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => early.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(HandshakeError::Failed(e)),
        }
    }
    let version = conn.protocol_version();
    let records = RecordLayer::new(version, &conn.dangerous_extract_secrets()?)?;
    let socket = io.inner.into_std().map_err(HandshakeError::Failed)?;
    Ok(Established {
        socket,
        records,
        early,
    })
}

/// A reader that never returns bytes past the end of the current TLS record.
struct RecordAtATime<S> {
    inner: S,
    header: [u8; HEADER],
    /// Header bytes read of the next record.
    have: usize,
    /// Body bytes still to read of the current record.
    body_left: usize,
}

impl<S> RecordAtATime<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            header: [0; HEADER],
            have: 0,
            body_left: 0,
        }
    }

    fn at_boundary(&self) -> bool {
        self.have == 0 && self.body_left == 0
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordAtATime<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let limit = if this.body_left > 0 {
            this.body_left
        } else {
            HEADER - this.have
        };
        let dst = buf.initialize_unfilled_to(limit.min(buf.remaining()));
        let mut part = ReadBuf::new(dst);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut part))?;
        let n = part.filled().len();
        if this.body_left > 0 {
            this.body_left -= n;
        } else {
            this.header[this.have..this.have + n].copy_from_slice(&dst[..n]);
            this.have += n;
            if this.have == HEADER {
                this.have = 0;
                this.body_left = usize::from(u16::from_be_bytes([this.header[3], this.header[4]]));
            }
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reads_stop_at_every_record_boundary() {
        let records: Vec<u8> = [
            &[22, 3, 3, 0, 2, 0xA, 0xB][..],
            &[23, 3, 3, 0, 0][..],
            &[23, 3, 3, 0, 3, 1, 2, 3][..],
        ]
        .concat();
        let mut reader = RecordAtATime::new(&records[..]);
        let mut buf = [0u8; 64];
        let mut reads = Vec::new();
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            reads.push(buf[..n].to_vec());
        }
        assert_eq!(reads.concat(), records);
        // Each read ends at a header's or a body's end, never past it.
        let mut at = 0;
        let ends = [5, 7, 12, 17, 20];
        for read in &reads {
            at += read.len();
            assert!(ends.contains(&at), "a read ended at {at}");
        }
        assert!(reader.at_boundary());
    }
}
