//! A hand-rolled STUN/TURN client over UDP, TCP or TLS, built on `turnstone::proto` only.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turnstone::auth::{PasswordAlgorithm, long_term_key};
use turnstone::core::Transport;
use turnstone::proto::{
    Class, FrameKind, Message, MessageType, MessageWriter, Method, TransactionId, attr, error_code,
    next_frame,
};

use crate::common::{REPLY_TIMEOUT, TestServer, random_tid};

/// A byte stream usable as a TURN transport.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One client connection to the server: datagrams, or a framed byte stream.
pub enum Conn {
    /// UDP to `server`.
    Udp {
        /// The socket.
        sock: UdpSocket,
        /// The server's address.
        server: SocketAddr,
    },
    /// TCP or TLS.
    Stream {
        /// The connection.
        io: Box<dyn Stream>,
        /// Bytes read but not yet framed.
        buf: Vec<u8>,
        /// Our local address.
        local: SocketAddr,
    },
}

impl Conn {
    /// Connects to the server's listener for `transport`.
    pub async fn connect(server: &TestServer, transport: Transport) -> Conn {
        match transport {
            Transport::Udp => {
                let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
                Conn::Udp {
                    sock,
                    server: server.udp(),
                }
            }
            Transport::Tcp => {
                let tcp = TcpStream::connect(server.tcp()).await.unwrap();
                let local = tcp.local_addr().unwrap();
                Conn::Stream {
                    io: Box::new(tcp),
                    buf: Vec::new(),
                    local,
                }
            }
            Transport::Tls => {
                let tcp = TcpStream::connect(server.tls()).await.unwrap();
                let local = tcp.local_addr().unwrap();
                let tls = tokio::time::timeout(
                    REPLY_TIMEOUT,
                    server.tls_connector().connect(TestServer::tls_name(), tcp),
                )
                .await
                .expect("TLS handshake timed out")
                .unwrap();
                Conn::Stream {
                    io: Box::new(tls),
                    buf: Vec::new(),
                    local,
                }
            }
        }
    }

    /// The byte stream and what was read from it but not framed yet (TCP or TLS only): an
    /// RFC 6062 data connection carries raw bytes after its ConnectionBind.
    pub fn into_raw(self) -> (Box<dyn Stream>, Vec<u8>) {
        match self {
            Conn::Stream { io, buf, .. } => (io, buf),
            Conn::Udp { .. } => panic!("a UDP client has no byte stream"),
        }
    }

    /// Whether this is TCP or TLS (ChannelData padded to 4 bytes, RFC 8656 §12.5).
    pub fn is_stream(&self) -> bool {
        matches!(self, Conn::Stream { .. })
    }

    /// Our address as the server sees it.
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Conn::Udp { sock, .. } => sock.local_addr().unwrap(),
            Conn::Stream { local, .. } => *local,
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, bytes: &[u8]) {
        match self {
            Conn::Udp { sock, server } => {
                sock.send_to(bytes, *server).await.unwrap();
            }
            Conn::Stream { io, .. } => {
                io.write_all(bytes).await.unwrap();
                io.flush().await.unwrap();
            }
        }
    }

    /// The next message, or `None` after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Vec<u8>> {
        tokio::time::timeout(wait, self.recv_inner()).await.ok()
    }

    /// The next message; fails the test after [`REPLY_TIMEOUT`].
    pub async fn recv(&mut self) -> Vec<u8> {
        self.recv_within(REPLY_TIMEOUT)
            .await
            .expect("no message from the server in time")
    }

    async fn recv_inner(&mut self) -> Vec<u8> {
        match self {
            Conn::Udp { sock, server } => loop {
                let mut buf = vec![0u8; 65536];
                let (n, from) = sock.recv_from(&mut buf).await.unwrap();
                if from == *server {
                    buf.truncate(n);
                    return buf;
                }
            },
            Conn::Stream { io, buf, .. } => loop {
                if let Some(frame) = next_frame(buf).expect("server sent an unframeable stream") {
                    if frame.kind == FrameKind::ChannelData {
                        assert_eq!(
                            frame.len % 4,
                            0,
                            "ChannelData on a stream must be padded to 4 bytes"
                        );
                    }
                    return buf.drain(..frame.len).collect();
                }
                let mut chunk = [0u8; 4096];
                // `read` is cancel-safe: a timeout loses no bytes.
                let n = io.read(&mut chunk).await.unwrap();
                assert!(n > 0, "server closed the connection");
                buf.extend_from_slice(&chunk[..n]);
            },
        }
    }
}

/// Parses a message the server sent, failing the test if it is not STUN.
pub fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes).unwrap_or_else(|e| panic!("server sent invalid STUN ({e}): {bytes:02x?}"))
}

/// The ERROR-CODE of an error response.
pub fn error_of(msg: &Message<'_>) -> u16 {
    assert_eq!(msg.class(), Class::Error, "expected an error response");
    msg.error_code().unwrap().unwrap().code
}

/// Builds a message with `attrs`, then MESSAGE-INTEGRITY (when `key` is given) and FINGERPRINT.
pub fn build(
    method: Method,
    class: Class,
    key: Option<&[u8]>,
    attrs: impl FnOnce(&mut MessageWriter<'_>),
) -> (TransactionId, Vec<u8>) {
    let mut buf = vec![0u8; 2048];
    let tid = random_tid();
    let mut w = MessageWriter::new(&mut buf, MessageType::new(method, class), tid).unwrap();
    attrs(&mut w);
    if let Some(key) = key {
        w.add_integrity(key).unwrap();
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    (tid, buf)
}

/// A STUN Binding request.
pub fn binding_request() -> (TransactionId, Vec<u8>) {
    build(Method::BINDING, Class::Request, None, |_| {})
}

/// A long-term-credential TURN client (RFC 8489 §9.2, RFC 8656).
pub struct TurnClient {
    /// The connection.
    pub conn: Conn,
    username: String,
    password: String,
    key: Vec<u8>,
    realm: Vec<u8>,
    nonce: Vec<u8>,
}

impl TurnClient {
    /// A client that has not yet talked to the server.
    pub fn new(conn: Conn, username: &str, password: &str) -> TurnClient {
        TurnClient {
            conn,
            username: username.to_string(),
            password: password.to_string(),
            key: Vec::new(),
            realm: Vec::new(),
            nonce: Vec::new(),
        }
    }

    /// Sends `bytes` and waits for the response to `tid` (skipping indications and ChannelData).
    pub async fn transact(&mut self, tid: TransactionId, bytes: &[u8]) -> Vec<u8> {
        self.conn.send(bytes).await;
        loop {
            let reply = self.conn.recv().await;
            if let Ok(msg) = Message::parse(&reply)
                && msg.transaction_id() == tid
            {
                return reply;
            }
        }
    }

    /// An authenticated request, built but not sent: (transaction id, bytes).
    pub fn signed(
        &self,
        method: Method,
        attrs: impl Fn(&mut MessageWriter<'_>),
    ) -> (TransactionId, Vec<u8>) {
        build(method, Class::Request, Some(&self.key), |w| {
            attrs(w);
            w.add(attr::USERNAME, self.username.as_bytes()).unwrap();
            w.add(attr::REALM, &self.realm).unwrap();
            w.add(attr::NONCE, &self.nonce).unwrap();
        })
    }

    /// An authenticated request: USERNAME, REALM, NONCE and MESSAGE-INTEGRITY added; one retry
    /// with the fresh nonce on 438 Stale Nonce (RFC 8489 §9.2.4).
    pub async fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        for _ in 0..2 {
            let (user, realm, nonce) = (
                self.username.clone(),
                self.realm.clone(),
                self.nonce.clone(),
            );
            let (tid, bytes) = build(method, Class::Request, Some(&self.key), |w| {
                attrs(w);
                w.add(attr::USERNAME, user.as_bytes()).unwrap();
                w.add(attr::REALM, &realm).unwrap();
                w.add(attr::NONCE, &nonce).unwrap();
            });
            let reply = self.transact(tid, &bytes).await;
            let msg = parse(&reply);
            if msg.class() == Class::Error && error_of(&msg) == error_code::STALE_NONCE {
                self.nonce = msg.nonce().unwrap().unwrap().to_vec();
                continue;
            }
            if msg.class() == Class::Success {
                msg.verify_integrity(&self.key)
                    .expect("success response must carry valid MESSAGE-INTEGRITY");
            }
            return reply;
        }
        panic!("438 Stale Nonce twice in a row");
    }

    /// Sends `method` without credentials and learns realm, nonce and key from the 401.
    pub async fn challenge(&mut self, method: Method, attrs: impl FnOnce(&mut MessageWriter<'_>)) {
        let (tid, bytes) = build(method, Class::Request, None, attrs);
        let reply = self.transact(tid, &bytes).await;
        let challenge = parse(&reply);
        assert_eq!(challenge.method(), method);
        assert_eq!(
            error_of(&challenge),
            error_code::UNAUTHENTICATED,
            "unauthenticated {} must get 401",
            method.name()
        );
        self.realm = challenge.realm().unwrap().unwrap().to_vec();
        self.nonce = challenge.nonce().unwrap().unwrap().to_vec();
        assert_eq!(self.realm, crate::common::REALM.as_bytes());
        self.key = long_term_key(
            PasswordAlgorithm::Md5,
            self.username.as_bytes(),
            &self.realm,
            self.password.as_bytes(),
        )
        .as_bytes()
        .to_vec();
    }

    /// Allocate (UDP relay): first without credentials to get the 401 challenge, then
    /// authenticated. Returns (relayed address, mapped address, lifetime).
    pub async fn allocate(&mut self) -> (SocketAddr, SocketAddr, u32) {
        self.allocate_with(|_| {}).await
    }

    /// Allocate with REQUESTED-TRANSPORT `protocol` (17 UDP, 6 TCP for RFC 6062).
    pub async fn allocate_transport(&mut self, protocol: u32) -> (SocketAddr, SocketAddr, u32) {
        let reply = self.allocate_reply_of(protocol, |_| {}).await;
        allocated(&reply)
    }

    /// [`TurnClient::allocate`] with `extra` attributes in both requests (e.g.
    /// REQUESTED-ADDRESS-FAMILY for an IPv6 relay).
    pub async fn allocate_with(
        &mut self,
        extra: impl Fn(&mut MessageWriter<'_>),
    ) -> (SocketAddr, SocketAddr, u32) {
        let reply = self.allocate_reply_of(17, extra).await;
        allocated(&reply)
    }

    /// Allocate (UDP relay) as [`Self::allocate`] makes it, answered however the server
    /// answers the authenticated request.
    pub async fn allocate_reply(&mut self) -> Vec<u8> {
        self.allocate_reply_of(17, |_| {}).await
    }

    /// Allocate with REQUESTED-TRANSPORT `protocol` and `extra` attributes in both requests;
    /// the authenticated request's answer.
    pub async fn allocate_reply_of(
        &mut self,
        protocol: u32,
        extra: impl Fn(&mut MessageWriter<'_>),
    ) -> Vec<u8> {
        let transport = |w: &mut MessageWriter<'_>| {
            // RFC 8656 §18.7: the protocol number in the first byte.
            w.add_u32(attr::REQUESTED_TRANSPORT, protocol << 24)
                .unwrap();
            extra(w);
        };
        self.challenge(Method::ALLOCATE, transport).await;
        self.request(Method::ALLOCATE, transport).await
    }

    /// A request that must succeed.
    pub async fn request_ok(&mut self, method: Method, attrs: impl Fn(&mut MessageWriter<'_>)) {
        let reply = self.request(method, attrs).await;
        let msg = parse(&reply);
        assert_eq!(msg.method(), method);
        assert_eq!(
            msg.class(),
            Class::Success,
            "{} failed: {:?}",
            method.name(),
            msg.error_code()
        );
    }
}

/// The (relayed address, mapped address, lifetime) of a successful Allocate answer.
fn allocated(reply: &[u8]) -> (SocketAddr, SocketAddr, u32) {
    let msg = parse(reply);
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::ALLOCATE, Class::Success),
        "{:?}",
        msg.error_code()
    );
    let relayed = msg.xor_address(attr::XOR_RELAYED_ADDRESS).unwrap().unwrap();
    let mapped = msg.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap().unwrap();
    let lifetime = msg.u32_attr(attr::LIFETIME).unwrap().unwrap();
    (relayed, mapped, lifetime)
}

/// Frames `data` as ChannelData on `channel`, padded on streams (RFC 8656 §12.5).
pub fn channel_data(channel: u16, data: &[u8], pad: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 4 + data.len() + 3];
    buf[4..4 + data.len()].copy_from_slice(data);
    let n = turnstone::proto::write_channel_data(&mut buf, channel, data.len(), pad).unwrap();
    buf.truncate(n);
    buf
}
