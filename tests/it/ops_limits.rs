//! Every `[limits]` key enforced end to end: the right error code, or a dropped packet counted
//! in `turnstone_dropped_packets_total`. Also the helpers the other `ops_*` modules share.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use turnstone::auth::{PasswordAlgorithm, long_term_key};
use turnstone::core::Transport;
use turnstone::proto::{Class, Message, Method, attr, error_code};

use crate::client::{Conn, TurnClient, binding_request, build, channel_data, error_of, parse};
use crate::common::{
    EchoPeer, Options, PASSWORD, REALM, REPLY_TIMEOUT, TestServer, USER, bounded, rest_credentials,
};

/// The channel the helpers bind.
pub const CHANNEL: u16 = 0x4000;

/// Sends `bytes` and returns the response to `tid`, skipping anything else.
async fn transact(conn: &mut Conn, tid: turnstone::proto::TransactionId, bytes: &[u8]) -> Vec<u8> {
    conn.send(bytes).await;
    loop {
        let reply = conn.recv().await;
        if Message::parse(&reply).is_ok_and(|m| m.transaction_id() == tid) {
            return reply;
        }
    }
}

/// Allocate on `conn` as `user` (401 challenge first, then authenticated, with LIFETIME when
/// given) and returns the final response, whatever it is.
pub async fn try_allocate(
    conn: &mut Conn,
    user: &str,
    password: &str,
    lifetime: Option<u32>,
) -> Vec<u8> {
    let (tid, bytes) = build(Method::ALLOCATE, Class::Request, None, |w| {
        w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
    });
    let reply = transact(conn, tid, &bytes).await;
    let challenge = parse(&reply);
    assert_eq!(error_of(&challenge), error_code::UNAUTHENTICATED);
    let nonce = challenge.nonce().unwrap().unwrap().to_vec();
    let key = long_term_key(
        PasswordAlgorithm::Md5,
        user.as_bytes(),
        REALM.as_bytes(),
        password.as_bytes(),
    );
    let (tid, bytes) = build(
        Method::ALLOCATE,
        Class::Request,
        Some(key.as_bytes()),
        |w| {
            // RFC 8656 §18.7: protocol 17 (UDP) in the first byte.
            w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
            if let Some(secs) = lifetime {
                w.add_u32(attr::LIFETIME, secs).unwrap();
            }
            w.add(attr::USERNAME, user.as_bytes()).unwrap();
            w.add(attr::REALM, REALM.as_bytes()).unwrap();
            w.add(attr::NONCE, &nonce).unwrap();
        },
    );
    transact(conn, tid, &bytes).await
}

/// The ERROR-CODE of the final response of [`try_allocate`] over UDP.
pub async fn allocate_error(server: &TestServer, user: &str, password: &str) -> u16 {
    let mut conn = Conn::connect(server, Transport::Udp).await;
    let reply = try_allocate(&mut conn, user, password, None).await;
    error_of(&parse(&reply))
}

/// A UDP client with an allocation and [`CHANNEL`] bound to `peer`.
pub async fn channel_client(
    server: &TestServer,
    user: &str,
    password: &str,
    peer: SocketAddr,
) -> TurnClient {
    let conn = Conn::connect(server, Transport::Udp).await;
    let mut client = TurnClient::new(conn, user, password);
    client.allocate().await;
    client
        .request_ok(Method::CHANNEL_BIND, |w| {
            w.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16)
                .unwrap();
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        })
        .await;
    client
}

/// Sends one ChannelData of `len` bytes and waits for the echo peer's copy to come back.
pub async fn echo_once(client: &mut TurnClient, len: usize) {
    let payload = vec![0x5a; len];
    client
        .conn
        .send(&channel_data(CHANNEL, &payload, false))
        .await;
    let reply = client.conn.recv().await;
    let cd = turnstone::proto::ChannelData::parse(&reply).unwrap();
    assert_eq!((cd.channel(), cd.data()), (CHANNEL, &payload[..]));
}

/// The sum of the samples of `name` whose labels include every `labels` pair, in Prometheus
/// text format (0 when there is none).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    let sum: f64 = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum();
    sum as u64
}

/// The process-wide recorder's current rendering.
fn rendered() -> String {
    turnstone::ops::install_recorder()
        .expect("no other metrics recorder in this test binary")
        .render()
}

/// Polls the recorder (workers publish once a second) until `name{labels}` reaches `at_least`;
/// returns the last value seen.
async fn wait_metric(name: &str, labels: &[(&str, &str)], at_least: u64) -> u64 {
    let mut value = 0;
    for _ in 0..40 {
        value = metric(&rendered(), name, labels);
        if value >= at_least {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    value
}

/// Receives until `quiet` passes without a datagram; returns how many arrived.
async fn drain_udp(conn: &mut Conn, quiet: Duration) -> usize {
    let mut n = 0;
    while conn.recv_within(quiet).await.is_some() {
        n += 1;
    }
    n
}

/// Time since `start` on the server's clock.
fn elapsed(start: std::time::Instant) -> Duration {
    turnstone::io::clock::now()
        .mono
        .saturating_duration_since(start)
}

/// Waits until the server closes `stream` (EOF or reset); fails after `within`.
async fn wait_closed(stream: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open");
}

#[tokio::test]
async fn requests_over_the_per_ip_rate_are_dropped_and_counted_as_rate_limit() {
    bounded(async {
        let labels = [("reason", "rate_limit")];
        let before = metric(&rendered(), "turnstone_dropped_packets_total", &labels);
        let server = TestServer::start_with(&Options::limits(
            "requests_per_second_per_ip = 5\nrequest_burst_per_ip = 5",
        ));
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut sent = HashSet::new();
        for _ in 0..30 {
            let (tid, bytes) = binding_request();
            sent.insert(tid.0);
            sock.send_to(&bytes, server.udp()).await.unwrap();
        }
        let mut answered = 0;
        let mut buf = [0u8; 1500];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(400), sock.recv_from(&mut buf)).await
        {
            let msg = parse(&buf[..n]);
            assert_eq!(
                (msg.method(), msg.class()),
                (Method::BINDING, Class::Success)
            );
            assert!(sent.contains(&msg.transaction_id().0));
            answered += 1;
        }
        // A burst of 5, plus at most a token or two refilled (one per 200 ms) meanwhile.
        assert!(
            (5..=7).contains(&answered),
            "{answered} of 30 requests answered"
        );
        let after = wait_metric(
            "turnstone_dropped_packets_total",
            &labels,
            before + 30 - answered,
        )
        .await;
        assert!(
            after - before >= 30 - answered,
            "rate_limit drops rose by {} only",
            after - before
        );
    })
    .await;
}

#[tokio::test]
async fn allocation_quotas_answer_486_per_user_and_508_for_the_whole_server() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "max_allocations_per_user = 1\nmax_allocations = 2",
        ));
        let conn = Conn::connect(&server, Transport::Udp).await;
        TurnClient::new(conn, USER, PASSWORD).allocate().await;
        // Same user, another 5-tuple: RFC 8656 §7.2 step 10.
        assert_eq!(
            allocate_error(&server, USER, PASSWORD).await,
            error_code::ALLOCATION_QUOTA_REACHED
        );
        let (user, password) = rest_credentials("second");
        let conn = Conn::connect(&server, Transport::Udp).await;
        TurnClient::new(conn, &user, &password).allocate().await;
        assert_eq!(server.allocations(), 2);
        let (user, password) = rest_credentials("third");
        assert_eq!(
            allocate_error(&server, &user, &password).await,
            error_code::INSUFFICIENT_CAPACITY
        );
        assert_eq!(server.allocations(), 2);
    })
    .await;
}

#[tokio::test]
async fn lifetimes_are_capped_and_permissions_and_channels_are_limited_with_508() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "max_allocation_lifetime = \"1h\"\n\
             max_permissions_per_allocation = 2\n\
             max_channels_per_allocation = 1",
        ));
        let mut conn = Conn::connect(&server, Transport::Udp).await;
        let reply = try_allocate(&mut conn, USER, PASSWORD, Some(7200)).await;
        let msg = parse(&reply);
        assert_eq!(msg.class(), Class::Success, "{:?}", msg.error_code());
        assert_eq!(msg.u32_attr(attr::LIFETIME).unwrap().unwrap(), 3600);

        let conn = Conn::connect(&server, Transport::Udp).await;
        let mut client = TurnClient::new(conn, USER, PASSWORD);
        client.allocate().await;
        let peer = |ip: [u8; 4]| SocketAddr::from((ip, 40_000));
        for ip in [[127, 0, 0, 2], [127, 0, 0, 3]] {
            client
                .request_ok(Method::CREATE_PERMISSION, |w| {
                    w.add_xor_address(attr::XOR_PEER_ADDRESS, peer(ip)).unwrap();
                })
                .await;
        }
        let reply = client
            .request(Method::CREATE_PERMISSION, |w| {
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer([127, 0, 0, 4]))
                    .unwrap();
            })
            .await;
        assert_eq!(
            error_of(&parse(&reply)),
            error_code::INSUFFICIENT_CAPACITY,
            "third peer's permission"
        );

        let bind = |channel: u16, ip| {
            move |w: &mut turnstone::proto::MessageWriter<'_>| {
                w.add_u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
                    .unwrap();
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer(ip)).unwrap();
            }
        };
        client
            .request_ok(Method::CHANNEL_BIND, bind(0x4000, [127, 0, 0, 2]))
            .await;
        let reply = client
            .request(Method::CHANNEL_BIND, bind(0x4001, [127, 0, 0, 3]))
            .await;
        assert_eq!(
            error_of(&parse(&reply)),
            error_code::INSUFFICIENT_CAPACITY,
            "second channel"
        );
    })
    .await;
}

/// Sends `count` ChannelData of 1000 bytes at once on `client`'s channel.
async fn blast(client: &mut TurnClient, count: usize) {
    let packet = channel_data(CHANNEL, &[0xab; 1000], false);
    for _ in 0..count {
        client.conn.send(&packet).await;
    }
}

#[tokio::test]
async fn the_per_allocation_bitrate_cap_drops_the_excess_and_counts_it_as_bandwidth() {
    bounded(async {
        let labels = [("reason", "bandwidth")];
        let before = metric(&rendered(), "turnstone_dropped_packets_total", &labels);
        let server = TestServer::start_with(&Options::limits(
            "max_allocation_bitrate = \"80kbps\"\nallocation_burst = \"2KiB\"",
        ));
        let peer = EchoPeer::start();
        let mut client = channel_client(&server, USER, PASSWORD, peer.addr).await;
        let local = client.conn.local_addr();
        blast(&mut client, 100).await;
        let echoed = drain_udp(&mut client.conn, Duration::from_millis(500)).await;
        let delivered = peer.seen.lock().unwrap().len();
        // 2 KiB of burst is two packets; 10 kB/s refills one more every 100 ms.
        assert!(
            (1..=6).contains(&delivered),
            "{delivered} of 100 packets reached the peer"
        );
        assert!(echoed <= delivered);
        let after = wait_metric(
            "turnstone_dropped_packets_total",
            &labels,
            before + 100 - delivered as u64,
        )
        .await;
        assert!(
            after - before >= 100 - delivered as u64,
            "bandwidth drops rose by {} with {delivered} delivered",
            after - before
        );
        client
            .request_ok(Method::REFRESH, |w| {
                w.add_u32(attr::LIFETIME, 0).unwrap();
            })
            .await;
        let record = server
            .wait_usage(|r| r.five_tuple.client.addr() == local)
            .await;
        assert_eq!(record.traffic.packets_to_peer, delivered as u64);
        assert_eq!(record.traffic.bytes_to_peer, 1000 * delivered as u64);
        assert_eq!(record.traffic.packets_to_client, echoed as u64);
    })
    .await;
}

#[tokio::test]
async fn the_total_bitrate_cap_is_shared_by_every_allocation_of_a_worker() {
    bounded(async {
        let labels = [("reason", "bandwidth")];
        let before = metric(&rendered(), "turnstone_dropped_packets_total", &labels);
        // One worker: 2000 B/s with a 2000-byte bucket for the whole server.
        let server = TestServer::start_with(&Options {
            workers: 1,
            ..Options::limits("max_total_bitrate = \"16kbps\"")
        });
        let peer = EchoPeer::start();
        let mut first = channel_client(&server, USER, PASSWORD, peer.addr).await;
        let (user, password) = rest_credentials("second");
        let mut second = channel_client(&server, &user, &password, peer.addr).await;
        blast(&mut first, 50).await;
        blast(&mut second, 50).await;
        drain_udp(&mut first.conn, Duration::from_millis(300)).await;
        drain_udp(&mut second.conn, Duration::from_millis(300)).await;
        let delivered = peer.seen.lock().unwrap().len();
        // Each allocation alone is uncapped; together they get the server's two packets.
        assert!(
            (1..=4).contains(&delivered),
            "{delivered} of 100 packets reached the peer"
        );
        let after = wait_metric(
            "turnstone_dropped_packets_total",
            &labels,
            before + 100 - delivered as u64,
        )
        .await;
        assert!(
            after - before >= 100 - delivered as u64,
            "bandwidth drops rose by {} with {delivered} delivered",
            after - before
        );
    })
    .await;
}

#[tokio::test]
async fn a_tcp_connection_over_max_tcp_connections_is_closed_without_an_answer() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits("max_tcp_connections = 1"));
        let mut first = Conn::connect(&server, Transport::Tcp).await;
        first.send(&binding_request().1).await;
        assert_eq!(parse(&first.recv().await).class(), Class::Success);

        let mut second = TcpStream::connect(server.tcp()).await.unwrap();
        // The server may already have closed it: a failed write is as good as EOF.
        let _ = second.write_all(&binding_request().1).await;
        wait_closed(&mut second, REPLY_TIMEOUT).await;

        // Once the first closes, its slot is free again.
        drop(first);
        let mut answered = false;
        for _ in 0..20 {
            // Until the server has noticed the close, new connections are still refused.
            let mut third = TcpStream::connect(server.tcp()).await.unwrap();
            let _ = third.write_all(&binding_request().1).await;
            let mut buf = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_millis(200), third.read(&mut buf));
            if let Ok(Ok(n)) = read.await
                && n > 0
            {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            answered,
            "a connection after the first closed was not served"
        );
    })
    .await;
}

#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_tcp_idle_timeout() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits("tcp_idle_timeout = \"1s\""));
        let mut stream = TcpStream::connect(server.tcp()).await.unwrap();
        stream.write_all(&binding_request().1).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(REPLY_TIMEOUT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "no Binding response");
        let start = turnstone::io::clock::now().mono;
        wait_closed(&mut stream, Duration::from_secs(3)).await;
        let idle = elapsed(start);
        assert!(idle >= Duration::from_millis(800), "closed after {idle:?}");
    })
    .await;
}

#[tokio::test]
async fn a_tls_connection_without_a_client_hello_is_closed_after_tcp_handshake_timeout() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits("tcp_handshake_timeout = \"1s\""));
        let start = turnstone::io::clock::now().mono;
        let mut stream = TcpStream::connect(server.tls()).await.unwrap();
        wait_closed(&mut stream, Duration::from_secs(3)).await;
        let waited = elapsed(start);
        assert!(
            waited >= Duration::from_millis(800),
            "closed after {waited:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_message_trickled_byte_by_byte_is_cut_off_after_tcp_handshake_timeout() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_handshake_timeout = \"1s\"\ntcp_idle_timeout = \"1m\"",
        ));
        let mut stream = TcpStream::connect(server.tcp()).await.unwrap();
        // A complete first message, so the idle timeout (1 min) governs from here on.
        stream.write_all(&binding_request().1).await.unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(REPLY_TIMEOUT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "no Binding response");
        // Then a message that never completes, one byte every 200 ms: activity keeps the idle
        // timer alive, but the partial frame must be finished within 1 s.
        let start = turnstone::io::clock::now().mono;
        let partial = binding_request().1;
        let closed = tokio::time::timeout(Duration::from_secs(4), async {
            for byte in partial.iter().take(partial.len() - 1).cycle() {
                if stream.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::select! {
                    read = stream.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { return },
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server kept a trickling connection open"
        );
        let waited = elapsed(start);
        assert!(
            waited >= Duration::from_millis(800),
            "closed after {waited:?}"
        );
    })
    .await;
}
