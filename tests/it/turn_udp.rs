//! A hand-rolled TURN client over UDP (RFC 8656): allocate, permissions, Send/Data indications,
//! channels, deletion, usage records. [`relay_round_trip`] is shared with the stream tests.

use std::net::{IpAddr, Ipv4Addr};

use turnstone::core::{EndReason, Transport};
use turnstone::proto::{ChannelData, Class, Method, attr, error_code};

use crate::client::{Conn, TurnClient, build, channel_data, error_of, parse};
use crate::common::{EchoPeer, PASSWORD, TestServer, USER, bounded, rest_credentials};

/// Allocate → CreatePermission → Send indication → Data indication → ChannelBind →
/// ChannelData both ways → Refresh(0) → 437, then checks the usage record.
pub async fn relay_round_trip(transport: Transport, username: &str, password: &str) {
    let server = TestServer::start();
    let peer = EchoPeer::start();
    let conn = Conn::connect(&server, transport).await;
    let local = conn.local_addr();
    let mut client = TurnClient::new(conn, username, password);

    let (relayed, mapped, lifetime) = client.allocate().await;
    assert_eq!(mapped, local, "XOR-MAPPED-ADDRESS of the Allocate response");
    assert_eq!(relayed.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert!(lifetime > 0);

    let peer_addr = peer.addr;
    client
        .request_ok(Method::CREATE_PERMISSION, |w| {
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                .unwrap();
        })
        .await;

    // RFC 8656 §11: Send indication out, Data indication back.
    let send_payload = b"payload of a Send indication";
    let (_, send) = build(Method::SEND, Class::Indication, None, |w| {
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
            .unwrap();
        w.add(attr::DATA, send_payload).unwrap();
    });
    client.conn.send(&send).await;
    let Some(reply) = client.conn.recv_within(crate::common::REPLY_TIMEOUT).await else {
        panic!(
            "no Data indication; the peer {peer_addr} saw {:?} (relay {relayed})",
            peer.seen.lock().unwrap()
        );
    };
    let data = parse(&reply);
    assert_eq!(
        (data.method(), data.class()),
        (Method::DATA, Class::Indication)
    );
    assert_eq!(
        data.xor_address(attr::XOR_PEER_ADDRESS).unwrap().unwrap(),
        peer_addr
    );
    assert_eq!(data.get(attr::DATA).unwrap(), send_payload);
    assert!(
        peer.seen
            .lock()
            .unwrap()
            .contains(&(relayed, send_payload.len())),
        "peer must see the relayed address"
    );

    // RFC 8656 §12: ChannelBind, then ChannelData both ways (odd length: padding on streams).
    let channel = 0x4000;
    client
        .request_ok(Method::CHANNEL_BIND, |w| {
            w.add_u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
                .unwrap();
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                .unwrap();
        })
        .await;
    let channel_payload = b"hello";
    let is_stream = client.conn.is_stream();
    client
        .conn
        .send(&channel_data(channel, channel_payload, is_stream))
        .await;
    let reply = client.conn.recv().await;
    let cd = ChannelData::parse(&reply)
        .unwrap_or_else(|e| panic!("expected ChannelData ({e}): {reply:02x?}"));
    assert_eq!((cd.channel(), cd.data()), (channel, &channel_payload[..]));
    if !is_stream {
        assert_eq!(reply.len(), 4 + channel_payload.len(), "no padding on UDP");
    }

    // RFC 8656 §7: Refresh with LIFETIME 0 deletes; the next request gets 437.
    client
        .request_ok(Method::REFRESH, |w| {
            w.add_u32(attr::LIFETIME, 0).unwrap();
        })
        .await;
    let reply = client
        .request(Method::REFRESH, |w| {
            w.add_u32(attr::LIFETIME, 600).unwrap();
        })
        .await;
    assert_eq!(error_of(&parse(&reply)), error_code::ALLOCATION_MISMATCH);

    let record = server
        .wait_usage(|r| r.five_tuple.client.addr() == local)
        .await;
    assert_eq!(record.user, username);
    assert_eq!(record.five_tuple.transport, transport);
    assert_eq!(record.five_tuple.server, server.address(transport));
    assert_eq!(record.relays, [turnstone::core::RelayAddr(relayed)]);
    assert_eq!(record.peers, 1);
    assert_eq!(record.reason, EndReason::Deleted);
    let t = record.traffic;
    let bytes = (send_payload.len() + channel_payload.len()) as u64;
    assert_eq!((t.packets_to_peer, t.bytes_to_peer), (2, bytes), "{t:?}");
    assert_eq!(
        (t.packets_to_client, t.bytes_to_client),
        (2, bytes),
        "{t:?}"
    );
    assert!(record.started_unix <= record.ended_unix);
}

#[tokio::test]
async fn turn_over_udp_relays_indications_and_channel_data_and_records_usage() {
    bounded(relay_round_trip(Transport::Udp, USER, PASSWORD)).await;
}

#[tokio::test]
async fn turn_over_udp_accepts_rest_api_credentials() {
    let (username, password) = rest_credentials("restuser");
    bounded(relay_round_trip(Transport::Udp, &username, &password)).await;
}

#[tokio::test]
async fn allocate_with_a_wrong_password_is_refused_with_401() {
    bounded(async {
        let server = TestServer::start();
        let conn = Conn::connect(&server, Transport::Udp).await;
        let mut client = TurnClient::new(conn, USER, "not-the-password");
        // Learn realm and nonce from a 401, then fail again with bad integrity.
        let (tid, bytes) = build(Method::ALLOCATE, Class::Request, None, |w| {
            w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
        });
        let reply = client.transact(tid, &bytes).await;
        let challenge = parse(&reply);
        assert_eq!(error_of(&challenge), error_code::UNAUTHENTICATED);
        let nonce = challenge.nonce().unwrap().unwrap().to_vec();
        let key = turnstone::auth::long_term_key(
            turnstone::auth::PasswordAlgorithm::Md5,
            USER.as_bytes(),
            crate::common::REALM.as_bytes(),
            b"not-the-password",
        );
        let (tid, bytes) = build(
            Method::ALLOCATE,
            Class::Request,
            Some(key.as_bytes()),
            |w| {
                w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
                w.add(attr::USERNAME, USER.as_bytes()).unwrap();
                w.add(attr::REALM, crate::common::REALM.as_bytes()).unwrap();
                w.add(attr::NONCE, &nonce).unwrap();
            },
        );
        let reply = client.transact(tid, &bytes).await;
        assert_eq!(error_of(&parse(&reply)), error_code::UNAUTHENTICATED);
        assert_eq!(server.allocations(), 0);
    })
    .await;
}
