//! TURN over TCP or TLS (RFC 8656 §3.1) for the generator: each allocation has its own
//! connection, on which STUN messages and ChannelData follow each other, ChannelData padded
//! to a multiple of 4 (RFC 8656 §12.5). The relay itself stays UDP (REQUESTED-TRANSPORT 17).
//!
//! Input is framed in a per-lane buffer, since a frame may arrive in pieces. Output goes
//! through a bounded per-lane buffer: when the server stops reading and it fills up, further
//! data packets are dropped and counted rather than blocking the loop; a little room is kept
//! for refresh requests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::control::{Exchange, Request};
use super::link::{Connector, Link};
use super::tls::TlsConn;
use super::{LoadError, mono_now};
use crate::proto::{Class, Message, TransactionId, next_frame};
use crate::sys::mmsg::RecvBatch;

/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for its answer: sent once over a reliable transport (RFC 8489
/// §6.2.2), about as long as the UDP retransmissions take to give up.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Input buffered per connection, at least (and at least two frames).
const IN_BYTES: usize = 8 * 1024;
/// Output buffered per connection for data packets, at least (and at least four packets).
const OUT_BYTES: usize = 32 * 1024;
/// Output room beyond that for control messages (one refresh of < 512 bytes at a time).
const CONTROL_RESERVE: usize = 2048;
/// Write calls per flush at most.
const MAX_WRITES: usize = 16;

/// The byte stream under a lane.
#[derive(Debug)]
enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsConn>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Tcp(tcp) => tcp,
            Self::Tls(tls) => tls.tcp(),
        }
    }

    /// `Ok(0)` at the end of the stream; `Interrupted` after progress without data.
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(tcp) => tcp.read(dst),
            Self::Tls(tls) => tls.read(dst),
        }
    }

    /// May take less than `src`, `Ok(0)` when nothing fits now.
    fn write(&mut self, src: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(tcp) => tcp.write(src),
            Self::Tls(tls) => tls.write(src),
        }
    }

    /// Sends bytes kept below the plaintext (TLS records).
    fn push(&mut self) -> io::Result<()> {
        match self {
            Self::Tcp(_) => Ok(()),
            Self::Tls(tls) => tls.push(),
        }
    }

    fn wants_write(&self) -> bool {
        match self {
            Self::Tcp(_) => false,
            Self::Tls(tls) => tls.wants_write(),
        }
    }

    fn pending(&self) -> bool {
        match self {
            Self::Tcp(_) => false,
            Self::Tls(tls) => tls.pending(),
        }
    }
}

/// A lane over TCP or TLS.
#[derive(Debug)]
pub(super) struct StreamLink {
    conn: Conn,
    server: SocketAddr,
    /// Received bytes `rx[..rx_len]`, of which `rx[..rx_used]` were handed out as frames.
    rx: Box<[u8]>,
    rx_len: usize,
    rx_used: usize,
    /// (start, length) in `rx` of the frames of the last read.
    frames: Vec<(usize, usize)>,
    /// Bytes `out[head..tail]` wait to be written.
    out: Box<[u8]>,
    head: usize,
    tail: usize,
    /// Data packets fill `out` up to here; the rest is for control messages.
    data_limit: usize,
    wire_len: usize,
    /// Where a packet that does not fit is written, to be dropped.
    spare: Vec<u8>,
    dropping: bool,
}

impl StreamLink {
    /// Reads what is waiting and frames it (RFC 8656 §12.5); see [`Link::recv`].
    fn read_frames(&mut self) -> Result<Option<usize>, LoadError> {
        // The frames of the previous read are consumed: keep only the partial one after them.
        if self.rx_used > 0 {
            self.rx.copy_within(self.rx_used..self.rx_len, 0);
            self.rx_len -= self.rx_used;
            self.rx_used = 0;
        }
        self.frames.clear();
        let n = match self.conn.read(&mut self.rx[self.rx_len..]) {
            Ok(0) => {
                return Err(LoadError::Closed {
                    server: self.server,
                });
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Some(0)),
            Err(e) => return Err(self.failed(e)),
        };
        self.rx_len += n;
        let mut at = 0;
        loop {
            let frame =
                next_frame(&self.rx[at..self.rx_len]).map_err(|error| LoadError::Framing {
                    server: self.server,
                    error,
                })?;
            let Some(frame) = frame else { break };
            self.frames.push((at, frame.len));
            at += frame.len;
        }
        if at == 0 && self.rx_len == self.rx.len() {
            return Err(LoadError::BadResponse {
                what: "stream input",
                why: "a frame longer than any the generator expects",
            });
        }
        self.rx_used = at;
        Ok(Some(self.frames.len()))
    }

    fn frame_at(&self, i: usize) -> &[u8] {
        self.frames
            .get(i)
            .and_then(|&(start, len)| self.rx.get(start..start + len))
            .unwrap_or_default()
    }

    /// Moves the unsent bytes to the front of `out`.
    fn compact(&mut self) {
        if self.head > 0 {
            self.out.copy_within(self.head..self.tail, 0);
            self.tail -= self.head;
            self.head = 0;
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        for _ in 0..MAX_WRITES {
            if self.head == self.tail {
                break;
            }
            match self.conn.write(&self.out[self.head..self.tail]) {
                Ok(0) => break, // TLS buffer full: the socket has to drain first
                Ok(n) => self.head += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.head == self.tail {
            (self.head, self.tail) = (0, 0);
        }
        self.conn.push()
    }

    /// Writes everything queued on the blocking socket, by `deadline`.
    fn drain(&mut self, deadline: Instant, req: Request) -> Result<(), LoadError> {
        while !self.is_idle() {
            if mono_now() >= deadline {
                return Err(self.timeout(req));
            }
            self.flush()?;
        }
        Ok(())
    }

    fn timeout(&self, req: Request) -> LoadError {
        LoadError::Timeout {
            what: req.name(),
            server: self.server,
            attempts: 1,
        }
    }

    fn failed(&self, e: io::Error) -> LoadError {
        // rustls errors (a bad record, an alert) arrive wrapped in an I/O error: say TLS.
        if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            return LoadError::Tls {
                server: self.server,
                error: e,
            };
        }
        match e.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => LoadError::Closed {
                server: self.server,
            },
            _ => LoadError::Io(e),
        }
    }
}

impl Exchange for StreamLink {
    fn exchange(
        &mut self,
        out: &[u8],
        tid: TransactionId,
        buf: &mut [u8],
        req: Request,
    ) -> Result<usize, LoadError> {
        let deadline = mono_now() + ANSWER_TIMEOUT;
        // Data still queued goes first, so the request always finds room.
        self.drain(deadline, req)?;
        self.send_control(out)?;
        self.drain(deadline, req)?;
        loop {
            let left = deadline.saturating_duration_since(mono_now());
            if left.is_zero() {
                return Err(self.timeout(req));
            }
            self.conn.tcp().set_read_timeout(Some(left))?;
            let Some(n) = self.read_frames()? else {
                continue;
            };
            // Late data and answers to other requests are skipped.
            for i in 0..n {
                let frame = self.frame_at(i);
                let answer = Message::parse(frame)
                    .is_ok_and(|m| m.transaction_id() == tid && m.class() != Class::Indication);
                if answer {
                    let dst = buf.get_mut(..frame.len()).ok_or(LoadError::BadResponse {
                        what: req.name(),
                        why: "response longer than the receive buffer",
                    })?;
                    dst.copy_from_slice(frame);
                    return Ok(frame.len());
                }
            }
        }
    }
}

impl Link for StreamLink {
    const RELIABLE: bool = true;
    const PAD: bool = true;

    fn open(connector: &Connector) -> Result<Self, LoadError> {
        let server = connector.server;
        let tcp = TcpStream::connect_timeout(&server, CONNECT_TIMEOUT).map_err(|error| {
            LoadError::Connect {
                addr: server,
                error,
            }
        })?;
        // Nagle's algorithm would hold small packets back: the RTT would time it, not the
        // server.
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        tcp.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        let conn = match &connector.tls {
            None => Conn::Tcp(tcp),
            Some(target) => Conn::Tls(Box::new(TlsConn::handshake(tcp, target, server)?)),
        };
        let wire_len = connector.wire_len;
        let data_limit = OUT_BYTES.max(4 * wire_len);
        Ok(Self {
            conn,
            server,
            rx: vec![0; IN_BYTES.max(2 * wire_len)].into_boxed_slice(),
            rx_len: 0,
            rx_used: 0,
            frames: Vec::with_capacity(64),
            out: vec![0; data_limit + CONTROL_RESERVE].into_boxed_slice(),
            head: 0,
            tail: 0,
            data_limit,
            wire_len,
            spare: Vec::new(),
            dropping: false,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.conn.tcp().as_fd()
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<(), LoadError> {
        let tcp = self.conn.tcp();
        tcp.set_nonblocking(!blocking)?;
        if blocking {
            tcp.set_read_timeout(Some(ANSWER_TIMEOUT))?;
            tcp.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        }
        Ok(())
    }

    fn recv(&mut self, _rx: &mut RecvBatch) -> Result<Option<usize>, LoadError> {
        self.read_frames()
    }

    fn frame<'a>(&'a self, _rx: &'a RecvBatch, i: usize) -> &'a [u8] {
        self.frame_at(i)
    }

    fn pending(&self) -> bool {
        self.conn.pending()
    }

    fn next_buf(&mut self) -> Option<&mut [u8]> {
        let len = self.wire_len;
        if self.tail + len > self.data_limit {
            self.compact();
        }
        self.dropping = self.tail + len > self.data_limit;
        if self.dropping {
            self.spare.resize(len, 0);
            return Some(&mut self.spare);
        }
        self.out.get_mut(self.tail..self.tail + len)
    }

    fn commit(&mut self, len: usize) -> bool {
        if std::mem::take(&mut self.dropping) {
            return false;
        }
        self.tail += len.min(self.wire_len);
        true
    }

    fn is_idle(&self) -> bool {
        self.head == self.tail && !self.conn.wants_write()
    }

    fn flush(&mut self) -> Result<u64, LoadError> {
        self.write_out().map_err(|e| self.failed(e))?;
        Ok(0)
    }

    fn send_control(&mut self, msg: &[u8]) -> Result<(), LoadError> {
        if self.tail + msg.len() > self.out.len() {
            self.compact();
        }
        let Some(dst) = self.out.get_mut(self.tail..self.tail + msg.len()) else {
            return Ok(()); // no room even in the reserve: lost, and the request times out
        };
        dst.copy_from_slice(msg);
        self.tail += msg.len();
        self.flush().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::proto::{ChannelData, MessageType, MessageWriter, Method, write_channel_data};

    /// A link to a bare TCP listener standing in for the server, and the server's end.
    fn pair() -> (StreamLink, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let connector = Connector {
            server: listener.local_addr().unwrap(),
            tls: None,
            wire_len: 164,
        };
        let link = StreamLink::open(&connector).unwrap();
        let (server, _) = listener.accept().unwrap();
        (link, server)
    }

    fn binding_success(tid: TransactionId) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let n = MessageWriter::new(&mut buf, ty, tid).unwrap().finish();
        buf[..n].to_vec()
    }

    #[test]
    fn rustls_errors_are_tls_errors_and_a_reset_is_a_closed_connection() {
        let (link, _server) = pair();
        let tls = io::Error::other(rustls::Error::DecryptError);
        assert!(matches!(link.failed(tls), LoadError::Tls { .. }));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(matches!(link.failed(reset), LoadError::Closed { .. }));
        let other = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(matches!(link.failed(other), LoadError::Io(_)));
    }

    #[test]
    fn frames_split_across_reads_come_out_whole_and_in_order() {
        let (mut link, mut server) = pair();
        let stun = binding_success(TransactionId([7; 12]));
        let mut channel_data = [0u8; 12];
        channel_data[4..9].copy_from_slice(b"hello");
        // RFC 8656 §12.5: 5 data bytes and 3 of padding on a stream.
        assert_eq!(
            write_channel_data(&mut channel_data, 0x4000, 5, true),
            Some(12)
        );
        let bytes = [&stun[..], &channel_data[..]].concat();
        let mut frames = Vec::new();
        for byte in &bytes {
            server.write_all(&[*byte]).unwrap();
            // Blocking with a read timeout: each call sees at least the byte just written.
            let n = link.read_frames().unwrap().expect("a byte was written");
            frames.extend((0..n).map(|i| link.frame_at(i).to_vec()));
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], stun);
        assert_eq!(frames[1].len(), 12, "the padding is part of the frame");
        assert_eq!(ChannelData::parse(&frames[1]).unwrap().data(), b"hello");
    }

    #[test]
    fn a_stalled_server_costs_dropped_packets_not_a_blocked_loop() {
        let (mut link, _server) = pair(); // never reads
        link.set_blocking(false).unwrap();
        let (mut queued, mut dropped) = (0u64, 0u64);
        // Far more than the socket buffers, the send queue and `out` together hold.
        for _ in 0..200_000 {
            let buf = link.next_buf().unwrap();
            let len = write_channel_data(buf, 0x4000, 100, true).unwrap();
            if link.commit(len) {
                queued += 1;
            } else {
                dropped += 1;
            }
            link.flush().unwrap();
        }
        assert!(
            queued > 0 && dropped > 0,
            "{queued} queued, {dropped} dropped"
        );
        assert!(!link.is_idle());
        assert!(link.tail <= link.data_limit, "data stays within its bound");
        // Without flushing, data fills `out` up to its bound, then is dropped...
        for _ in 0..link.data_limit {
            let buf = link.next_buf().unwrap();
            let len = write_channel_data(buf, 0x4000, 100, true).unwrap();
            if !link.commit(len) {
                break;
            }
        }
        let data_tail = link.tail;
        assert!(data_tail + link.wire_len > link.data_limit);
        // ...while a refresh still finds room in the reserve beyond it.
        link.send_control(&[0xAB; 100]).unwrap();
        assert_eq!(link.out[data_tail..data_tail + 100], [0xAB; 100]);
    }

    #[test]
    fn bytes_that_are_neither_stun_nor_channel_data_fail_the_lane() {
        let (mut link, mut server) = pair();
        server.write_all(&[0x80; 8]).unwrap();
        let err = link.read_frames().unwrap_err();
        assert!(matches!(err, LoadError::Framing { .. }), "{err}");
    }

    #[test]
    fn a_closed_connection_is_reported_as_closed() {
        let (mut link, server) = pair();
        drop(server);
        let err = link.read_frames().unwrap_err();
        assert!(matches!(err, LoadError::Closed { .. }), "{err}");
    }

    #[test]
    fn an_exchange_skips_data_and_returns_the_matching_response() {
        let (mut link, mut server) = pair();
        let tid = TransactionId([9; 12]);
        let answer = binding_success(tid);
        let other = binding_success(TransactionId([1; 12]));
        let mut data = [0u8; 8];
        let n = write_channel_data(&mut data, 0x4000, 1, true).unwrap();
        let thread = std::thread::spawn(move || {
            let mut request = [0u8; 4];
            server.read_exact(&mut request).unwrap();
            server
                .write_all(&[&data[..n], &other, &answer].concat())
                .unwrap();
            server
        });
        let mut buf = [0u8; 1500];
        let len = link
            .exchange(b"ping", tid, &mut buf, Request::Refresh { lifetime: 0 })
            .unwrap();
        let _server = thread.join().unwrap();
        assert_eq!(&buf[..len], &binding_success(tid)[..]);
    }
}
