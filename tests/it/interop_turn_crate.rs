//! Interop: the webrtc-rs `turn` 0.17 client allocates on Turnstone and relays to a UDP peer.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};

use crate::common::{EchoPeer, PASSWORD, TestServer, USER, bounded, rest_credentials};

async fn turn_crate_echo(username: &str, password: &str) {
    let server = TestServer::start();
    let peer = EchoPeer::start();
    let server_addr = server.udp().to_string();
    let config = |conn| ClientConfig {
        stun_serv_addr: server_addr.clone(),
        turn_serv_addr: server_addr.clone(),
        username: username.to_string(),
        password: password.to_string(),
        // Learnt from the 401 challenge.
        realm: String::new(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    };
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = Client::new(config(Arc::new(sock))).await.unwrap();
    client.listen().await.unwrap();
    let allocated = client
        .allocate()
        .await
        .unwrap_or_else(|e| panic!("turn crate allocate failed: {e}"));
    // The relay connection implements webrtc-util's `Conn`, which is not a dependency of this
    // crate and so cannot be imported: coercing it into `ClientConfig::conn` (an
    // `Arc<dyn Conn + Send + Sync>`) makes its methods callable on the trait object.
    let relay = config(Arc::new(allocated)).conn;
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));

    let mut buf = [0u8; 1500];
    let mut echoed = None;
    for attempt in 0..5 {
        let payload = format!("turn crate ping {attempt}");
        relay.send_to(payload.as_bytes(), peer.addr).await.unwrap();
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_secs(1), relay.recv_from(&mut buf)).await
        {
            echoed = Some((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
            break;
        }
    }
    let (got, from) = echoed.expect("no echo came back through the turn crate's relay");
    assert_eq!(from, peer.addr);
    assert!(got.starts_with("turn crate ping "), "{got}");
    assert!(
        peer.seen
            .lock()
            .unwrap()
            .iter()
            .any(|(src, _)| *src == relayed),
        "peer must see the relayed address"
    );

    relay.close().await.unwrap();
    client.close().await.unwrap();
    let record = server.wait_usage(|r| r.user == username).await;
    assert_eq!(record.relays, [turnstone::core::RelayAddr(relayed)]);
}

#[tokio::test]
async fn turn_crate_client_relays_to_a_udp_peer_with_a_static_user() {
    bounded(turn_crate_echo(USER, PASSWORD)).await;
}

#[tokio::test]
async fn turn_crate_client_relays_to_a_udp_peer_with_rest_credentials() {
    let (username, password) = rest_credentials("restuser");
    bounded(turn_crate_echo(&username, &password)).await;
}
