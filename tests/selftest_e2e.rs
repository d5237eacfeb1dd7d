//! The self-test page end to end in headless Chromium: an in-process Turnstone with UDP, TCP
//! and TLS listeners and `[selftest]` on, the page opened by `tests/browser/selftest.mjs`,
//! its verdicts and report ID read back, and the server's log line and metric checked.
//!
//! Two networks: the host's loopback, where everything works; and a private network namespace
//! where an nft rule drops UDP to the listener port, where the page must say that UDP is
//! blocked and that TCP and TLS work. The first run's screenshot is written to
//! `target/selftest-e2e/selftest.png`, and to `docs/selftest.png` (the README's) when
//! `UPDATE_SCREENSHOT=1`.
//!
//! Needs Node.js, Chromium, and for the second test root, `ip` and `nft` (Debian `iproute2`,
//! `nftables`); a missing one fails the test (it never skips).

mod browser_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use browser_support::netns::Netns;
use browser_support::{
    TempDir, browser_dir, check_prerequisites, chromium_path, json_str, spawn, wait_with_timeout,
    write_certificate,
};
use turnstone::auth::{Nonces, SelftestKey};
use turnstone::config::Config;
use turnstone::core::Transport;
use turnstone::io::{RunningServer, UsageSink};
use turnstone::ops::selftest::{SelftestHandle, SelftestSite, spawn_selftest};

/// The page gives up on a transport after about 25 s; three transports, and some slack.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);

/// Everything the server logs in this process (both tests), for the report lines.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buf);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&writer)))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        std::io::stderr().write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The lines logged so far with target `turnstone::selftest` that mention `id`.
fn report_lines(id: &str) -> Vec<String> {
    let logs = logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|l| l.contains("turnstone::selftest") && l.contains(&format!("id={id}")))
        .map(str::to_owned)
        .collect()
}

/// A server with UDP, TCP and TLS listeners and the self-test page, both on loopback.
fn start(dir: &Path) -> (RunningServer, SelftestHandle) {
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
secrets = ["selftest-e2e-secret"]

# Ordinary users may reach loopback peers here; self-test credentials still may not.
[peers]
allow = ["127.0.0.0/8"]

[selftest]
address = "127.0.0.1:0"
test_duration = "2s"
test_bytes = "512KiB"
"#,
        cert = cert.display(),
        key = key.display(),
    );
    let config = Config::from_toml(&text, dir)
        .unwrap_or_else(|e| panic!("test configuration invalid:\n{e}"));
    let selftest_key = SelftestKey::new(Nonces::random_key().unwrap());
    let store = config
        .credential_store()
        .with_selftest(selftest_key.clone());
    let noop: UsageSink = Arc::new(|_| {});
    let spec = config.server_spec(Arc::new(store), noop).unwrap();
    let server = turnstone::io::start(spec).unwrap();
    let site = SelftestSite::from_config(&config, server.bound(), selftest_key)
        .unwrap()
        .expect("[selftest] is configured");
    let page = spawn_selftest(site).unwrap();
    (server, page)
}

/// What the script reports about the page once it finished.
struct PageResult {
    stdout: String,
}

impl PageResult {
    fn has(&self, fragment: &str) -> bool {
        self.stdout.contains(fragment)
    }

    /// The report ID the page shows, `ABCD-EFGH`.
    fn report_id(&self) -> String {
        let start = self
            .stdout
            .find("\"reportId\":\"")
            .map(|i| i + "\"reportId\":\"".len())
            .unwrap_or_else(|| panic!("no reportId in {}", self.stdout));
        self.stdout[start..].chars().take(9).collect()
    }
}

/// Opens `url` in headless Chromium (inside `ns` when given) until the page is done.
fn run_page(url: &str, screenshot: Option<&Path>, ns: Option<&Netns>) -> PageResult {
    let input = format!(
        r#""chromium":{}"#,
        json_str(&chromium_path().to_string_lossy())
    );
    run_script("selftest.mjs", url, &input, screenshot, ns)
}

/// Headless Firefox (Debian `firefox-esr`, or env `FIREFOX`).
fn firefox_path() -> PathBuf {
    std::env::var_os("FIREFOX").map_or_else(|| PathBuf::from("/usr/bin/firefox-esr"), PathBuf::from)
}

/// Runs one of the page scripts with `extra` input fields until the page is done.
fn run_script(
    script: &str,
    url: &str,
    extra: &str,
    screenshot: Option<&Path>,
    ns: Option<&Netns>,
) -> PageResult {
    let mut input = format!(r#"{{"url":{},"timeoutMs":120000,{extra}"#, json_str(url));
    if let Some(path) = screenshot {
        input.push_str(&format!(
            r#","screenshot":{}"#,
            json_str(&path.to_string_lossy())
        ));
    }
    input.push('}');
    let mut cmd = match ns {
        Some(ns) => ns.command("node"),
        None => Command::new("node"),
    };
    cmd.arg(script).arg(input).current_dir(browser_dir());
    let out = wait_with_timeout(spawn(&mut cmd, "node"), SCRIPT_TIMEOUT, script);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(
        out.status.success() && stdout.contains(r#""ok":true"#),
        "the page did not finish: exit {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    eprintln!("page result: {stdout}");
    PageResult { stdout }
}

fn is_report_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 9
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_digit() || c.is_ascii_uppercase())
}

fn screenshot_paths() -> (PathBuf, Option<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target").join("selftest-e2e");
    std::fs::create_dir_all(&target).unwrap();
    let docs = (std::env::var_os("UPDATE_SCREENSHOT").is_some_and(|v| v == "1"))
        .then(|| root.join("docs").join("selftest.png"));
    (target.join("selftest.png"), docs)
}

/// The metric line for `outcome`, as `/metrics` would render it.
fn reports_metric(outcome: &str) -> Option<String> {
    let handle = turnstone::ops::install_recorder()?;
    handle
        .render()
        .lines()
        .find(|l| {
            l.starts_with("turnstone_selftest_reports_total")
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .map(str::to_owned)
}

#[test]
fn chromium_runs_the_selftest_page_over_udp_tcp_and_tls_and_the_server_logs_its_report() {
    logs();
    let _ = turnstone::ops::install_recorder();
    check_prerequisites();
    let dir = TempDir::new();
    let (server, page) = start(&dir.0);
    let (shot, docs_shot) = screenshot_paths();

    let result = run_page(&page.url(), Some(&shot), None);
    assert!(
        result.has(
            "Everything works: calls through this server will connect from your network over UDP"
        ),
        "{}",
        result.stdout
    );
    let port = |t| server.address(t).unwrap().port();
    for (name, transport) in [
        ("UDP", Transport::Udp),
        ("TCP", Transport::Tcp),
        ("TLS", Transport::Tls),
    ] {
        let line = format!(
            r#""mark":"ok","what":"{name} to port {}: works""#,
            port(transport)
        );
        assert!(result.has(&line), "{name} must work: {}", result.stdout);
    }
    assert!(result.has(r#""posted":true"#), "{}", result.stdout);
    let id = result.report_id();
    assert!(is_report_id(&id), "report ID {id:?}");

    let lines = report_lines(&id);
    assert_eq!(lines.len(), 1, "one log line per report: {lines:?}");
    for fragment in [
        "outcome=\"ok\"",
        "udp=\"works",
        "tcp=\"works",
        "tls=\"works",
    ] {
        assert!(lines[0].contains(fragment), "{fragment} in {}", lines[0]);
    }
    let metric = reports_metric("ok").expect("turnstone_selftest_reports_total{outcome=\"ok\"}");
    assert!(!metric.ends_with(" 0"), "{metric}");
    if let Some(docs) = docs_shot {
        std::fs::copy(&shot, docs).unwrap();
    }
    drop(page);
    server.shutdown();
}

#[test]
fn chromium_is_told_that_udp_is_blocked_when_the_network_drops_it() {
    logs();
    let _ = turnstone::ops::install_recorder();
    check_prerequisites();
    let ns = Netns::new("selftest");
    let dir = TempDir::new();
    let path = dir.0.clone();
    let (server, page) = ns.inside(move || start(&path));
    let udp = server.address(Transport::Udp).unwrap().port();
    // The user's network: UDP to the server's port goes nowhere (TCP, TLS and the relay ports
    // are untouched).
    ns.nft(&format!(
        "table inet selftest_block {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    udp dport {udp} drop\n  }}\n}}\n"
    ));

    let result = run_page(&page.url(), None, Some(&ns));
    let headline = format!(
        "UDP to {udp} is blocked on your network; TCP and TLS work: calls will work but with more delay."
    );
    assert!(
        result.has(&headline),
        "expected {headline:?}: {}",
        result.stdout
    );
    assert!(
        result.has(&format!(
            r#""mark":"bad","what":"UDP to port {udp}: blocked on your network""#
        )),
        "{}",
        result.stdout
    );
    let id = result.report_id();
    assert!(is_report_id(&id), "report ID {id:?}");
    let lines = report_lines(&id);
    assert_eq!(lines.len(), 1, "one log line per report: {lines:?}");
    for fragment in [
        "outcome=\"partial\"",
        "udp=\"blocked",
        "tcp=\"works",
        "tls=\"works",
    ] {
        assert!(lines[0].contains(fragment), "{fragment} in {}", lines[0]);
    }
    assert!(reports_metric("partial").is_some());
    drop(page);
    server.shutdown();
}

/// Firefox over UDP and TCP. Not TLS: Firefox ignores `turns:` URLs with an IP address
/// (nICEr logs "No TURN servers specified"), which the page reports as not tested rather than
/// blocked; with a host name it checks the TURN server's certificate against its own trust
/// store, refusing the test's self-signed one (`BadCertificate` in the server's log) even
/// with `acceptInsecureCerts`.
#[test]
fn firefox_runs_the_selftest_page_over_udp_and_tcp() {
    logs();
    let _ = turnstone::ops::install_recorder();
    check_prerequisites();
    let firefox = firefox_path();
    assert!(
        firefox.is_file(),
        "Firefox not found at {} (install the Debian package `firefox-esr`, or set FIREFOX)",
        firefox.display()
    );
    let dir = TempDir::new();
    let (server, page) = start(&dir.0);
    let extra = format!(r#""firefox":{}"#, json_str(&firefox.to_string_lossy()));
    let result = run_script("selftest-firefox.mjs", &page.url(), &extra, None, None);
    let port = |t| server.address(t).unwrap().port();
    for (name, transport) in [("UDP", Transport::Udp), ("TCP", Transport::Tcp)] {
        let line = format!(
            r#""mark":"ok","what":"{name} to port {}: works""#,
            port(transport)
        );
        assert!(result.has(&line), "{name} must work: {}", result.stdout);
    }
    assert!(result.has(r#""posted":true"#), "{}", result.stdout);
    let id = result.report_id();
    let lines = report_lines(&id);
    assert_eq!(lines.len(), 1, "one log line per report: {lines:?}");
    let tls = port(Transport::Tls);
    assert!(
        result.has(&format!(
            r#""mark":"warn","what":"TLS to port {tls}: not tested in this browser""#
        )),
        "{}",
        result.stdout
    );
    for fragment in [
        "outcome=\"ok\"",
        "udp=\"works",
        "tcp=\"works",
        "tls=\"skipped",
        "browser=\"Firefox",
    ] {
        assert!(lines[0].contains(fragment), "{fragment} in {}", lines[0]);
    }
    drop(page);
    server.shutdown();
}
