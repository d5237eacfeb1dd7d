//! Shared fixtures: an in-process Turnstone on loopback, a UDP echo peer, a TLS client
//! configuration trusting the server's self-signed certificate, and time bounds.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use turnstone::config::Config;
use turnstone::core::{Transport, UsageRecord};
use turnstone::io::{RunningServer, UsageSink};

/// REALM of the test server.
pub const REALM: &str = "turnstone.test";
/// The static user.
pub const USER: &str = "test";
/// The static user's password.
pub const PASSWORD: &str = "test";
/// The TURN REST API shared secret.
pub const SECRET: &str = "it-rest-secret";
/// Default bound on one wait for a reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on a whole async test.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `fut` and fails the test if it takes longer than [`TEST_TIMEOUT`].
pub async fn bounded<F: Future>(fut: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("test did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Logs the server's tracing output when TURNSTONE_IT_LOG is set to a level (debugging aid).
fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(level) = std::env::var("TURNSTONE_IT_LOG") {
            let level = level.parse().unwrap_or(tracing::Level::DEBUG);
            let _ = tracing_subscriber::fmt()
                .with_max_level(level)
                .with_test_writer()
                .try_init();
        }
    });
}

/// A unique, self-deleting temporary directory.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/turnstone-it-<pid>-<n>`.
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("turnstone-it-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Variations of the test server's configuration (see [`TestServer::start_with`]).
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads.
    pub workers: usize,
    /// Extra lines of the `[server]` table.
    pub server: String,
    /// The lines of the `[limits]` table.
    pub limits: String,
    /// The TURN REST API secrets.
    pub secrets: Vec<String>,
    /// Extra lines of the `[peers]` table (after `allow = ["127.0.0.0/8"]`).
    pub peers: String,
    /// The relay port range.
    pub relay_ports: String,
    /// Extra lines of the `[relay]` table (e.g. `tcp = true`).
    pub relay: String,
    /// The relay address (`[relay] address`).
    pub relay_address: String,
    /// Turn the self-test page's credentials on (`[selftest]`, signed with [`SELFTEST_KEY`]);
    /// only the TURN side: the page's listener is not started here.
    pub selftest: bool,
}

/// The self-test key of a server started with [`Options::selftest`].
pub const SELFTEST_KEY: [u8; 32] = [0x51; 32];

/// A self-test credential of [`SELFTEST_KEY`] for report ID number `n`, valid for 5 minutes.
pub fn selftest_credentials(n: u8) -> (String, String) {
    let id = turnstone::auth::ReportId::from_random([n, 0, 0, 0, n]);
    let expiry = turnstone::io::clock::now().unix_secs + 300;
    turnstone::auth::SelftestKey::new(SELFTEST_KEY).mint(&id, expiry)
}

impl Default for Options {
    fn default() -> Options {
        Options {
            workers: 2,
            server: String::new(),
            limits: "tcp_handshake_timeout = \"5s\"".to_string(),
            secrets: vec![SECRET.to_string()],
            peers: String::new(),
            relay_ports: "40000-49999".to_string(),
            relay: String::new(),
            relay_address: "127.0.0.1".to_string(),
            selftest: false,
        }
    }
}

/// The alternate IP of [`Options::nat_discovery`]: 127.0.0.0/8 is all loopback on Linux.
pub const ALTERNATE_IP: &str = "127.0.0.2";

impl Options {
    /// The defaults with RFC 5780 discovery: [`ALTERNATE_IP`] beside the UDP listener on
    /// 127.0.0.1 (its port and the alternate port both picked at start).
    pub fn nat_discovery() -> Options {
        Options {
            server: format!("alternate_address = \"{ALTERNATE_IP}\""),
            ..Options::default()
        }
    }

    /// The defaults with these `[limits]` lines instead.
    pub fn limits(limits: &str) -> Options {
        Options {
            limits: limits.to_string(),
            ..Options::default()
        }
    }

    /// The configuration file's text.
    fn toml(&self) -> String {
        let Options {
            workers,
            server,
            limits,
            secrets,
            peers,
            relay_ports,
            relay,
            relay_address,
            selftest,
        } = self;
        let selftest = if *selftest {
            "[selftest]\naddress = \"127.0.0.1:0\"\n"
        } else {
            ""
        };
        let secrets: Vec<String> = secrets.iter().map(|s| format!("{s:?}")).collect();
        let secrets = secrets.join(", ");
        format!(
            r#"
[server]
realm = "{REALM}"
workers = {workers}
{server}

[[listen]]
protocol = "udp"
address = "127.0.0.1:0"

[[listen]]
protocol = "udp"
address = "[::1]:0"

[[listen]]
protocol = "tcp"
address = "127.0.0.1:0"

[[listen]]
protocol = "tls"
address = "127.0.0.1:0"
certificate = "cert.pem"
private_key = "key.pem"

[admin]
enabled = false

[relay]
address = "{relay_address}"
ports = "{relay_ports}"
{relay}

[auth]
secrets = [{secrets}]

[[auth.users]]
name = "{USER}"
password = "{PASSWORD}"

[peers]
allow = ["127.0.0.0/8"]
{peers}

[limits]
{limits}

{selftest}
"#
        )
    }
}

/// The credential store of `config`, with [`SELFTEST_KEY`] when `[selftest]` is on.
fn store_of(config: &Config) -> turnstone::auth::CredentialStore {
    let store = config.credential_store();
    match config.selftest {
        Some(_) => store.with_selftest(turnstone::auth::SelftestKey::new(SELFTEST_KEY)),
        None => store,
    }
}

/// An in-process Turnstone listening on UDP (v4 and v6), TCP and TLS on loopback port 0.
pub struct TestServer {
    running: Option<RunningServer>,
    usage: Arc<Mutex<Vec<UsageRecord>>>,
    cert: CertificateDer<'static>,
    // Dropped last: holds the certificate and key files.
    dir: TempDir,
}

impl TestServer {
    /// Starts a server with two workers, a static user and a REST secret.
    pub fn start() -> TestServer {
        TestServer::start_with(&Options::default())
    }

    /// Starts a server configured by `options` (the defaults give [`TestServer::start`]).
    pub fn start_with(options: &Options) -> TestServer {
        init_logging();
        let dir = TempDir::new();
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        std::fs::write(dir.0.join("cert.pem"), certified.cert.pem()).unwrap();
        std::fs::write(dir.0.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
        let text = options.toml();
        let config = Config::from_toml(&text, &dir.0)
            .unwrap_or_else(|e| panic!("test config refused:\n{e}"));
        let usage = Arc::new(Mutex::new(Vec::new()));
        let sink_records = Arc::clone(&usage);
        let sink: UsageSink = Arc::new(move |record| sink_records.lock().unwrap().push(record));
        let spec = config
            .server_spec(Arc::new(store_of(&config)), sink)
            .unwrap();
        let running = turnstone::io::start(spec).unwrap();
        TestServer {
            running: Some(running),
            usage,
            cert: certified.cert.der().clone(),
            dir,
        }
    }

    /// Applies `options` to the running server, as SIGHUP does (listeners stay as they are).
    pub fn reload(&self, options: &Options) {
        let config = Config::from_toml(&options.toml(), &self.dir.0)
            .unwrap_or_else(|e| panic!("reloaded test config refused:\n{e}"));
        let noop: UsageSink = Arc::new(|_| {});
        let spec = config
            .server_spec(Arc::new(store_of(&config)), noop)
            .unwrap();
        self.running().reload(spec);
    }

    /// Starts draining, as SIGTERM does.
    pub fn drain(&self) {
        self.running().drain();
    }

    /// Stops the server now, ending every allocation; usage records stay readable.
    pub fn shutdown(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }

    fn running(&self) -> &RunningServer {
        self.running.as_ref().unwrap()
    }

    /// The IPv4 UDP listener.
    pub fn udp(&self) -> SocketAddr {
        self.find(Transport::Udp, false)
    }

    /// The IPv6 UDP listener ([::1]).
    pub fn udp6(&self) -> SocketAddr {
        self.find(Transport::Udp, true)
    }

    /// RFC 5780 discovery's four UDP addresses (with [`Options::nat_discovery`]).
    pub fn nat_discovery(&self) -> turnstone::core::NatDiscovery {
        self.running()
            .nat_discovery()
            .expect("started with an alternate address")
    }

    /// The TCP listener.
    pub fn tcp(&self) -> SocketAddr {
        self.running().address(Transport::Tcp).unwrap()
    }

    /// The TLS listener.
    pub fn tls(&self) -> SocketAddr {
        self.running().address(Transport::Tls).unwrap()
    }

    /// Allocations alive.
    pub fn allocations(&self) -> u32 {
        self.running().allocations()
    }

    /// Waits up to `within` for exactly `count` allocations; whether that happened.
    pub async fn wait_allocations(&self, count: u32, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while self.allocations() != count {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// The listener for `transport` (IPv4).
    pub fn address(&self, transport: Transport) -> SocketAddr {
        self.find(transport, false)
    }

    fn find(&self, transport: Transport, v6: bool) -> SocketAddr {
        self.running()
            .bound()
            .iter()
            .find(|(t, a)| *t == transport && a.is_ipv6() == v6)
            .map(|(_, a)| *a)
            .unwrap()
    }

    /// A TLS connector that trusts only this server's certificate.
    pub fn tls_connector(&self) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// The name the certificate was issued for.
    pub fn tls_name() -> ServerName<'static> {
        ServerName::try_from("localhost").unwrap()
    }

    /// Every usage record written so far.
    pub fn usage_records(&self) -> Vec<UsageRecord> {
        self.usage.lock().unwrap().clone()
    }

    /// Waits (polling) for a usage record matching `pred`.
    pub async fn wait_usage(&self, pred: impl Fn(&UsageRecord) -> bool) -> UsageRecord {
        let poll = async {
            loop {
                if let Some(r) = self.usage.lock().unwrap().iter().find(|r| pred(r)) {
                    return r.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(REPLY_TIMEOUT, poll).await {
            Ok(record) => record,
            Err(_) => panic!(
                "no matching usage record; have {:?}",
                self.usage.lock().unwrap()
            ),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }
}

/// A REST username valid for an hour and its password.
pub fn rest_credentials(user: &str) -> (String, String) {
    rest_credentials_signed(SECRET, user)
}

/// A REST username valid for an hour and its password signed with `secret`.
pub fn rest_credentials_signed(secret: &str, user: &str) -> (String, String) {
    let now = turnstone::io::clock::now().unix_secs;
    let username = turnstone::auth::rest_username(now + 3600, Some(user));
    let password = turnstone::auth::rest_password(secret.as_bytes(), &username);
    (username, password)
}

/// A UDP peer on 127.0.0.1 that echoes every datagram back to its sender, on its own thread.
pub struct EchoPeer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every (source, length) it received.
    pub seen: Arc<Mutex<Vec<(SocketAddr, usize)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoPeer {
    /// Binds 127.0.0.1:0 and starts echoing.
    pub fn start() -> EchoPeer {
        let sock = StdUdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (Arc::clone(&seen), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    seen2.lock().unwrap().push((from, n));
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        EchoPeer {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A fresh random transaction id.
pub fn random_tid() -> turnstone::proto::TransactionId {
    let mut tid = [0u8; 12];
    getrandom::fill(&mut tid).unwrap();
    turnstone::proto::TransactionId(tid)
}
