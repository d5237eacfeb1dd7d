//! Browser acceptance test: headless Chromium connects two RTCPeerConnections with
//! `iceTransportPolicy: "relay"` through an in-process Turnstone over TURN/UDP, TURN/TCP
//! and TURN/TLS, with a static user and with TURN REST credentials, and exchanges
//! data-channel messages over a relay/relay candidate pair.
//!
//! Needs Node.js (`node`, `npm`) and Chromium (`/usr/bin/chromium`, or env `CHROMIUM`);
//! a missing one fails the test (it never skips). The Node script lives in
//! `tests/browser/relay-test.mjs`; `npm ci` runs there when `node_modules` is missing.

mod browser_support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use browser_support::{
    TempDir, browser_dir, check_prerequisites, chromium_path, json_str, spawn, wait_with_timeout,
    write_certificate,
};

use turnstone::config::Config;
use turnstone::core::{Transport, UsageRecord};
use turnstone::io::{RunningServer, UsageSink, clock};

const STATIC_USER: &str = "browser";
const STATIC_PASSWORD: &str = "browser-password";
const REST_SECRET: &str = "browser-e2e-secret";
const REST_USER: &str = "rest-browser";
/// The script gives up after 60 s on its own; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(75);

fn start_server(dir: &Path, usage: UsageSink) -> RunningServer {
    let (cert, key) = write_certificate(dir);
    let text = format!(
        r#"
[server]
realm = "turnstone.test"
workers = 2

[[listen]]
protocol = "udp"
address = "127.0.0.1:0"

[[listen]]
protocol = "tcp"
address = "127.0.0.1:0"

[[listen]]
protocol = "tls"
address = "127.0.0.1:0"
certificate = "{cert}"
private_key = "{key}"

[admin]
enabled = false

[relay]
address = "127.0.0.1"

[auth]
secrets = ["{REST_SECRET}"]

[[auth.users]]
name = "{STATIC_USER}"
password = "{STATIC_PASSWORD}"

[peers]
allow = ["127.0.0.0/8"]
"#,
        cert = cert.display(),
        key = key.display(),
    );
    let config = Config::from_toml(&text, dir)
        .unwrap_or_else(|e| panic!("test configuration invalid:\n{e}"));
    let spec = config
        .server_spec(Arc::new(config.credential_store()), usage)
        .unwrap();
    turnstone::io::start(spec).unwrap()
}

struct Scenario {
    label: String,
    url: String,
    username: String,
    credential: String,
    /// `relayProtocol` Chromium reports for the local relay candidate.
    relay_protocol: &'static str,
}

impl Scenario {
    fn input_json(&self) -> String {
        format!(
            r#"{{"label":{},"chromium":{},"iceServers":[{{"urls":{},"username":{},"credential":{}}}]}}"#,
            json_str(&self.label),
            json_str(&chromium_path().to_string_lossy()),
            json_str(&self.url),
            json_str(&self.username),
            json_str(&self.credential),
        )
    }
}

fn scenarios(server: &RunningServer) -> Vec<Scenario> {
    let port = |t| {
        server
            .address(t)
            .unwrap_or_else(|| panic!("no {t:?} listener bound"))
            .port()
    };
    let urls = [
        (
            "udp",
            format!("turn:127.0.0.1:{}?transport=udp", port(Transport::Udp)),
            "udp",
        ),
        (
            "tcp",
            format!("turn:127.0.0.1:{}?transport=tcp", port(Transport::Tcp)),
            "tcp",
        ),
        (
            "tls",
            format!("turns:localhost:{}?transport=tcp", port(Transport::Tls)),
            "tls",
        ),
    ];
    let expiry = clock::now().unix_secs + 3600;
    let rest_username = turnstone::auth::rest_username(expiry, Some(REST_USER));
    let rest_password = turnstone::auth::rest_password(REST_SECRET.as_bytes(), &rest_username);
    let mut out = Vec::new();
    for (name, url, relay_protocol) in urls {
        out.push(Scenario {
            label: format!("{name}/static"),
            url: url.clone(),
            username: STATIC_USER.to_owned(),
            credential: STATIC_PASSWORD.to_owned(),
            relay_protocol,
        });
        out.push(Scenario {
            label: format!("{name}/rest"),
            url,
            username: rest_username.clone(),
            credential: rest_password.clone(),
            relay_protocol,
        });
    }
    out
}

/// Runs the Node script for one scenario; `Err` carries everything needed to diagnose it.
fn run_scenario(s: &Scenario) -> Result<String, String> {
    let mut cmd = Command::new("node");
    cmd.arg("relay-test.mjs")
        .arg(s.input_json())
        .current_dir(browser_dir());
    let out = wait_with_timeout(
        spawn(&mut cmd, "node"),
        SCRIPT_TIMEOUT,
        &format!("relay-test.mjs {}", s.label),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let report = || {
        format!(
            "{} ({}): exit {}\nstdout: {stdout}\nstderr: {stderr}",
            s.label, s.url, out.status
        )
    };
    if !out.status.success() || !stdout.contains(r#""ok":true"#) {
        return Err(report());
    }
    // The script checks this too; assert it here so the test states the acceptance criterion.
    if !stdout.contains(r#""selectedTypes":{"a":"relay/relay","b":"relay/relay"}"#) {
        return Err(format!(
            "selected candidate pair is not relay/relay on both peers\n{}",
            report()
        ));
    }
    let protocols = format!(
        r#""relayProtocols":{{"a":"{p}","b":"{p}"}}"#,
        p = s.relay_protocol
    );
    if !stdout.contains(&protocols) {
        return Err(format!(
            "relay candidates were not allocated over {}\n{}",
            s.relay_protocol,
            report()
        ));
    }
    Ok(stdout)
}

#[test]
fn chromium_relays_data_channels_through_turnstone_over_udp_tcp_and_tls_with_static_and_rest_credentials()
 {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
    check_prerequisites();

    let dir = TempDir::new();
    let records: Arc<Mutex<Vec<UsageRecord>>> = Arc::default();
    let sink_records = Arc::clone(&records);
    let usage: UsageSink = Arc::new(move |r| sink_records.lock().unwrap().push(r));
    let server = start_server(&dir.0, usage);
    let bound: Vec<(Transport, SocketAddr)> = server.bound().to_vec();
    eprintln!("turnstone listening on {bound:?}");

    let mut failures = Vec::new();
    for s in scenarios(&server) {
        let start = clock::now().mono;
        match run_scenario(&s) {
            Ok(line) => eprintln!("PASS {} in {:?}: {line}", s.label, start.elapsed()),
            Err(why) => {
                eprintln!("FAIL {} in {:?}: {why}", s.label, start.elapsed());
                failures.push(why);
            }
        }
        eprintln!(
            "allocations alive after {}: {}",
            s.label,
            server.allocations()
        );
    }
    server.shutdown();
    let users: Vec<String> = records
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.user.clone())
        .collect();
    eprintln!("usage records: {} ({users:?})", users.len());
    assert!(
        failures.is_empty(),
        "{} of 6 browser scenarios failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
