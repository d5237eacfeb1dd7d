//! The self-test page's listener over plain HTTP, without a browser: the page and its headers,
//! credentials that are self-test credentials of the server's key, reports checked against
//! them (content type, size, shape, forged or reused IDs) and requests limited per source.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use turnstone::auth::SelftestKey;
use turnstone::config::Config;
use turnstone::core::Transport;
use turnstone::ops::selftest::{SelftestHandle, SelftestSite, spawn_selftest};

use crate::common::{REPLY_TIMEOUT, TempDir, bounded};

const KEY: [u8; 32] = [0x77; 32];

/// A self-test listener for a server with UDP and TCP on 3478 (nothing listens there: only
/// the page's answers are under test), taking `per_minute` requests per source.
fn site(per_minute: u32) -> SelftestHandle {
    let text = format!(
        "[relay]\naddress = \"127.0.0.1\"\n[admin]\nenabled = false\n\
         [selftest]\naddress = \"127.0.0.1:0\"\npublic_host = \"turn.example.com\"\n\
         requests_per_minute_per_ip = {per_minute}\n"
    );
    let config = Config::from_toml(&text, Path::new("")).unwrap();
    let bound = [
        (Transport::Udp, "127.0.0.1:3478".parse().unwrap()),
        (Transport::Tcp, "127.0.0.1:3478".parse().unwrap()),
    ];
    let site = SelftestSite::from_config(&config, &bound, SelftestKey::new(KEY))
        .unwrap()
        .unwrap();
    spawn_selftest(site).unwrap()
}

/// One request on its own connection: status, head and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let ct = content_type.map_or(String::new(), |t| format!("Content-Type: {t}\r\n"));
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{ct}Content-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response).await;
        String::from_utf8_lossy(&response).into_owned()
    };
    let text = tokio::time::timeout(REPLY_TIMEOUT, exchange)
        .await
        .expect("the self-test listener did not answer in time");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_ascii_lowercase(), body.to_string())
}

/// The string value of `"key":"…"` in a flat JSON text.
fn field<'a>(json: &'a str, key: &str) -> &'a str {
    let start = json
        .find(&format!("\"{key}\":\""))
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + key.len()
        + 4;
    let end = json[start..].find('"').unwrap() + start;
    &json[start..end]
}

fn report(username: &str, password: &str) -> String {
    format!(
        r#"{{"username":"{username}","password":"{password}","browser":"Test 1",
        "direct":{{"host":true,"srflx":true}},
        "transports":[{{"transport":"udp","verdict":"works","relayMs":5,"rttMs":1,"lossPct":0,"kbps":900}}]}}"#
    )
}

#[tokio::test]
async fn the_page_is_self_contained_and_credentials_are_self_test_credentials_of_the_key() {
    bounded(async {
        let page = site(30);
        let addr = page.address();
        let (status, head, body) = http(addr, "GET", "/", None, "").await;
        assert_eq!(status, 200);
        assert!(body.contains("Call connectivity test"));
        assert!(
            head.contains("content-security-policy: default-src 'none'"),
            "{head}"
        );
        // No external assets: nothing is loaded from another origin.
        assert!(!body.contains("src=\"http") && !body.contains("href=\"http"));

        let (status, _, issued) = http(addr, "POST", "/credential", None, "").await;
        assert_eq!(status, 200, "{issued}");
        let username = field(&issued, "username");
        let password = field(&issued, "credential");
        let (id, _) = SelftestKey::new(KEY)
            .verify(username, password)
            .expect("a self-test credential of the server's key");
        assert_eq!(field(&issued, "id"), id.to_string());
        assert!(issued.contains(r#""url":"turn:turn.example.com:3478?transport=udp""#));
        assert!(issued.contains(r#""stun":"stun:turn.example.com:3478""#));

        let (status, _, _) = http(addr, "GET", "/credential", None, "").await;
        assert_eq!(status, 405);
        let (status, _, _) = http(addr, "GET", "/admin", None, "").await;
        assert_eq!(status, 404);
    })
    .await;
}

#[tokio::test]
async fn a_report_needs_its_credential_and_is_taken_once() {
    bounded(async {
        let page = site(30);
        let addr = page.address();
        let (_, _, issued) = http(addr, "POST", "/credential", None, "").await;
        let (username, password) = (field(&issued, "username"), field(&issued, "credential"));
        let json = Some("application/json");

        // A cross-origin form cannot send JSON without a preflight: other types are refused.
        let good = report(username, password);
        let (status, _, _) = http(addr, "POST", "/report", Some("text/plain"), &good).await;
        assert_eq!(status, 415);
        let forged = report(username, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(http(addr, "POST", "/report", json, &forged).await.0, 403);
        let odd = good.replace("\"browser\"", "\"extra\":1,\"browser\"");
        assert_eq!(http(addr, "POST", "/report", json, &odd).await.0, 400);
        let huge = good.replace("Test 1", &"x".repeat(9000));
        assert_eq!(http(addr, "POST", "/report", json, &huge).await.0, 413);

        let (status, _, body) = http(addr, "POST", "/report", json, &good).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(field(&issued, "id")));
        assert_eq!(http(addr, "POST", "/report", json, &good).await.0, 409);
    })
    .await;
}

#[tokio::test]
async fn requests_are_limited_per_source() {
    bounded(async {
        let page = site(3);
        let addr = page.address();
        for _ in 0..3 {
            assert_eq!(http(addr, "GET", "/", None, "").await.0, 200);
        }
        let (status, _, body) = http(addr, "POST", "/credential", None, "").await;
        assert_eq!(status, 429, "{body}");
    })
    .await;
}

#[tokio::test]
async fn the_page_is_served_over_https_and_tests_the_host_the_user_typed() {
    bounded(async {
        let dir = TempDir::new();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.0.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.0.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
        // No public_host: the URLs take the host of the request.
        let text = "[relay]\naddress = \"127.0.0.1\"\n[admin]\nenabled = false\n\
                    [selftest]\naddress = \"127.0.0.1:0\"\ncertificate = \"cert.pem\"\n\
                    private_key = \"key.pem\"\n";
        let config = Config::from_toml(text, &dir.0).unwrap();
        let bound = [(Transport::Udp, "127.0.0.1:3478".parse().unwrap())];
        let site = SelftestSite::from_config(&config, &bound, SelftestKey::new(KEY))
            .unwrap()
            .unwrap();
        let page = spawn_selftest(site).unwrap();
        assert!(page.url().starts_with("https://"));

        let mut roots = rustls::RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(page.address()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let port = page.address().port();
        let request = format!(
            "POST /credential HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains(r#""stun":"stun:localhost:3478""#), "{text}");
    })
    .await;
}
