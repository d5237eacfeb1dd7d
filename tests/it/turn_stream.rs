//! The hand-rolled TURN client over TCP and TLS (RFC 8656 §12.5 stream framing).

use turnstone::core::Transport;

use crate::common::{PASSWORD, USER, bounded, rest_credentials};
use crate::turn_udp::relay_round_trip;

#[tokio::test]
async fn turn_over_tcp_relays_indications_and_padded_channel_data_and_records_usage() {
    bounded(relay_round_trip(Transport::Tcp, USER, PASSWORD)).await;
}

#[tokio::test]
async fn turn_over_tls_relays_indications_and_padded_channel_data_and_records_usage() {
    bounded(relay_round_trip(Transport::Tls, USER, PASSWORD)).await;
}

#[tokio::test]
async fn turn_over_tls_accepts_rest_api_credentials() {
    let (username, password) = rest_credentials("restuser");
    bounded(relay_round_trip(Transport::Tls, &username, &password)).await;
}

/// One write packed with many requests (about 32 KiB of Bindings): every one is answered, in
/// order, although the server writes its replies in bounded runs.
#[tokio::test]
async fn a_read_packed_with_requests_is_answered_in_order() {
    use crate::client::{Conn, binding_request, parse};
    use crate::common::{Options, TestServer};
    bounded(async {
        let server = TestServer::start_with(&Options::limits("requests_per_second_per_ip = 0"));
        let mut conn = Conn::connect(&server, Transport::Tcp).await;
        let requests: Vec<_> = (0..1600).map(|_| binding_request()).collect();
        let packed: Vec<u8> = requests.iter().flat_map(|(_, r)| r.clone()).collect();
        conn.send(&packed).await;
        for (tid, _) in &requests {
            let reply = conn.recv().await;
            assert_eq!(parse(&reply).transaction_id(), *tid);
        }
    })
    .await;
}

/// Data the client sent just before deleting its allocation, in the same TCP segment, still
/// reaches the peer (RFC 8656 §7: the deletion ends the allocation after what came before).
#[tokio::test]
async fn channel_data_followed_by_refresh_zero_in_one_write_still_reaches_the_peer() {
    use crate::client::{Conn, TurnClient, channel_data, parse};
    use crate::common::{EchoPeer, TestServer};
    use turnstone::proto::{Class, Method, attr};
    bounded(async {
        let server = TestServer::start();
        let peer = EchoPeer::start();
        let conn = Conn::connect(&server, Transport::Tcp).await;
        let mut client = TurnClient::new(conn, USER, PASSWORD);
        let (relayed, _, _) = client.allocate().await;
        let peer_addr = peer.addr;
        client
            .request_ok(Method::CHANNEL_BIND, |w| {
                w.add_u32(attr::CHANNEL_NUMBER, 0x4000 << 16).unwrap();
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                    .unwrap();
            })
            .await;
        let last = b"last words";
        let (tid, refresh) = client.signed(Method::REFRESH, |w| {
            w.add_u32(attr::LIFETIME, 0).unwrap();
        });
        let mut packed = channel_data(0x4000, last, true);
        packed.extend_from_slice(&refresh);
        let reply = client.transact(tid, &packed).await;
        assert_eq!(parse(&reply).class(), Class::Success);
        let deadline = tokio::time::Instant::now() + crate::common::REPLY_TIMEOUT;
        while !peer.seen.lock().unwrap().contains(&(relayed, last.len())) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the peer never got the data sent before Refresh(0)"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
}
