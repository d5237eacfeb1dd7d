//! The admin listener survives slow and hostile clients (issue 13): a request head trickled
//! byte by byte (slowloris) or an idle kept-alive connection is closed after the header-read
//! timeout, oversized heads and any body are refused, connections beyond the cap are
//! closed at once while the admin port keeps answering afterwards, and one address at its
//! per-source cap leaves room for others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnstone::ops::{AdminHandle, AdminLimits, AdminState, spawn_admin_with};

use crate::common::bounded;
use crate::ops_admin::http_get;

fn admin(limits: AdminLimits) -> AdminHandle {
    spawn_admin_with(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(AdminState::new(None)),
        limits,
    )
    .unwrap()
}

fn short_timeouts() -> AdminLimits {
    AdminLimits {
        header_read_timeout: Duration::from_secs(1),
        ..AdminLimits::default()
    }
}

/// Reads until EOF or a reset; returns what arrived, or `None` if still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .ok()
    .map(|()| String::from_utf8_lossy(&text).into_owned())
}

fn since(start: std::time::Instant) -> Duration {
    turnstone::io::clock::now()
        .mono
        .saturating_duration_since(start)
}

#[tokio::test]
async fn a_request_head_trickled_byte_by_byte_is_cut_off_at_the_header_read_timeout() {
    bounded(async {
        let handle = admin(short_timeouts());
        let mut stream = TcpStream::connect(handle.address()).await.unwrap();
        let start = turnstone::io::clock::now().mono;
        let head =
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut closed = false;
        for byte in head.iter().cycle().take(40) {
            if stream.write_all(&[*byte]).await.is_err() {
                closed = true;
                break;
            }
            let mut buf = [0u8; 512];
            tokio::select! {
                // Any answer (a 408) or EOF ends the attack.
                _ = stream.read(&mut buf) => { closed = true; break }
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        assert!(
            closed,
            "a trickled request head held the connection for 4 s"
        );
        let took = since(start);
        assert!(
            (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&took),
            "closed after {took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_idle_connection_and_an_idle_kept_alive_connection_are_closed_at_the_header_read_timeout()
 {
    bounded(async {
        let handle = admin(short_timeouts());
        let mut silent = TcpStream::connect(handle.address()).await.unwrap();
        assert!(
            read_until_closed(&mut silent, Duration::from_secs(3))
                .await
                .is_some(),
            "a connection that never sent a byte stayed open"
        );

        let mut kept = TcpStream::connect(handle.address()).await.unwrap();
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until_closed(&mut kept, Duration::from_secs(3))
            .await
            .expect("an idle kept-alive connection stayed open");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    })
    .await;
}

#[tokio::test]
async fn an_oversized_request_head_or_a_body_is_refused_without_being_read() {
    bounded(async {
        let handle = admin(AdminLimits::default());
        let addr: SocketAddr = handle.address();
        let mut big = TcpStream::connect(addr).await.unwrap();
        let padding = "a".repeat(64 * 1024);
        let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {padding}\r\n\r\n");
        let _ = big.write_all(request.as_bytes()).await;
        let text = read_until_closed(&mut big, Duration::from_secs(3))
            .await
            .expect("an oversized head kept the connection open");
        assert!(
            !text.contains(" 200 "),
            "an oversized head was served: {text}"
        );

        let mut body = TcpStream::connect(addr).await.unwrap();
        body.write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(3), body.read(&mut buf))
            .await
            .expect("no answer to a request announcing a body")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert_eq!(http_get(addr, "/healthz", None).await.0, 200);
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_admin_cap_are_closed_at_once_and_served_again_after() {
    bounded(async {
        let handle = admin(AdminLimits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(20),
            ..AdminLimits::default()
        });
        let addr = handle.address();
        let held = [
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        // Let the listener accept both before the third arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = TcpStream::connect(addr).await.unwrap();
        let text = read_until_closed(&mut third, Duration::from_secs(2))
            .await
            .expect("a connection over the cap was kept open");
        assert!(text.is_empty(), "{text}");
        drop(held);
        let mut served = false;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut probe = TcpStream::connect(addr).await.unwrap();
            let _ = probe
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            if read_until_closed(&mut probe, Duration::from_secs(1))
                .await
                .is_some_and(|t| t.starts_with("HTTP/1.1 200"))
            {
                served = true;
                break;
            }
        }
        assert!(
            served,
            "the admin port did not recover after the connections closed"
        );
    })
    .await;
}

#[tokio::test]
async fn one_address_at_the_admin_per_source_cap_leaves_room_for_probes_from_another() {
    bounded(async {
        let handle = admin(AdminLimits {
            max_connections: 8,
            max_connections_per_ip: 2,
            header_read_timeout: Duration::from_secs(20),
            ..AdminLimits::default()
        });
        let addr = handle.address();
        let _held = [
            connect_from("127.0.0.1", addr).await,
            connect_from("127.0.0.1", addr).await,
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut third = connect_from("127.0.0.1", addr).await;
        let text = read_until_closed(&mut third, Duration::from_secs(2))
            .await
            .expect("a third connection from one address was kept open");
        assert!(text.is_empty(), "{text}");
        // A probe from another address (the kubelet's, say) is still served.
        let mut probe = connect_from("127.0.0.2", addr).await;
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let text = read_until_closed(&mut probe, Duration::from_secs(2))
            .await
            .expect("the probe got no complete answer");
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    })
    .await;
}

/// A TCP connection to `server` from the loopback address `source`.
async fn connect_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}
