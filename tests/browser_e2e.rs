//! Browser acceptance test: headless Chromium connects two RTCPeerConnections with
//! `iceTransportPolicy: "relay"` through an in-process Turnstone over TURN/UDP, TURN/TCP
//! and TURN/TLS, with a static user and with TURN REST credentials, and exchanges
//! data-channel messages over a relay/relay candidate pair.
//!
//! Needs Node.js (`node`, `npm`) and Chromium (`/usr/bin/chromium`, or env `CHROMIUM`);
//! a missing one fails the test (it never skips). The Node script lives in
//! `tests/browser/relay-test.mjs`; `npm ci` runs there when `node_modules` is missing.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use turnstone::config::Config;
use turnstone::core::{Transport, UsageRecord};
use turnstone::io::{RunningServer, UsageSink, clock};

const STATIC_USER: &str = "browser";
const STATIC_PASSWORD: &str = "browser-password";
const REST_SECRET: &str = "browser-e2e-secret";
const REST_USER: &str = "rest-browser";
const NPM_TIMEOUT: Duration = Duration::from_secs(180);
/// The script gives up after 60 s on its own; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(75);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser")
}

fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "turnstone-browser-e2e-{}-{}",
            std::process::id(),
            clock::now().unix_secs
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` up to `timeout`, killing it (by its own pid) when it overruns.
// Polling a child process in real time (no worker involved): sleep is fine here.
#[allow(clippy::disallowed_methods)]
fn wait_with_timeout(mut child: Child, timeout: Duration, what: &str) -> Output {
    let start = clock::now().mono;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned();
            panic!("{what} did not finish within {timeout:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    }
}

fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {what}: {e} (the browser test needs Node.js 20+ and npm on PATH)")
    })
}

/// Fails (never skips) when Node.js or Chromium is missing; installs node_modules when absent.
fn check_prerequisites() {
    let node = wait_with_timeout(
        spawn(Command::new("node").arg("--version"), "node"),
        Duration::from_secs(20),
        "node",
    );
    assert!(
        node.status.success(),
        "`node --version` failed: {}",
        String::from_utf8_lossy(&node.stderr)
    );
    let chromium = chromium_path();
    assert!(
        chromium.is_file(),
        "Chromium not found at {} (install the Debian package `chromium`, or set CHROMIUM)",
        chromium.display()
    );
    let dir = browser_dir();
    if !dir
        .join("node_modules")
        .join("playwright-core")
        .join("package.json")
        .is_file()
    {
        eprintln!("installing {}/node_modules with npm ci", dir.display());
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        let out = wait_with_timeout(spawn(&mut cmd, "npm"), NPM_TIMEOUT, "npm ci");
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A self-signed certificate for "localhost" and 127.0.0.1, as PEM files in `dir`.
fn write_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

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

/// A JSON string literal (the values here are ASCII, but quote and escape properly anyway).
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
