//! RFC 6062 TCP relays end to end, with a TCP peer written here: Connect (and its 446, 447
//! and 403), ConnectionAttempt for a peer connecting in (and the refusal without a
//! permission), ConnectionBind on a new TCP or TLS connection, raw bytes both ways without
//! loss, usage records, and every connection closing with its allocation.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use turnstone::core::Transport;
use turnstone::proto::{Class, Message, Method, attr, error_code};

use crate::client::{Conn, Stream, TurnClient, error_of, parse};
use crate::common::{Options, PASSWORD, REPLY_TIMEOUT, TestServer, USER, bounded};

/// A server with TCP relays on.
fn server() -> TestServer {
    TestServer::start_with(&Options {
        relay: "tcp = true".into(),
        ..Options::default()
    })
}

/// A control connection with a TCP allocation (RFC 6062 §5.1) and a permission for
/// 127.0.0.1; returns the client and the relayed address.
async fn control(server: &TestServer, transport: Transport) -> (TurnClient, SocketAddr) {
    let conn = Conn::connect(server, transport).await;
    let mut client = TurnClient::new(conn, USER, PASSWORD);
    let (relayed, _, _) = client.allocate_transport(6).await;
    permit(&mut client, "127.0.0.1:1".parse().unwrap()).await;
    (client, relayed)
}

async fn permit(client: &mut TurnClient, peer: SocketAddr) {
    client
        .request_ok(Method::CREATE_PERMISSION, |w| {
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        })
        .await;
}

/// Connect (RFC 6062 §5.2): the raw answer.
async fn connect(client: &mut TurnClient, peer: SocketAddr) -> Vec<u8> {
    client
        .request(Method::CONNECT, |w| {
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        })
        .await
}

/// The CONNECTION-ID of a successful Connect or a ConnectionAttempt.
fn connection_id(msg: &Message<'_>) -> u32 {
    msg.u32_attr(attr::CONNECTION_ID)
        .expect("CONNECTION-ID")
        .unwrap()
}

/// A new client data connection bound to `connection` (RFC 6062 §5.4): the raw stream, and
/// the peer's bytes that came in the same read as the success response.
async fn bind_early(
    server: &TestServer,
    transport: Transport,
    connection: u32,
) -> (Box<dyn Stream>, Vec<u8>) {
    let conn = Conn::connect(server, transport).await;
    let mut data = TurnClient::new(conn, USER, PASSWORD);
    let id = |w: &mut turnstone::proto::MessageWriter<'_>| {
        w.add_u32(attr::CONNECTION_ID, connection).unwrap();
    };
    data.challenge(Method::CONNECTION_BIND, id).await;
    let reply = data.request(Method::CONNECTION_BIND, id).await;
    let msg = parse(&reply);
    assert_eq!(
        msg.class(),
        Class::Success,
        "ConnectionBind: {:?}",
        msg.error_code()
    );
    data.conn.into_raw()
}

/// [`bind_early`] where the peer has sent nothing yet.
async fn bind(server: &TestServer, transport: Transport, connection: u32) -> Box<dyn Stream> {
    let (io, early) = bind_early(server, transport, connection).await;
    assert!(early.is_empty(), "the peer sent nothing yet");
    io
}

/// Writes `len` patterned bytes to `to` while reading as many from `from`, checking them.
async fn transfer<W, R>(to: &mut W, from: &mut R, len: usize, seed: u8)
where
    W: AsyncWrite + Unpin + ?Sized,
    R: AsyncRead + Unpin + ?Sized,
{
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    let write = async {
        to.write_all(&data).await.unwrap();
        to.flush().await.unwrap();
    };
    let read = async {
        let mut got = vec![0u8; len];
        from.read_exact(&mut got).await.unwrap();
        got
    };
    let ((), got) = tokio::join!(write, read);
    assert!(got == data, "{len} bytes relayed with loss or reordering");
}

/// Waits for `stream` to be closed by the other end (EOF or reset).
async fn closed<R: AsyncRead + Unpin + ?Sized>(stream: &mut R) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(REPLY_TIMEOUT, stream.read(&mut buf)).await;
    match read {
        Ok(Ok(0) | Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a closed connection, read {n} bytes"),
        Err(_) => panic!("the connection was not closed in time"),
    }
}

/// The next message on the control connection that is not a response.
async fn indication(client: &mut TurnClient) -> Vec<u8> {
    loop {
        let msg = client.conn.recv().await;
        if parse(&msg).class() == Class::Indication {
            return msg;
        }
    }
}

async fn active(transport: Transport) {
    let server = server();
    let (mut client, relayed) = control(&server, transport).await;
    // Several connections, so ConnectionBinds land on either worker (the kernel picks).
    let mut pairs = Vec::new();
    for _ in 0..4 {
        let peer_socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = peer_socket.local_addr().unwrap();
        let reply = connect(&mut client, at).await;
        let msg = parse(&reply);
        assert_eq!(msg.class(), Class::Success, "{:?}", msg.error_code());
        let (accepted, from) = peer_socket.accept().await.unwrap();
        // RFC 6062 §5.2: the connection comes from the relayed transport address.
        assert_eq!(from, relayed);
        let data = bind(&server, transport, connection_id(&msg)).await;
        pairs.push((data, accepted));
    }
    for (i, (data, peer)) in pairs.iter_mut().enumerate() {
        transfer(data, peer, 256 * 1024, i as u8).await;
        transfer(peer, data, 256 * 1024, i as u8 + 100).await;
    }
    // Both ways at once, more than any buffer holds: backpressure, no loss.
    let (data, peer) = &mut pairs[0];
    let (mut peer_in, mut peer_out) = tokio::io::split(peer);
    let (mut data_in, mut data_out) = tokio::io::split(data);
    tokio::join!(
        transfer(&mut data_out, &mut peer_in, 4 << 20, 7),
        transfer(&mut peer_out, &mut data_in, 4 << 20, 9),
    );
    // The client data connection closing closes the peer's side (RFC 6062 §5.5).
    let (mut data, mut peer) = pairs.remove(0);
    data.shutdown().await.unwrap();
    closed(&mut peer).await;
    // Deleting the allocation closes the others (RFC 6062 §5: they go with it).
    client
        .request_ok(Method::REFRESH, |w| {
            w.add_u32(attr::LIFETIME, 0).unwrap();
        })
        .await;
    for (mut data, mut peer) in pairs {
        closed(&mut peer).await;
        closed(&mut data).await;
    }
    // Every relayed byte is counted, each way; each read is one "packet".
    let usage = server.wait_usage(|r| r.tcp_relay).await;
    let each_way = (4 * 256 * 1024 + (4 << 20)) as u64;
    assert_eq!(usage.traffic.bytes_to_peer, each_way);
    assert_eq!(usage.traffic.bytes_to_client, each_way);
    assert!(usage.traffic.packets_to_peer >= each_way / 16384);
}

#[tokio::test]
async fn connect_and_connection_bind_relay_raw_bytes_over_tcp() {
    bounded(active(Transport::Tcp)).await;
}

#[tokio::test]
async fn connect_and_connection_bind_relay_raw_bytes_over_tls() {
    bounded(active(Transport::Tls)).await;
}

async fn passive(transport: Transport) {
    {
        let server = server();
        let conn = Conn::connect(&server, transport).await;
        let mut client = TurnClient::new(conn, USER, PASSWORD);
        let (relayed, _, _) = client.allocate_transport(6).await;
        // No permission yet: the server closes the peer at once and tells the client nothing
        // (RFC 6062 §5.3).
        let mut refused = TcpStream::connect(relayed).await.unwrap();
        closed(&mut refused).await;
        assert!(
            client
                .conn
                .recv_within(Duration::from_millis(200))
                .await
                .is_none()
        );
        permit(&mut client, "127.0.0.1:1".parse().unwrap()).await;
        let mut peer = TcpStream::connect(relayed).await.unwrap();
        let attempt = indication(&mut client).await;
        let msg = parse(&attempt);
        assert_eq!(msg.method(), Method::CONNECTION_ATTEMPT);
        assert_eq!(
            msg.xor_address(attr::XOR_PEER_ADDRESS).unwrap().unwrap(),
            peer.local_addr().unwrap()
        );
        // What the peer sends before the bind waits for it (RFC 6062 §5.3).
        peer.write_all(b"early bytes").await.unwrap();
        let (mut data, mut early) = bind_early(&server, transport, connection_id(&msg)).await;
        let mut rest = vec![0u8; 11 - early.len()];
        data.read_exact(&mut rest).await.unwrap();
        early.extend(rest);
        assert_eq!(early, b"early bytes");
        transfer(&mut data, &mut peer, 64 * 1024, 1).await;
        transfer(&mut peer, &mut data, 64 * 1024, 2).await;
        // The peer closing closes the client data connection (RFC 6062 §5.5).
        peer.shutdown().await.unwrap();
        drop(peer);
        closed(&mut data).await;
    }
}

#[tokio::test]
async fn a_permitted_peer_connecting_in_gets_a_connection_attempt_and_is_relayed() {
    bounded(passive(Transport::Tcp)).await;
}

#[tokio::test]
async fn a_permitted_peer_connecting_in_over_tls_gets_a_connection_attempt() {
    bounded(passive(Transport::Tls)).await;
}

#[tokio::test]
async fn connect_refusals_446_447_and_403() {
    bounded(async {
        let server = server();
        let (mut client, _) = control(&server, Transport::Tcp).await;
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = peer.local_addr().unwrap();
        let first = connect(&mut client, at).await;
        assert_eq!(parse(&first).class(), Class::Success);
        // 446: a connection to this peer exists (waiting for its ConnectionBind).
        let again = connect(&mut client, at).await;
        assert_eq!(
            error_of(&parse(&again)),
            error_code::CONNECTION_ALREADY_EXISTS
        );
        // 447: nobody listens there.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nobody = gone.local_addr().unwrap();
        drop(gone);
        let failed = connect(&mut client, nobody).await;
        assert_eq!(
            error_of(&parse(&failed)),
            error_code::CONNECTION_TIMEOUT_OR_FAILURE
        );
        // 403: no permission for the peer's IP (127.0.0.2 is loopback too, and allowed).
        let other = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let refused = connect(&mut client, other.local_addr().unwrap()).await;
        assert_eq!(error_of(&parse(&refused)), error_code::FORBIDDEN);
        // 403: the server's own TCP and TLS listeners, whatever the allow list says.
        for own in [server.tcp(), server.tls()] {
            let refused = connect(&mut client, own).await;
            assert_eq!(error_of(&parse(&refused)), error_code::FORBIDDEN);
        }
        // A ConnectionBind naming an unknown connection is a 400.
        let conn = Conn::connect(&server, Transport::Tcp).await;
        let mut data = TurnClient::new(conn, USER, PASSWORD);
        let id = |w: &mut turnstone::proto::MessageWriter<'_>| {
            w.add_u32(attr::CONNECTION_ID, 12345).unwrap();
        };
        data.challenge(Method::CONNECTION_BIND, id).await;
        let reply = data.request(Method::CONNECTION_BIND, id).await;
        assert_eq!(error_of(&parse(&reply)), error_code::BAD_REQUEST);
    })
    .await;
}

#[tokio::test]
async fn tcp_allocations_are_refused_442_unless_enabled_and_400_over_udp() {
    bounded(async {
        let server = TestServer::start();
        let conn = Conn::connect(&server, Transport::Tcp).await;
        let mut client = TurnClient::new(conn, USER, PASSWORD);
        let tcp = |w: &mut turnstone::proto::MessageWriter<'_>| {
            w.add_u32(attr::REQUESTED_TRANSPORT, 6 << 24).unwrap();
        };
        client.challenge(Method::ALLOCATE, tcp).await;
        let reply = client.request(Method::ALLOCATE, tcp).await;
        assert_eq!(
            error_of(&parse(&reply)),
            error_code::UNSUPPORTED_TRANSPORT_PROTOCOL
        );
        let enabled = self::server();
        let conn = Conn::connect(&enabled, Transport::Udp).await;
        let mut client = TurnClient::new(conn, USER, PASSWORD);
        client.challenge(Method::ALLOCATE, tcp).await;
        let reply = client.request(Method::ALLOCATE, tcp).await;
        assert_eq!(error_of(&parse(&reply)), error_code::BAD_REQUEST);
    })
    .await;
}

/// Relayed bytes never cross the control connection, yet they are its allocation's traffic:
/// they keep it from the TCP idle timeout (which would end the allocation and every
/// connection with it).
#[tokio::test]
async fn relayed_bytes_keep_the_control_connection_from_the_idle_timeout() {
    bounded(async {
        let server = TestServer::start_with(&Options {
            relay: "tcp = true".into(),
            limits: "tcp_idle_timeout = \"1s\"".into(),
            ..Options::default()
        });
        let (mut client, _) = control(&server, Transport::Tcp).await;
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let reply = connect(&mut client, peer.local_addr().unwrap()).await;
        let (mut peer, _) = peer.accept().await.unwrap();
        let mut data = bind(&server, Transport::Tcp, connection_id(&parse(&reply))).await;
        for round in 0..12u8 {
            transfer(&mut data, &mut peer, 1000, round).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Three idle timeouts later the allocation still answers on its control connection.
        client
            .request_ok(Method::REFRESH, |w| {
                w.add_u32(attr::LIFETIME, 600).unwrap();
            })
            .await;
    })
    .await;
}
