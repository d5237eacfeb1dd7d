//! STUN Binding (RFC 8489 §3) over every transport, and robustness against malformed datagrams.

use std::time::Duration;

use tokio::net::UdpSocket;
use turnstone::core::Transport;
use turnstone::proto::{Class, Method, attr};

use crate::client::{Conn, binding_request, parse};
use crate::common::{TestServer, bounded};

/// Sends a Binding request on `conn` and returns the XOR-MAPPED-ADDRESS of the success response.
async fn mapped_address(conn: &mut Conn) -> std::net::SocketAddr {
    let (tid, request) = binding_request();
    conn.send(&request).await;
    let reply = conn.recv().await;
    let msg = parse(&reply);
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::BINDING, Class::Success)
    );
    assert_eq!(msg.transaction_id(), tid);
    msg.xor_address(attr::XOR_MAPPED_ADDRESS)
        .expect("XOR-MAPPED-ADDRESS missing")
        .unwrap()
}

async fn binding_reports_the_client_address(transport: Transport) {
    let server = TestServer::start();
    let mut conn = Conn::connect(&server, transport).await;
    let local = conn.local_addr();
    assert_eq!(mapped_address(&mut conn).await, local);
    // A second request on the same connection is answered too.
    assert_eq!(mapped_address(&mut conn).await, local);
}

#[tokio::test]
async fn binding_over_udp_returns_the_clients_address_as_xor_mapped_address() {
    bounded(binding_reports_the_client_address(Transport::Udp)).await;
}

#[tokio::test]
async fn binding_over_tcp_returns_the_clients_address_as_xor_mapped_address() {
    bounded(binding_reports_the_client_address(Transport::Tcp)).await;
}

#[tokio::test]
async fn binding_over_tls_returns_the_clients_address_as_xor_mapped_address() {
    bounded(binding_reports_the_client_address(Transport::Tls)).await;
}

#[tokio::test]
async fn binding_over_udp_on_ipv6_loopback_returns_the_ipv6_address() {
    bounded(async {
        let server = TestServer::start();
        let sock = UdpSocket::bind("[::1]:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let mut conn = Conn::Udp {
            sock,
            server: server.udp6(),
        };
        let mapped = mapped_address(&mut conn).await;
        assert!(mapped.is_ipv6(), "{mapped}");
        assert_eq!(mapped, local);
    })
    .await;
}

#[tokio::test]
async fn malformed_datagrams_get_no_answer_and_do_not_disturb_a_following_binding() {
    bounded(async {
        let server = TestServer::start();
        let mut conn = Conn::connect(&server, Transport::Udp).await;
        let (_, valid) = binding_request();

        let mut huge_length = valid[..20].to_vec();
        huge_length[2..4].copy_from_slice(&0xFFFCu16.to_be_bytes());
        let mut bad_cookie = valid.clone();
        bad_cookie[4] ^= 0xFF;
        let mut bad_fingerprint = valid.clone();
        let last = bad_fingerprint.len() - 1;
        bad_fingerprint[last] ^= 0xFF;
        let mut attr_overrun = valid.clone();
        // The first attribute (FINGERPRINT) claims more bytes than the message holds.
        attr_overrun[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
        let malformed: Vec<Vec<u8>> = vec![
            b"this is not STUN at all".to_vec(),
            vec![0u8; 1],
            valid[..10].to_vec(),
            valid[..19].to_vec(),
            huge_length,
            bad_cookie,
            bad_fingerprint,
            attr_overrun,
            vec![0xFF; 64],
            vec![0x40, 0x00, 0xFF, 0xFF, 1, 2, 3, 4],
        ];
        for datagram in &malformed {
            conn.send(datagram).await;
        }
        if let Some(reply) = conn.recv_within(Duration::from_millis(300)).await {
            panic!("malformed datagram answered with {reply:02x?}");
        }
        let local = conn.local_addr();
        assert_eq!(mapped_address(&mut conn).await, local);
        if let Some(reply) = conn.recv_within(Duration::from_millis(200)).await {
            panic!("unexpected extra datagram {reply:02x?}");
        }
    })
    .await;
}

/// The UDP data plane and the TCP/TLS side of a worker share its core: a saturated UDP
/// socket must not starve a TCP client (the data-plane thread hands the core over between
/// sockets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_binding_is_answered_promptly_while_udp_floods_the_same_worker() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::common::Options;

    let options = Options {
        workers: 1,
        ..Options::limits("requests_per_second_per_ip = 0\ntcp_handshake_timeout = \"5s\"")
    };
    let server = TestServer::start_with(&options);
    let target = server.udp();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_nonblocking(true).unwrap();
            let (_, request) = binding_request();
            // Bounded: at most 2 million datagrams, stopped as soon as the TCP side is done.
            for _ in 0..2_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let _ = sock.send_to(&request, target);
            }
        })
    };
    let mut conn = Conn::connect(&server, Transport::Tcp).await;
    let local = conn.local_addr();
    // Let the flood fill the worker's queue first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        #[allow(clippy::disallowed_methods, reason = "the test measures a round trip")]
        let start = std::time::Instant::now();
        assert_eq!(bounded(mapped_address(&mut conn)).await, local);
        slowest = slowest.max(start.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert!(
        slowest < Duration::from_millis(500),
        "a TCP Binding took {slowest:?} during the UDP flood"
    );
}
