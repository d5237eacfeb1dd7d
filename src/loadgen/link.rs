//! How one lane talks to the server ([`Link`]): over UDP ([`UdpLink`]) one datagram is one
//! STUN message or ChannelData; over TCP or TLS ([`super::stream::StreamLink`]) they are
//! framed on a stream (RFC 8656 §12.5). The data loop, setup and refreshes are written once
//! against this trait and monomorphized per transport, so the UDP path compiles to the same
//! code as a UDP-only loop.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};

use socket2::SockRef;

use super::control::{Exchange, Request, SOCKET_BUFFER_BYTES};
use super::tls::TlsTarget;
use super::{LoadConfig, LoadError, LoadTransport, wire};
use crate::proto::TransactionId;
use crate::sys::mmsg::{RecvBatch, SendBatch};

/// Datagrams per recvmmsg/sendmmsg at most.
pub(super) const BATCH: usize = 64;

/// Batch depth for datagrams of `wire_len` bytes (about 256 KiB of buffer per batch).
pub(super) fn batch_len(wire_len: usize) -> usize {
    (256 * 1024 / wire_len.max(1)).clamp(4, BATCH)
}

/// Everything a new lane needs to reach the server.
#[derive(Debug)]
pub(super) struct Connector {
    /// The server.
    pub server: SocketAddr,
    /// TLS client configuration and server name, for TURN over TLS.
    pub tls: Option<TlsTarget>,
    /// The largest datagram or frame sent or expected.
    pub wire_len: usize,
}

impl Connector {
    /// The connector for `config` (TLS: builds the client configuration).
    pub(super) fn new(config: &LoadConfig) -> Result<Self, LoadError> {
        let tls = match config.transport {
            LoadTransport::Tls => Some(TlsTarget::new(config)?),
            LoadTransport::Udp | LoadTransport::Tcp => None,
        };
        Ok(Self {
            server: config.server,
            tls,
            wire_len: wire::wire_len(config.payload),
        })
    }
}

/// One lane's connection to the server.
pub(super) trait Link: Exchange + Sized {
    /// Whether the transport is reliable: requests are then sent once, never retransmitted
    /// (RFC 8489 §6.2.2).
    const RELIABLE: bool;
    /// Whether ChannelData is padded to a multiple of 4 (RFC 8656 §12.5: over TCP/TLS).
    const PAD: bool;

    /// Opens a new connection (blocking until [`Link::set_blocking`] says otherwise).
    fn open(connector: &Connector) -> Result<Self, LoadError>;

    /// The socket to watch for input.
    fn fd(&self) -> BorrowedFd<'_>;

    /// Blocking for setup and teardown transactions; non-blocking for the data loop.
    fn set_blocking(&mut self, blocking: bool) -> Result<(), LoadError>;

    /// Receives what is waiting: `Some(n)` frames now readable with [`Link::frame`] (0 means
    /// "nothing complete yet, try again"), `None` when nothing is waiting.
    fn recv(&mut self, rx: &mut RecvBatch) -> Result<Option<usize>, LoadError>;

    /// Frame `i` of the last [`Link::recv`].
    fn frame<'a>(&'a self, rx: &'a RecvBatch, i: usize) -> &'a [u8];

    /// Input already received but not handed out yet (the socket will not report it ready).
    fn pending(&self) -> bool;

    /// Room for the next packet (at most `wire_len` bytes); `None` when the batch is full and
    /// must be flushed first.
    fn next_buf(&mut self) -> Option<&mut [u8]>;

    /// Queues the first `len` bytes of the buffer just given by [`Link::next_buf`]; `false`
    /// when the packet had to be dropped instead.
    fn commit(&mut self, len: usize) -> bool;

    /// Nothing queued to send.
    fn is_idle(&self) -> bool;

    /// Sends what is queued without blocking; returns the packets the kernel refused.
    fn flush(&mut self) -> Result<u64, LoadError>;

    /// Sends one control message now or queues it (a refresh during the run); lost like a
    /// datagram when there is no room.
    fn send_control(&mut self, msg: &[u8]) -> Result<(), LoadError>;
}

/// A lane over UDP: its own client socket, connected to the server, and a sendmmsg batch.
#[derive(Debug)]
pub(super) struct UdpLink {
    socket: UdpSocket,
    server: SocketAddr,
    tx: SendBatch,
}

impl UdpLink {
    /// Wraps a socket connected to `server`.
    pub(super) fn new(socket: UdpSocket, server: SocketAddr, wire_len: usize) -> Self {
        Self {
            socket,
            server,
            tx: SendBatch::new(batch_len(wire_len), wire_len),
        }
    }
}

impl Exchange for UdpLink {
    fn exchange(
        &mut self,
        out: &[u8],
        tid: TransactionId,
        buf: &mut [u8],
        req: Request,
    ) -> Result<usize, LoadError> {
        self.socket.exchange(out, tid, buf, req)
    }
}

impl Link for UdpLink {
    const RELIABLE: bool = false;
    const PAD: bool = false;

    /// A fresh client socket (no SO_REUSEADDR: one distinct 5-tuple per allocation).
    fn open(connector: &Connector) -> Result<Self, LoadError> {
        let local: SocketAddr = match connector.server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(|source| LoadError::Bind {
            addr: local,
            source,
        })?;
        socket.connect(connector.server)?;
        let sock = SockRef::from(&socket);
        // Best effort: a smaller buffer only means earlier drops under overload.
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        Ok(Self::new(socket, connector.server, connector.wire_len))
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    fn set_blocking(&mut self, blocking: bool) -> Result<(), LoadError> {
        Ok(self.socket.set_nonblocking(!blocking)?)
    }

    #[inline]
    fn recv(&mut self, rx: &mut RecvBatch) -> Result<Option<usize>, LoadError> {
        match rx.recv(self.socket.as_fd()) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            // ICMP errors from an earlier send surface here; UDP carries on.
            Err(e) if is_transient(&e) => Ok(Some(0)),
            Err(e) => Err(LoadError::Io(e)),
        }
    }

    #[inline]
    fn frame<'a>(&'a self, rx: &'a RecvBatch, i: usize) -> &'a [u8] {
        rx.datagram(i).0
    }

    #[inline]
    fn pending(&self) -> bool {
        false
    }

    #[inline]
    fn next_buf(&mut self) -> Option<&mut [u8]> {
        self.tx.next_buf()
    }

    #[inline]
    fn commit(&mut self, len: usize) -> bool {
        self.tx.commit(len, self.server);
        true
    }

    #[inline]
    fn is_idle(&self) -> bool {
        self.tx.is_empty()
    }

    #[inline]
    fn flush(&mut self) -> Result<u64, LoadError> {
        match self.tx.flush(self.socket.as_fd()) {
            Ok(stats) => Ok(stats.dropped as u64),
            // A full socket buffer keeps the rest queued.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(LoadError::Io(e)),
        }
    }

    fn send_control(&mut self, msg: &[u8]) -> Result<(), LoadError> {
        match self.socket.send(msg) {
            Ok(_) => Ok(()),
            // Lost like any datagram: the retransmission timer covers it.
            Err(e) if is_transient(&e) => Ok(()),
            Err(e) => Err(LoadError::Io(e)),
        }
    }
}

/// Errors a UDP socket reports for one datagram (a full buffer, an ICMP error for an earlier
/// one), not for the socket itself.
pub(super) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::HostUnreachable
    ) || e.raw_os_error() == Some(libc::EMSGSIZE)
}
