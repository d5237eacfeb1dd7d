//! TCP/TLS connections cannot be hoarded (issue 13): a per-source connection cap, a deadline
//! to get an allocation, and an idle timer that only the allocation's own traffic resets.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use turnstone::core::Transport;
use turnstone::proto::{Class, Method, attr};

use crate::client::{Conn, TurnClient, binding_request, channel_data, parse};
use crate::common::{EchoPeer, Options, REPLY_TIMEOUT, TestServer, bounded, rest_credentials};
use crate::ops_limits::CHANNEL;

/// Whether a Binding request on `stream` is answered (false when the server closed it).
async fn binding_answered(stream: &mut TcpStream) -> bool {
    if stream.write_all(&binding_request().1).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(REPLY_TIMEOUT, stream.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// A TCP connection to `server` from the loopback address `source`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Sends `message()` every 200 ms until the server closes the connection; returns how long
/// that took, or `None` if it was still open after `within`.
async fn closed_while_sending(
    conn: &mut Conn,
    message: impl Fn() -> Vec<u8>,
    within: Duration,
) -> Option<Duration> {
    let Conn::Stream { io, .. } = conn else {
        panic!("a stream connection is needed");
    };
    let start = turnstone::io::clock::now().mono;
    let mut buf = [0u8; 2048];
    let closed = tokio::time::timeout(within, async {
        loop {
            if io.write_all(&message()).await.is_err() {
                return;
            }
            let deadline = tokio::time::sleep(Duration::from_millis(200));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    read = io.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) { return },
                    () = &mut deadline => break,
                }
            }
        }
    })
    .await;
    closed.ok().map(|()| {
        turnstone::io::clock::now()
            .mono
            .saturating_duration_since(start)
    })
}

/// A TCP client with an allocation and [`CHANNEL`] bound to `peer`.
async fn tcp_channel_client(server: &TestServer, peer: SocketAddr) -> TurnClient {
    let (user, password) = rest_credentials("hoarder");
    let conn = Conn::connect(server, Transport::Tcp).await;
    let mut client = TurnClient::new(conn, &user, &password);
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

#[tokio::test]
async fn a_source_at_max_tcp_connections_per_ip_is_refused_while_another_address_still_connects() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits("max_tcp_connections_per_ip = 2"));
        // Two workers: the connections land on either, the count is shared.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = connect_from("127.0.0.1", server.tcp()).await;
            assert!(binding_answered(&mut stream).await);
            held.push(stream);
        }
        let mut third = connect_from("127.0.0.1", server.tcp()).await;
        assert!(
            !binding_answered(&mut third).await,
            "a third connection from one IP was served"
        );
        let mut tls = connect_from("127.0.0.1", server.tls()).await;
        assert!(
            !binding_answered(&mut tls).await,
            "TLS counts against the same cap"
        );
        let mut other = connect_from("127.0.0.2", server.tcp()).await;
        assert!(
            binding_answered(&mut other).await,
            "another source address was refused"
        );
    })
    .await;
}

#[tokio::test]
async fn a_tcp_connection_sending_only_binding_requests_is_closed_at_tcp_auth_timeout() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_auth_timeout = \"1s\"\ntcp_idle_timeout = \"1m\"",
        ));
        let mut conn = Conn::connect(&server, Transport::Tcp).await;
        conn.send(&binding_request().1).await;
        assert_eq!(parse(&conn.recv().await).class(), Class::Success);
        let took = closed_while_sending(&mut conn, || binding_request().1, Duration::from_secs(4))
            .await
            .expect("Binding requests kept an unauthenticated connection open");
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
    })
    .await;
}

#[tokio::test]
async fn tcp_and_tls_connections_sending_channel_data_without_an_allocation_are_closed_at_tcp_auth_timeout()
 {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_auth_timeout = \"1s\"\ntcp_idle_timeout = \"1m\"",
        ));
        let junk = || channel_data(CHANNEL, &[0u8; 100], true);
        for transport in [Transport::Tcp, Transport::Tls] {
            let mut conn = Conn::connect(&server, transport).await;
            let took = closed_while_sending(&mut conn, junk, Duration::from_secs(4))
                .await
                .unwrap_or_else(|| panic!("junk ChannelData kept a {transport:?} connection open"));
            assert!(took < Duration::from_secs(2), "closed after {took:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_allocated_tcp_connection_outlives_tcp_auth_timeout_while_it_relays() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_auth_timeout = \"1s\"\ntcp_idle_timeout = \"1s\"",
        ));
        let peer = EchoPeer::start();
        let mut client = tcp_channel_client(&server, peer.addr).await;
        // 2.5 s of relaying: past both the auth deadline and an idle timeout of 1 s.
        for _ in 0..25 {
            client
                .conn
                .send(&channel_data(CHANNEL, &[7u8; 64], true))
                .await;
            let echo = client.conn.recv().await;
            assert_eq!(
                turnstone::proto::ChannelData::parse(&echo)
                    .unwrap()
                    .channel(),
                CHANNEL
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(server.allocations(), 1);
    })
    .await;
}

/// Peer data reaches a TCP client without waking its task (written straight to the socket by
/// the data-plane thread): it still counts as the allocation's traffic for the idle timer,
/// and once it stops the idle timeout applies again.
#[tokio::test]
async fn a_tcp_connection_that_only_receives_from_its_peer_stays_open_until_the_peer_stops() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_auth_timeout = \"1s\"\ntcp_idle_timeout = \"1s\"",
        ));
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (user, password) = rest_credentials("listener");
        let conn = Conn::connect(&server, Transport::Tcp).await;
        let mut client = TurnClient::new(conn, &user, &password);
        let (relayed, _, _) = client.allocate().await;
        let peer_addr = peer.local_addr().unwrap();
        client
            .request_ok(Method::CREATE_PERMISSION, |w| {
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                    .unwrap();
            })
            .await;
        // 2.5 s of peer data only: past the idle timeout and the auth deadline.
        for _ in 0..25 {
            peer.send_to(b"from the peer", relayed).unwrap();
            let data = client.conn.recv().await;
            assert_eq!(parse(&data).method(), Method::DATA);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            server.allocations(),
            1,
            "peer data kept the connection open"
        );
        // Silence: the idle timeout closes it, and the allocation ends with it.
        assert!(
            server
                .wait_allocations(0, Duration::from_millis(3000))
                .await,
            "an idle connection stayed open"
        );
    })
    .await;
}

#[tokio::test]
async fn an_allocated_tcp_connection_sending_data_for_an_unbound_channel_is_closed_when_idle() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_auth_timeout = \"20s\"\ntcp_idle_timeout = \"1s\"",
        ));
        let peer = EchoPeer::start();
        let mut client = tcp_channel_client(&server, peer.addr).await;
        let unbound = || channel_data(CHANNEL + 1, &[0u8; 100], true);
        let took = closed_while_sending(&mut client.conn, unbound, Duration::from_secs(4))
            .await
            .expect("dropped ChannelData kept the connection open");
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
        // Closing the connection ends its allocation (RFC 8656 §3.1).
        assert!(
            server
                .wait_allocations(0, Duration::from_millis(1000))
                .await,
            "the allocation outlived its connection"
        );
    })
    .await;
}

#[tokio::test]
async fn an_allocated_tcp_connection_sending_only_binding_requests_is_closed_when_idle() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_auth_timeout = \"20s\"\ntcp_idle_timeout = \"1s\"",
        ));
        let (user, password) = rest_credentials("binder");
        let mut client = TurnClient::new(
            Conn::connect(&server, Transport::Tcp).await,
            &user,
            &password,
        );
        client.allocate().await;
        // A Binding is answered, but it concerns no allocation: it is not the allocation's
        // traffic and must not keep the connection open.
        let took = closed_while_sending(
            &mut client.conn,
            || binding_request().1,
            Duration::from_secs(4),
        )
        .await
        .expect("Binding requests kept an allocated connection open past tcp_idle_timeout");
        assert!(took < Duration::from_secs(2), "closed after {took:?}");
    })
    .await;
}

#[tokio::test]
async fn a_client_streaming_frames_whose_reads_always_end_mid_frame_outlives_tcp_handshake_timeout()
{
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_handshake_timeout = \"1s\"\ntcp_auth_timeout = \"1m\"\ntcp_idle_timeout = \"1m\"\n\
             requests_per_second_per_ip = 0",
        ));
        let stream = connect_from("127.0.0.1", server.tcp()).await;
        stream.set_nodelay(true).unwrap();
        let (mut reader, mut writer) = stream.into_split();
        // Reads until the server closes the connection; returns the bytes answered.
        let answers = tokio::spawn(async move {
            let (mut total, mut buf) = (0, [0u8; 4096]);
            while let Ok(n @ 1..) = reader.read(&mut buf).await {
                total += n;
            }
            total
        });
        let frame = binding_request().1;
        let half = frame.len() / 2;
        writer.write_all(&frame[..half]).await.unwrap();
        // 2.5 s of writes 100 ms apart, each completing one Binding and starting the next:
        // every read ends mid-frame, yet frames complete all the time.
        let mut chunk = frame[half..].to_vec();
        chunk.extend_from_slice(&frame[..half]);
        for _ in 0..25 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                !answers.is_finished(),
                "closed while frames kept completing"
            );
            writer.write_all(&chunk).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !answers.is_finished(),
            "closed while frames kept completing"
        );
    })
    .await;
}

#[tokio::test]
async fn a_relaying_tcp_client_that_stops_reading_is_closed_after_tcp_handshake_timeout() {
    bounded(async {
        let server = TestServer::start_with(&Options::limits(
            "tcp_handshake_timeout = \"1s\"\ntcp_idle_timeout = \"1m\"",
        ));
        let peer = EchoPeer::start();
        // A small receive window, so the server's send buffer fills sooner.
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(server.tcp()).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let conn = Conn::Stream {
            io: Box::new(tcp),
            buf: Vec::new(),
            local,
        };
        let (user, password) = rest_credentials("slow-reader");
        let mut client = TurnClient::new(conn, &user, &password);
        client.allocate().await;
        client
            .request_ok(Method::CHANNEL_BIND, |w| {
                w.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16)
                    .unwrap();
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer.addr)
                    .unwrap();
            })
            .await;
        // The peer echoes everything back and the client never reads: the server's writes
        // stall. Keep sending (up to 40 MB) until the server stops reading too.
        let Conn::Stream { io, .. } = &mut client.conn else {
            panic!("TCP");
        };
        let frame = channel_data(CHANNEL, &[0x5a; 4000], true);
        for i in 0..10_000 {
            let send = tokio::time::timeout(Duration::from_millis(500), io.write_all(&frame));
            if !matches!(send.await, Ok(Ok(()))) || server.allocations() == 0 {
                break;
            }
            if i % 16 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // A stalled write ends the connection, and with it the allocation (RFC 8656 §3.1).
        assert!(
            server
                .wait_allocations(0, Duration::from_millis(3000))
                .await,
            "a client that never reads kept its connection and allocation"
        );
    })
    .await;
}

/// Set in the environment of the child process that runs [`isolated_emfile_session`].
const ISOLATED: &str = "TURNSTONE_IT_EMFILE";

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills in the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// Runs [`isolated_emfile_session`] in a child process: it lowers the open-file limit and
/// uses every descriptor, which no other test may see.
#[tokio::test]
async fn an_accept_loop_out_of_file_descriptors_backs_off_instead_of_spinning() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "hostile_streams::isolated_emfile_session",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ISOLATED, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut waited = Duration::ZERO;
    while child.try_wait().unwrap().is_none() {
        if waited > crate::common::TEST_TIMEOUT {
            let _ = child.kill();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the EMFILE session failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
#[ignore = "run in a process of its own by an_accept_loop_out_of_file_descriptors_backs_off_instead_of_spinning"]
async fn isolated_emfile_session() {
    if std::env::var_os(ISOLATED).is_none() {
        return;
    }
    bounded(async {
        let server = TestServer::start_with(&Options {
            workers: 1,
            ..Options::default()
        });
        // The worker's accept loop runs once a connection is served.
        let mut first = TcpStream::connect(server.tcp()).await.unwrap();
        assert!(binding_answered(&mut first).await);
        let limit = libc::rlimit {
            rlim_cur: 512,
            rlim_max: libc::RLIM_INFINITY,
        };
        let mut current = limit;
        // SAFETY: plain rlimit structs.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) },
            0
        );
        let lowered = libc::rlimit {
            rlim_cur: limit.rlim_cur,
            rlim_max: current.rlim_max,
        };
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        // Use every descriptor, then free one for the client's socket: the server's accept
        // then fails with EMFILE while the connection waits in the backlog.
        let mut files = Vec::new();
        for _ in 0..512 {
            match std::fs::File::open("/dev/null") {
                Ok(f) => files.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    break;
                }
            }
        }
        files.pop();
        let mut client = std::net::TcpStream::connect(server.tcp()).unwrap();

        let before = cpu_time();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let used = cpu_time() - before;
        assert!(
            used < Duration::from_millis(300),
            "{used:?} of CPU in 1 s while accept fails"
        );

        // Descriptors back: the waiting connection is accepted and served.
        drop(files);
        use std::io::{Read, Write};
        client.write_all(&binding_request().1).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let mut buf = [0u8; 512];
        assert!(
            client.read(&mut buf).unwrap() > 0,
            "no answer after recovery"
        );
    })
    .await;
}
