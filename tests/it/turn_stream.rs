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
