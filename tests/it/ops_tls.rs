//! Failed TLS handshakes reach `/metrics` as `turnstone_tls_handshake_failures_total`.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnstone::ops::{AdminState, install_recorder, spawn_admin};

use crate::common::{REPLY_TIMEOUT, TestServer, bounded};
use crate::ops_admin::http_get;
use crate::ops_limits::metric;

const FAILURES: &str = "turnstone_tls_handshake_failures_total";

#[tokio::test]
async fn a_failed_tls_handshake_is_counted_in_metrics() {
    bounded(async {
        let state = Arc::new(AdminState::new(install_recorder()));
        let admin = spawn_admin("127.0.0.1:0".parse().unwrap(), state).unwrap();
        let failures = || async {
            metric(
                &http_get(admin.address(), "/metrics", None).await.1,
                FAILURES,
                &[],
            )
        };
        let server = TestServer::start();
        let before = failures().await;

        // Plain HTTP instead of a ClientHello: rustls refuses it and the server closes.
        let mut stream = TcpStream::connect(server.tls()).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: turnstone\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(REPLY_TIMEOUT, async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        });
        assert!(closed.await.is_ok(), "the server kept the connection open");

        // Workers publish once a second.
        let mut after = before;
        for _ in 0..30 {
            after = failures().await;
            if after > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(after > before, "{FAILURES} stayed at {before}");
    })
    .await;
}
