//! The probe's connection to the server: a connected UDP socket or a TCP/TLS stream carrying
//! framed STUN and ChannelData, with STUN transactions (retransmitted over UDP).

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use super::wire::{Reply, read_reply};
use crate::proto::{FramingError, MAX_FRAME, TransactionId, next_frame};

/// The first retransmission timeout (RFC 8489 §6.2.1: RTO 500 ms, doubled each time).
const RTO: Duration = Duration::from_millis(500);
/// Unmatched messages kept for later [`Conn::recv`] calls (Data indications during a transaction).
const MAX_PENDING: usize = 64;
/// Largest datagram read.
const MAX_DATAGRAM: usize = 65_536;

/// A byte stream: TCP or TLS over TCP.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why the connection failed to deliver an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    /// Nothing came back in time.
    #[error("no answer in time")]
    Timeout,
    /// ICMP port unreachable, reported on the connected UDP socket.
    #[error("port unreachable")]
    Refused,
    /// The server closed the stream.
    #[error("connection closed by the server")]
    Closed,
    /// The stream carried bytes that are neither STUN nor ChannelData.
    #[error("the server sent bytes that are not STUN: {0}")]
    Framing(FramingError),
    /// Any other socket error.
    #[error("{0}")]
    Io(io::Error),
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => Self::Closed,
            _ => Self::Io(e),
        }
    }
}

enum Io {
    Udp(UdpSocket),
    Stream(Box<dyn Stream>),
}

/// A connection to the server.
pub(crate) struct Conn {
    io: Io,
    /// Stream bytes not yet framed.
    rbuf: Vec<u8>,
    pending: VecDeque<Vec<u8>>,
    /// This side's address (the local IP that routes to the server).
    pub(crate) local: SocketAddr,
}

impl Conn {
    /// A UDP socket connected to the server, so ICMP errors surface as [`ConnError::Refused`].
    pub(crate) fn udp(socket: UdpSocket, local: SocketAddr) -> Self {
        Self::new(Io::Udp(socket), local)
    }

    /// A TCP or TLS stream.
    pub(crate) fn stream(stream: Box<dyn Stream>, local: SocketAddr) -> Self {
        Self::new(Io::Stream(stream), local)
    }

    fn new(io: Io, local: SocketAddr) -> Self {
        Self {
            io,
            rbuf: Vec::new(),
            pending: VecDeque::new(),
            local,
        }
    }

    /// Whether messages travel on a stream (ChannelData must then be padded, RFC 8656 §12.5).
    pub(crate) fn is_stream(&self) -> bool {
        matches!(self.io, Io::Stream(_))
    }

    /// Sends one message.
    pub(crate) async fn send(&mut self, msg: &[u8]) -> Result<(), ConnError> {
        match &mut self.io {
            Io::Udp(s) => {
                s.send(msg).await?;
            }
            Io::Stream(s) => {
                s.write_all(msg).await?;
                s.flush().await?;
            }
        }
        Ok(())
    }

    /// The next message: first those set aside during transactions, then the wire.
    pub(crate) async fn recv(&mut self) -> Result<Vec<u8>, ConnError> {
        match self.pending.pop_front() {
            Some(msg) => Ok(msg),
            None => self.recv_wire().await,
        }
    }

    /// Runs a STUN transaction: sends `req` (retransmitting over UDP, RFC 8489 §6.2.1; once
    /// over streams, §6.2.2) until the response to `tid` arrives or `timeout` passes. Other
    /// messages are set aside for [`Conn::recv`].
    pub(crate) async fn transact(
        &mut self,
        req: &[u8],
        tid: TransactionId,
        key: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Reply, ConnError> {
        let deadline = Instant::now() + timeout;
        let mut rto = RTO;
        loop {
            timeout_at(deadline, self.send(req))
                .await
                .map_err(|_| ConnError::Timeout)??;
            let retransmit = if self.is_stream() {
                deadline
            } else {
                deadline.min(Instant::now() + rto)
            };
            loop {
                let Ok(msg) = timeout_at(retransmit, self.recv_wire()).await else {
                    break;
                };
                let msg = msg?;
                if let Some(reply) = read_reply(&msg, tid, key) {
                    return Ok(reply);
                }
                if self.pending.len() < MAX_PENDING {
                    self.pending.push_back(msg);
                }
            }
            if Instant::now() >= deadline {
                return Err(ConnError::Timeout);
            }
            rto *= 2;
        }
    }

    /// One datagram, or one frame of the stream. Cancel-safe: partial stream data stays in
    /// `rbuf`.
    async fn recv_wire(&mut self) -> Result<Vec<u8>, ConnError> {
        match &mut self.io {
            Io::Udp(s) => {
                let mut buf = vec![0u8; MAX_DATAGRAM];
                let n = s.recv(&mut buf).await?;
                buf.truncate(n);
                Ok(buf)
            }
            Io::Stream(s) => loop {
                if let Some(frame) = next_frame(&self.rbuf).map_err(ConnError::Framing)? {
                    let rest = self.rbuf.split_off(frame.len);
                    return Ok(std::mem::replace(&mut self.rbuf, rest));
                }
                let mut chunk = [0u8; 4096];
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(ConnError::Closed);
                }
                if self.rbuf.len() + n > 2 * MAX_FRAME {
                    return Err(ConnError::Framing(FramingError::BadStunHeader));
                }
                self.rbuf.extend_from_slice(&chunk[..n]);
            },
        }
    }
}

/// A UDP socket bound to the local IP that routes to `server`, connected to it so that ICMP
/// "port unreachable" surfaces as an error.
pub(super) async fn udp_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(unspecified(server)).await?;
    socket.connect(server).await?;
    Ok(socket)
}

/// The unspecified address of `peer`'s family, port 0.
pub(super) fn unspecified(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::wire::{Req, random_tid, request};
    use crate::proto::{Class, MessageType, MessageWriter, Method};

    fn success(tid: TransactionId) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let n = MessageWriter::new(&mut buf, ty, tid).unwrap().finish();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn a_stream_transaction_reassembles_split_frames_and_sets_others_aside() {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut conn = Conn::stream(Box::new(client), "127.0.0.1:1".parse().unwrap());
        let tid = random_tid();
        let req = request(Req::BINDING, None, tid).unwrap();
        let other = success(random_tid());
        let reply = success(tid);
        let serve = async {
            let mut buf = vec![0u8; req.len()];
            server.read_exact(&mut buf).await.unwrap();
            server.write_all(&other).await.unwrap();
            server.write_all(&reply[..7]).await.unwrap();
            server.write_all(&reply[7..]).await.unwrap();
        };
        let (got, ()) = tokio::join!(
            conn.transact(&req, tid, None, Duration::from_secs(5)),
            serve
        );
        assert!(got.unwrap().success);
        assert_eq!(conn.recv().await.unwrap(), other);
    }

    #[tokio::test]
    async fn a_closed_stream_is_reported_as_closed() {
        let (client, server) = tokio::io::duplex(4096);
        drop(server);
        let mut conn = Conn::stream(Box::new(client), "127.0.0.1:1".parse().unwrap());
        let tid = random_tid();
        let req = request(Req::BINDING, None, tid).unwrap();
        let got = conn.transact(&req, tid, None, Duration::from_secs(5)).await;
        assert!(matches!(got, Err(ConnError::Closed)), "{got:?}");
    }
}
