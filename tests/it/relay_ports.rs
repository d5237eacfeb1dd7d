//! Relay sockets by request and confirm over real sockets (DESIGN.md §3): io binds each relay
//! from the port pool outside the worker lock and confirms it to the core, which answers the
//! Allocate; closing gives the port back.

use std::time::Duration;

use turnstone::core::Transport;
use turnstone::proto::error_code;

use crate::client::{Conn, TurnClient};
use crate::common::{Options, PASSWORD, TestServer, USER, bounded, rest_credentials};
use crate::ops_limits::allocate_error;

#[tokio::test]
async fn a_full_port_range_answers_508_and_a_closed_tcp_allocation_gives_its_port_back() {
    bounded(async {
        // Two ports, outside the range the other tests' servers use.
        let server = TestServer::start_with(&Options {
            relay_ports: "38211-38212".to_string(),
            ..Options::default()
        });
        let udp = Conn::connect(&server, Transport::Udp).await;
        let mut first = TurnClient::new(udp, USER, PASSWORD);
        let (relayed_udp, _, _) = first.allocate().await;
        let (user, password) = rest_credentials("tcp");
        let tcp = Conn::connect(&server, Transport::Tcp).await;
        let mut second = TurnClient::new(tcp, &user, &password);
        let (relayed_tcp, _, _) = second.allocate().await;
        let ports = [relayed_udp.port(), relayed_tcp.port()];
        assert!(
            ports.iter().all(|p| (38211..=38212).contains(p)),
            "{ports:?}"
        );
        assert_ne!(ports[0], ports[1]);
        // RFC 8656 §7.2: no relayed transport address left is 508 Insufficient Capacity.
        let (user, password) = rest_credentials("third");
        assert_eq!(
            allocate_error(&server, &user, &password).await,
            error_code::INSUFFICIENT_CAPACITY
        );
        // The TCP client leaves: its allocation ends (RFC 8656 §5), io closes the relay
        // socket and the port goes back to the pool.
        drop(second);
        assert!(server.wait_allocations(1, Duration::from_secs(2)).await);
        let (user, password) = rest_credentials("fourth");
        let udp = Conn::connect(&server, Transport::Udp).await;
        let (relayed, _, _) = TurnClient::new(udp, &user, &password).allocate().await;
        assert_eq!(relayed.port(), relayed_tcp.port());
    })
    .await;
}
