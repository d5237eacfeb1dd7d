//! RFC 5780 NAT behaviour discovery over real loopback sockets: the server listens on
//! 127.0.0.1 and 127.0.0.2, each on two ports, and every answer arrives from the socket
//! CHANGE-REQUEST names, at the port RESPONSE-PORT names.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use turnstone::core::Transport;
use turnstone::proto::{Class, Message, MessageWriter, Method, attr, error_code};

use crate::client::{Conn, TurnClient, build, error_of, parse};
use crate::common::{ALTERNATE_IP, Options, PASSWORD, REPLY_TIMEOUT, TestServer, USER, bounded};

/// CHANGE-REQUEST flags (RFC 5780 §7.2).
fn change(w: &mut MessageWriter<'_>, ip: bool, port: bool) {
    let flags = (u32::from(ip) << 2) | (u32::from(port) << 1);
    w.add_u32(attr::CHANGE_REQUEST, flags).unwrap();
}

/// Sends a Binding request written by `attrs` from `sock` to `to`; returns the answer that
/// arrives on `on` and the address it came from.
async fn binding(
    sock: &UdpSocket,
    to: SocketAddr,
    on: &UdpSocket,
    attrs: impl FnOnce(&mut MessageWriter<'_>),
) -> (Vec<u8>, SocketAddr) {
    let (tid, request) = build(Method::BINDING, Class::Request, None, attrs);
    sock.send_to(&request, to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    loop {
        let got = tokio::time::timeout(REPLY_TIMEOUT, on.recv_from(&mut buf)).await;
        let (n, from) = got
            .unwrap_or_else(|_| panic!("no answer to a Binding to {to}"))
            .unwrap();
        if Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid) {
            return (buf[..n].to_vec(), from);
        }
    }
}

#[tokio::test]
async fn every_answer_arrives_from_the_socket_change_request_names() {
    bounded(async {
        let server = TestServer::start_with(&Options::nat_discovery());
        let nat = server.nat_discovery();
        let [pp, pa, ap, aa] = nat.addresses();
        assert_eq!(pp, server.udp());
        assert_eq!(aa.ip().to_string(), ALTERNATE_IP);
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = client.local_addr().unwrap();
        for arrival in [pp, pa, ap, aa] {
            for (ip, port) in [(false, false), (true, false), (false, true), (true, true)] {
                let (answer, from) =
                    binding(&client, arrival, &client, |w| change(w, ip, port)).await;
                let msg = parse(&answer);
                assert_eq!(msg.class(), Class::Success);
                let expected = nat.changed(arrival, ip, port).unwrap();
                assert_eq!(
                    from, expected,
                    "to {arrival} with change IP {ip}, port {port}"
                );
                assert_eq!(msg.address(attr::RESPONSE_ORIGIN).unwrap(), Ok(from));
                assert_eq!(
                    msg.address(attr::OTHER_ADDRESS).unwrap(),
                    Ok(nat.other(arrival).unwrap())
                );
                assert_eq!(
                    msg.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
                    Ok(local)
                );
            }
        }
    })
    .await;
}

#[tokio::test]
async fn response_port_answers_arrive_at_that_port_of_the_client() {
    bounded(async {
        let server = TestServer::start_with(&Options::nat_discovery());
        let nat = server.nat_discovery();
        let asking = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = other.local_addr().unwrap().port();
        let (answer, from) = binding(&asking, nat.primary(), &other, |w| {
            w.add(attr::RESPONSE_PORT, &[(port >> 8) as u8, port as u8, 0, 0])
                .unwrap();
            change(w, true, true);
        })
        .await;
        assert_eq!(from, nat.alternate());
        let msg = parse(&answer);
        assert_eq!(
            msg.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap(),
            Ok(asking.local_addr().unwrap()),
            "the mapped address is where the request came from"
        );
        // Nothing arrived where the request came from.
        let mut buf = [0u8; 64];
        let nothing =
            tokio::time::timeout(Duration::from_millis(200), asking.recv_from(&mut buf)).await;
        assert!(nothing.is_err(), "an answer also went to the source port");
    })
    .await;
}

#[tokio::test]
async fn a_request_padded_to_the_mtu_gets_a_padded_answer_from_the_other_address() {
    bounded(async {
        let server = TestServer::start_with(&Options::nat_discovery());
        let nat = server.nat_discovery();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (answer, from) = binding(&client, nat.primary(), &client, |w| {
            change(w, true, true);
            w.add(attr::PADDING, &[0; 1500]).unwrap();
        })
        .await;
        assert_eq!(from, nat.alternate());
        assert_eq!(
            parse(&answer).get(attr::PADDING).map(<[u8]>::len),
            Some(1500)
        );
    })
    .await;
}

#[tokio::test]
async fn the_discovery_sockets_are_never_relay_peers() {
    bounded(async {
        let server = TestServer::start_with(&Options::nat_discovery());
        let nat = server.nat_discovery();
        let conn = Conn::connect(&server, Transport::Udp).await;
        let mut client = TurnClient::new(conn, USER, PASSWORD);
        client.allocate().await;
        for (n, peer) in nat.addresses().into_iter().enumerate() {
            let channel = 0x4000 + n as u16;
            let reply = client
                .request(Method::CHANNEL_BIND, |w| {
                    w.add_u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
                        .unwrap();
                    w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
                })
                .await;
            assert_eq!(error_of(&parse(&reply)), error_code::FORBIDDEN, "{peer}");
        }
    })
    .await;
}

#[tokio::test]
async fn change_request_over_tcp_is_answered_420() {
    bounded(async {
        let server = TestServer::start_with(&Options::nat_discovery());
        let mut conn = Conn::connect(&server, Transport::Tcp).await;
        let (_, request) = build(Method::BINDING, Class::Request, None, |w| {
            change(w, true, true)
        });
        conn.send(&request).await;
        let reply = conn.recv().await;
        let msg = parse(&reply);
        assert_eq!(error_of(&msg), error_code::UNKNOWN_ATTRIBUTE);
        assert_eq!(msg.get(attr::OTHER_ADDRESS), None);
    })
    .await;
}
