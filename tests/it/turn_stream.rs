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
