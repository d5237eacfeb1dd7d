//! Self-test credentials against a real server on loopback: the public self-test page hands
//! them to anyone, so with one a client reaches only this server's own relays. A loopback echo
//! peer that the configuration opens to ordinary users (`[peers] allow = ["127.0.0.0/8"]`), a
//! private address, the server's listeners and its relay address at a port with no relay
//! socket are all refused (403) or dropped; relay to relay works, over UDP and TCP.

use std::net::SocketAddr;
use std::time::Duration;

use turnstone::core::Transport;
use turnstone::proto::{ChannelData, Class, Method, attr, error_code};

use crate::client::{Conn, TurnClient, build, channel_data, error_of, parse};
use crate::common::{EchoPeer, Options, PASSWORD, TestServer, USER, bounded, selftest_credentials};

async fn channel_bind(c: &mut TurnClient, number: u16, peer: SocketAddr) -> Vec<u8> {
    c.request(Method::CHANNEL_BIND, |w| {
        w.add_u32(attr::CHANNEL_NUMBER, u32::from(number) << 16)
            .unwrap();
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .await
}

async fn permit(c: &mut TurnClient, peer: SocketAddr) -> Vec<u8> {
    c.request(Method::CREATE_PERMISSION, |w| {
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .await
}

fn send_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    build(Method::SEND, Class::Indication, None, |w| {
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        w.add(attr::DATA, data).unwrap();
    })
    .1
}

#[track_caller]
fn assert_forbidden(reply: &[u8], what: &str) {
    let msg = parse(reply);
    assert_eq!(msg.class(), Class::Error, "{what} must be refused");
    assert_eq!(error_of(&msg), error_code::FORBIDDEN, "{what}");
}

async fn selftest_client(server: &TestServer, transport: Transport, n: u8) -> TurnClient {
    let (username, password) = selftest_credentials(n);
    TurnClient::new(Conn::connect(server, transport).await, &username, &password)
}

async fn only_relays_are_reachable(transport: Transport) {
    let server = TestServer::start_with(&Options {
        selftest: true,
        ..Options::default()
    });
    let echo = EchoPeer::start();
    let mut a = selftest_client(&server, transport, 1).await;
    let mut b = selftest_client(&server, transport, 2).await;
    let (relay_a, _, lifetime) = a.allocate().await;
    let (relay_b, _, _) = b.allocate().await;
    assert!(lifetime <= 120, "self-test lifetime is capped: {lifetime}");

    // An ordinary user reaches the echo peer: the configuration allows it.
    let conn = Conn::connect(&server, Transport::Udp).await;
    let mut alice = TurnClient::new(conn, USER, PASSWORD);
    let (relay_alice, _, _) = alice.allocate().await;
    let bound = channel_bind(&mut alice, 0x4000, echo.addr).await;
    assert_eq!(
        parse(&bound).class(),
        Class::Success,
        "control: alice binds"
    );

    let relay_ip = relay_a.ip();
    let no_relay_here = SocketAddr::new(relay_ip, 53);
    let refused: [(SocketAddr, &str); 6] = [
        (echo.addr, "the loopback echo peer the configuration allows"),
        ("10.0.0.1:9".parse().unwrap(), "a private address"),
        ("8.8.8.8:53".parse().unwrap(), "a public address"),
        (server.udp(), "the UDP listener"),
        (server.tcp(), "the TCP listener's address"),
        (no_relay_here, "the relay address at a port with no relay"),
    ];
    let pad = a.conn.is_stream();
    for (i, (peer, what)) in refused.into_iter().enumerate() {
        let number = 0x4000 + i as u16;
        assert_forbidden(&channel_bind(&mut a, number, peer).await, what);
        if peer.ip() != relay_ip {
            assert_forbidden(&permit(&mut a, peer).await, what);
        }
        a.conn.send(&send_indication(peer, b"leak")).await;
        a.conn.send(&channel_data(number, b"leak", pad)).await;
    }

    // Relay to relay works, both ways.
    let bound = channel_bind(&mut a, 0x4100, relay_b).await;
    assert_eq!(parse(&bound).class(), Class::Success, "relay-to-relay bind");
    let permitted = permit(&mut b, relay_a).await;
    assert_eq!(parse(&permitted).class(), Class::Success);
    a.conn.send(&channel_data(0x4100, b"hi b", pad)).await;
    let got = b.conn.recv().await;
    let data = parse(&got);
    assert_eq!(
        (data.method(), data.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(data.get(attr::DATA).unwrap(), b"hi b");
    b.conn.send(&send_indication(relay_a, b"hi a")).await;
    let back = a.conn.recv().await;
    let cd = ChannelData::parse(&back).unwrap();
    assert_eq!((cd.channel(), cd.data()), (0x4100, &b"hi a"[..]));

    // Nothing from the self-test relays reached the echo peer; alice's relay still does.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = echo.seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(from, _)| *from == relay_alice),
        "the echo peer heard a self-test relay: {seen:?} (a {relay_a}, b {relay_b})"
    );
}

#[tokio::test]
async fn a_selftest_credential_reaches_only_this_servers_relays_over_udp() {
    bounded(only_relays_are_reachable(Transport::Udp)).await;
}

#[tokio::test]
async fn a_selftest_credential_reaches_only_this_servers_relays_over_tcp() {
    bounded(only_relays_are_reachable(Transport::Tcp)).await;
}

#[tokio::test]
async fn a_selftest_credential_is_refused_by_a_server_without_the_selftest_page() {
    bounded(async {
        let server = TestServer::start();
        let mut a = selftest_client(&server, Transport::Udp, 3).await;
        // The server has no self-test key: an unknown user, 401.
        let reply = a.allocate_reply().await;
        assert_eq!(error_of(&parse(&reply)), error_code::UNAUTHENTICATED);
    })
    .await;
}
