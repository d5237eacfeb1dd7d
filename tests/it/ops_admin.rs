//! The admin HTTP listener: `/healthz`, `/readyz`, `/credentials` (minted credentials really
//! authenticate) and `/metrics` counting exactly the traffic and requests of a session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnstone::auth::CredentialStore;
use turnstone::core::Transport;
use turnstone::ops::{AdminHandle, AdminState, CredentialIssuer, install_recorder, spawn_admin};
use turnstone::proto::error_code;

use crate::client::{Conn, TurnClient, error_of, parse};
use crate::common::{
    EchoPeer, PASSWORD, REALM, REPLY_TIMEOUT, SECRET, TEST_TIMEOUT, TestServer, USER, bounded,
};
use crate::ops_limits::{channel_client, echo_once, metric, try_allocate};

/// Set in the environment of the child process that runs [`isolated_metrics_session`].
const ISOLATED: &str = "TURNSTONE_IT_ISOLATED";
/// The bearer key of `/credentials`.
const API_KEY: &str = "it-admin-api-key-0123456789";

/// An admin listener on a loopback port of its own.
fn admin() -> (Arc<AdminState>, AdminHandle) {
    let state = Arc::new(AdminState::new(install_recorder()));
    let handle = spawn_admin("127.0.0.1:0".parse().unwrap(), Arc::clone(&state)).unwrap();
    (state, handle)
}

/// `GET path` (with a bearer token when given): status code and body.
pub async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let auth = bearer.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8(response).unwrap()
    };
    let text = tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .expect("admin listener did not answer in time");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// The string value of `"key":"…"` in a flat JSON text.
fn json_str<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\":\""))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 4;
    let len = json[start..].find('"').unwrap();
    &json[start..start + len]
}

#[tokio::test]
async fn healthz_is_always_200_and_readyz_follows_readiness() {
    bounded(async {
        let (state, handle) = admin();
        let addr = handle.address();
        assert_eq!(http_get(addr, "/healthz", None).await.0, 200);
        assert_eq!(http_get(addr, "/readyz", None).await.0, 503);
        state.set_ready(true);
        assert_eq!(http_get(addr, "/readyz", None).await.0, 200);
        assert_eq!(http_get(addr, "/healthz", None).await.0, 200);
        state.set_ready(false);
        assert_eq!(http_get(addr, "/readyz", None).await.0, 503);
        let (status, body) = http_get(addr, "/metrics", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(http_get(addr, "/no-such-page", None).await.0, 404);
    })
    .await;
}

#[tokio::test]
async fn credentials_need_the_api_key_and_mint_credentials_the_server_accepts() {
    bounded(async {
        let (state, handle) = admin();
        let addr = handle.address();
        let path = "/credentials?user=alice";
        assert_eq!(
            http_get(addr, path, Some(API_KEY)).await.0,
            404,
            "no issuer"
        );

        let server = TestServer::start();
        let uris = vec![
            format!("turn:127.0.0.1:{}?transport=udp", server.udp().port()),
            format!("turns:localhost:{}?transport=tcp", server.tls().port()),
        ];
        let store = CredentialStore::new(REALM, std::iter::empty(), vec![SECRET.into()]);
        state.set_issuer(Some(CredentialIssuer {
            api_key: API_KEY.to_string(),
            store: Arc::new(store),
            ttl: Duration::from_secs(600),
            uris: uris.clone(),
        }));
        assert_eq!(http_get(addr, path, None).await.0, 401, "no key");
        assert_eq!(http_get(addr, path, Some("wrong-key")).await.0, 401);
        let (status, body) = http_get(addr, path, Some(API_KEY)).await;
        assert_eq!(status, 200, "{body}");

        let (username, password) = (json_str(&body, "username"), json_str(&body, "password"));
        let (expiry, user) = username.split_once(':').unwrap();
        assert_eq!(user, "alice");
        let now = turnstone::io::clock::now().unix_secs;
        let expiry: u64 = expiry.parse().unwrap();
        assert!((now + 590..=now + 610).contains(&expiry), "{username}");
        assert!(body.contains("\"ttl\":600"), "{body}");
        let ice = &body[body.find("\"iceServers\"").expect(&body)..];
        for uri in &uris {
            assert!(
                ice.contains(&format!("\"{uri}\"")),
                "{uri} missing in {body}"
            );
        }
        assert_eq!(json_str(ice, "username"), username);
        assert_eq!(json_str(ice, "credential"), password);

        let conn = Conn::connect(&server, Transport::Udp).await;
        TurnClient::new(conn, username, password).allocate().await;
        assert_eq!(server.allocations(), 1);
    })
    .await;
}

/// Runs [`isolated_metrics_session`] in a child process, where no other test's server
/// publishes to the process-wide recorder, so counts can be checked exactly.
#[tokio::test]
async fn metrics_count_exactly_the_relayed_traffic_requests_and_auth_failures() {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "ops_admin::isolated_metrics_session",
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
        if waited > TEST_TIMEOUT {
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
        "the isolated metrics session failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A metric name, label pairs its series must have, and the increase expected.
type Expected = (&'static str, &'static [(&'static str, &'static str)], u64);

/// Every series the session checks, with the increase it must show.
const EXPECTED: [Expected; 9] = [
    (
        "turnstone_relayed_packets_total",
        &[("direction", "to_peer")],
        10,
    ),
    (
        "turnstone_relayed_packets_total",
        &[("direction", "to_client")],
        10,
    ),
    (
        "turnstone_relayed_bytes_total",
        &[("direction", "to_peer")],
        1000,
    ),
    (
        "turnstone_relayed_bytes_total",
        &[("direction", "to_client")],
        1000,
    ),
    ("turnstone_allocations_created_total", &[], 1),
    (
        "turnstone_requests_total",
        &[("method", "allocate"), ("code", "200")],
        1,
    ),
    // Two challenges and the wrong password.
    (
        "turnstone_requests_total",
        &[("method", "allocate"), ("code", "401")],
        3,
    ),
    (
        "turnstone_requests_total",
        &[("method", "channel_bind"), ("code", "200")],
        1,
    ),
    ("turnstone_auth_failures_total", &[], 1),
];

/// The increase of every [`EXPECTED`] series since `before`.
fn increases(before: &str, now: &str) -> Vec<u64> {
    EXPECTED
        .iter()
        .map(|(name, labels, _)| metric(now, name, labels) - metric(before, name, labels))
        .collect()
}

#[tokio::test]
#[ignore = "run in a process of its own by metrics_count_exactly_the_relayed_traffic_requests_and_auth_failures"]
async fn isolated_metrics_session() {
    if std::env::var_os(ISOLATED).is_none() {
        return;
    }
    bounded(async {
        let (_state, handle) = admin();
        let addr = handle.address();
        let scrape = || http_get(addr, "/metrics", None);
        let before = scrape().await.1;
        let server = TestServer::start();
        let peer = EchoPeer::start();

        let mut conn = Conn::connect(&server, Transport::Udp).await;
        let reply = try_allocate(&mut conn, USER, "not-the-password", None).await;
        assert_eq!(error_of(&parse(&reply)), error_code::UNAUTHENTICATED);
        let mut client = channel_client(&server, USER, PASSWORD, peer.addr).await;
        for _ in 0..10 {
            echo_once(&mut client, 100).await;
        }

        let want: Vec<u64> = EXPECTED.iter().map(|e| e.2).collect();
        let mut got = Vec::new();
        // Workers publish once a second.
        for _ in 0..30 {
            got = increases(&before, &scrape().await.1);
            if got == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, want, "increases of {EXPECTED:?}");
        // Another publication round adds nothing: each event was counted once.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let now = scrape().await.1;
        assert_eq!(increases(&before, &now), want, "after another second");
        let failure = now
            .lines()
            .find(|l| l.starts_with("turnstone_auth_failures_total{"))
            .unwrap();
        assert!(failure.contains("reason=\"wrong_password\""), "{failure}");
        // Every published metric says what it counts.
        for (name, _, _) in EXPECTED {
            assert!(
                now.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
        }
    })
    .await;
}
