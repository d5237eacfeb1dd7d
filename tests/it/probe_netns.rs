//! `turnstone probe` proven on broken networks (issue 16, item 3): each failure is built inside
//! network namespaces the test creates (veth pairs, nft rules, a router namespace that NATs)
//! and the probe's report is checked: which step fails, and that its words name the cause.
//! A healthy network gets no false alarm.
//!
//! Three layouts ([`Net`]), every address existing only inside the test's namespaces:
//! - direct: client 10.88.0.2 and server 10.88.0.1 on one link;
//! - client NAT: client 10.88.1.2 behind a router (10.88.1.1 | 10.88.2.1) that NATs it, server
//!   10.88.2.2 with 10.88.2.3 for RFC 5780 ([`nat`]);
//! - server NAT: a simulated Internet (203.0.113.0/24, RFC 5737 documentation space) with the
//!   client at 203.0.113.2 and the server's public address 203.0.113.10 held by a router that
//!   maps it 1:1 to the server's private 10.88.2.2, as on a cloud VM.
//!
//! The server runs in-process on a thread inside the server namespace (its worker threads
//! inherit it); the probe runs in-process on a thread inside the client namespace, or as the
//! binary under `ip netns exec`. Debian coturn's `turnserver` and `turnutils_natdiscovery` run
//! under `ip netns exec` too ([`coturn`]). Needs root, `ip`, `nft` and `sysctl`; a missing tool
//! fails the test, it never skips.
#![allow(
    clippy::disallowed_methods,
    reason = "child processes run in real time: their deadlines and polling use the real clock"
)]

mod coturn;
mod nat;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turnstone::config::Config;
use turnstone::diag::{self, Credentials, ProbeConfig, Report, Status, Step};
use turnstone::io::{RunningServer, UsageSink};

use crate::common::{PASSWORD, REALM, SECRET, TempDir, USER, bounded};
use crate::netns::{Netns, enter};

/// The server's address on the direct link.
pub(crate) const SERVER: &str = "10.88.0.1";
/// The client's address on the direct link.
pub(crate) const CLIENT: &str = "10.88.0.2";
/// An address on the direct link that nobody holds.
const NOBODY: &str = "10.88.0.9";
/// Relay ports: below Linux's ephemeral range, so nft rules can name them apart.
pub(crate) const RELAY_PORTS: &str = "20000-20099";
/// Where silence is the verdict, the probe waits this long per step.
pub(crate) const SHORT: Duration = Duration::from_secs(1);
/// Healthy runs get longer, so a loaded machine raises no false alarm.
pub(crate) const LONG: Duration = Duration::from_secs(3);

/// The test network: client, optional router, server; removed on drop.
pub(crate) struct Net {
    /// Where the probe (and coturn's client tools) run.
    pub client: Netns,
    /// Between them, when routed: forwarding, NAT.
    pub router: Option<Netns>,
    /// Where the server runs.
    pub server: Netns,
}

/// Creates a veth pair from `a` (named `a_dev`) to `b` (named `b_dev`), inside the
/// namespaces only.
fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) {
    a.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name,
    ]);
}

/// Adds `cidrs` to `dev` in `ns` and brings it up.
fn addresses(ns: &Netns, dev: &str, cidrs: &[&str]) {
    for cidr in cidrs {
        ns.ip(&["addr", "add", cidr, "dev", dev]);
    }
    ns.ip(&["link", "set", dev, "up"]);
}

/// Waits until `dev` in `ns` carries packets. A link set up is not ready at once: the kernel
/// attaches its queue later (linkwatch, up to a second on a busy machine), and until then
/// drops what is sent through it, so a probe started at once could see silence.
fn wait_up(ns: &Netns, dev: &str) {
    // Bounded: 250 polls 20 ms apart (5 s).
    for _ in 0..250 {
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-o", "link", "show", "dev", dev])
            .output()
            .expect("cannot run ip");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("state UP") && !text.contains("qdisc noop") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{dev} in {} did not come up", ns.name);
}

impl Net {
    /// Client 10.88.0.2 and server 10.88.0.1 on one link.
    pub fn direct() -> Net {
        let client = Netns::new("pbc");
        let server = Netns::new("pbs");
        veth(&server, "s0", &client, "c0");
        addresses(&server, "s0", &[&format!("{SERVER}/24")]);
        addresses(&client, "c0", &[&format!("{CLIENT}/24")]);
        wait_up(&server, "s0");
        wait_up(&client, "c0");
        Net {
            client,
            router: None,
            server,
        }
    }

    /// Client, router with forwarding, server: `client_side` is (client CIDR, router CIDR),
    /// `server_side` (router CIDRs, server CIDRs); both ends route through the router.
    pub(crate) fn routed(client_side: (&str, &[&str]), server_side: (&[&str], &[&str])) -> Net {
        let client = Netns::new("pbc");
        let router = Netns::new("pbr");
        let server = Netns::new("pbs");
        veth(&router, "r0", &client, "c0");
        veth(&router, "r1", &server, "s0");
        addresses(&client, "c0", &[client_side.0]);
        addresses(&router, "r0", client_side.1);
        addresses(&router, "r1", server_side.0);
        addresses(&server, "s0", server_side.1);
        let via = |cidr: &str| cidr.split('/').next().unwrap().to_owned();
        client.ip(&["route", "add", "default", "via", &via(client_side.1[0])]);
        server.ip(&["route", "add", "default", "via", &via(server_side.0[0])]);
        router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        for (ns, dev) in [
            (&client, "c0"),
            (&router, "r0"),
            (&router, "r1"),
            (&server, "s0"),
        ] {
            wait_up(ns, dev);
        }
        Net {
            client,
            router: Some(router),
            server,
        }
    }

    /// The router, for its nft rules.
    pub fn router(&self) -> &Netns {
        self.router.as_ref().expect("a routed network")
    }
}

/// Loads an nft script (`;`-separated commands) into `ns`.
pub(crate) fn nft(ns: &Netns, script: &str) {
    ns.exec("nft", &[script]);
}

/// A firewall in `ns` with one input rule, e.g. `udp dport 3478 drop`; replaces any earlier.
fn firewall(ns: &Netns, rule: &str) {
    nft(
        ns,
        &format!(
            "add table inet fw; flush table inet fw; \
             add chain inet fw input {{ type filter hook input priority 0; }}; \
             add rule inet fw input {rule}"
        ),
    );
}

/// Runs `body` on a new thread inside `ns` and returns its result (a panic is re-raised).
pub(crate) fn within<T, F>(ns: &Netns, body: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = ns.path();
    let thread = std::thread::spawn(move || {
        enter(&path).expect("setns into the test namespace");
        body()
    });
    thread
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Runs the probe in-process on a thread inside the client namespace.
pub(crate) fn probe(net: &Net, config: ProbeConfig) -> Report {
    within(&net.client, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = runtime.block_on(bounded(diag::probe(&config)));
        // Every report of a failed test is shown (the harness prints captured output).
        eprintln!("{}", report.to_text());
        report
    })
}

/// A probe of `uri` with `credentials`, waiting `timeout` per step, certificates verified.
pub(crate) fn config(uri: &str, credentials: Credentials, timeout: Duration) -> ProbeConfig {
    let mut config = ProbeConfig::new(uri.parse().unwrap(), turnstone::io::clock::now().unix_secs);
    config.credentials = credentials;
    config.timeout = timeout;
    config
}

/// The static user.
pub(crate) fn user(password: &str) -> Credentials {
    Credentials::Static {
        username: USER.into(),
        password: password.into(),
    }
}

/// `turn:IP:PORT?transport=udp` (or tcp).
pub(crate) fn turn(ip: &str, port: u16, transport: &str) -> String {
    format!("turn:{ip}:{port}?transport={transport}")
}

/// The steps a TURN probe passes when everything works.
const TURN_STEPS: [Step; 8] = [
    Step::Resolve,
    Step::Connect,
    Step::Binding,
    Step::Challenge,
    Step::Allocate,
    Step::Permission,
    Step::Relay,
    Step::Refresh,
];

/// Every TURN step passed, nothing failed, and the relay went straight to the probe's own
/// echo socket (no relay-to-relay fallback, nothing left untested).
pub(crate) fn assert_healthy(report: &Report) {
    let text = report.to_text();
    for step in TURN_STEPS {
        let s = report
            .step(step)
            .unwrap_or_else(|| panic!("{step:?}: {text}"));
        assert_eq!(s.status, Status::Pass, "{step:?}: {text}");
        assert_eq!(s.caveat, None, "{step:?}: {text}");
    }
    assert!(report.ok(), "{text}");
    let relay = &report.step(Step::Relay).unwrap().detail;
    assert!(
        relay.starts_with("3/3 ChannelData round trips via ") && relay.contains("echo socket"),
        "{text}"
    );
}

/// The first failed step is `step`, every step before it passed, and the report fails.
pub(crate) fn failed_at(report: &Report, step: Step) -> &diag::StepReport {
    let text = report.to_text();
    let failed = report
        .first_failure()
        .unwrap_or_else(|| panic!("no step failed: {text}"));
    assert_eq!(failed.step, step, "{text}");
    for s in report.steps.iter().take_while(|s| s.step != step) {
        assert_eq!(
            s.status,
            Status::Pass,
            "{:?} before the failure: {text}",
            s.step
        );
    }
    assert!(!report.ok());
    failed
}

/// The advice of a failed step.
pub(crate) fn advice(step: &diag::StepReport) -> &str {
    step.advice.as_deref().unwrap_or("")
}

/// Asserts `text` contains each of `words` (with the whole report on failure).
#[track_caller]
pub(crate) fn says(text: &str, words: &[&str], report: &Report) {
    for w in words {
        assert!(
            text.contains(w),
            "{w:?} missing from {text:?}\n{}",
            report.to_text()
        );
    }
}

/// A Turnstone configuration for a server namespace.
#[derive(Clone, Debug)]
pub(crate) struct ServerCfg {
    /// Listeners' (UDP and TCP 3478, TLS 5349) and relay IP.
    pub ip: &'static str,
    /// `[server] alternate_address` (RFC 5780).
    pub alternate: Option<&'static str>,
    /// `[relay] external_address`.
    pub external: Option<&'static str>,
    /// `[peers] allow`.
    pub allow: &'static str,
    /// A TLS listener on 5349 with this certificate chain and key (PEM).
    pub tls: Option<(String, String)>,
}

impl ServerCfg {
    /// The server of [`Net::direct`], allowing the client's network as peers.
    pub fn direct() -> ServerCfg {
        ServerCfg {
            ip: SERVER,
            alternate: None,
            external: None,
            allow: "10.88.0.0/16",
            tls: None,
        }
    }

    fn toml(&self) -> String {
        let ip = self.ip;
        let alternate = self
            .alternate
            .map(|a| format!("alternate_address = \"{a}\""))
            .unwrap_or_default();
        let external = self
            .external
            .map(|a| format!("external_address = \"{a}\""))
            .unwrap_or_default();
        let tls = if self.tls.is_some() {
            format!(
                "[[listen]]\nprotocol = \"tls\"\naddress = \"{ip}:5349\"\n\
                 certificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n"
            )
        } else {
            String::new()
        };
        let allow = self.allow;
        // fast_path off: the nft rules in the server namespace must see every packet (the
        // kernel fast path runs at tc ingress, before them).
        format!(
            r#"
[server]
realm = "{REALM}"
workers = 1
{alternate}

[[listen]]
protocol = "udp"
address = "{ip}:3478"

[[listen]]
protocol = "tcp"
address = "{ip}:3478"

{tls}
[admin]
enabled = false

[relay]
address = "{ip}"
{external}
ports = "{RELAY_PORTS}"
fast_path = "off"

[auth]
secrets = ["{SECRET}"]

[[auth.users]]
name = "{USER}"
password = "{PASSWORD}"

[peers]
allow = ["{allow}"]
"#
        )
    }
}

/// An in-process Turnstone whose sockets and threads live in a server namespace.
pub(crate) struct Server {
    running: Option<RunningServer>,
    _dir: TempDir,
}

impl Server {
    /// Starts `cfg` on a thread inside `ns` (the worker threads it spawns stay there).
    pub fn start(ns: &Netns, cfg: &ServerCfg) -> Server {
        let dir = TempDir::new();
        if let Some((cert, key)) = &cfg.tls {
            std::fs::write(dir.0.join("cert.pem"), cert).unwrap();
            std::fs::write(dir.0.join("key.pem"), key).unwrap();
        }
        let config = Config::from_toml(&cfg.toml(), &dir.0)
            .unwrap_or_else(|e| panic!("test config refused:\n{e}"));
        let noop: UsageSink = Arc::new(|_| {});
        let spec = config
            .server_spec(Arc::new(config.credential_store()), noop)
            .unwrap();
        let running = within(ns, move || turnstone::io::start(spec).unwrap());
        Server {
            running: Some(running),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }
}

/// A child process, killed by PID when dropped.
pub(crate) struct Proc {
    pub child: Child,
    pub what: String,
    pub output: PathBuf,
}

impl Proc {
    /// Runs `program args…` under `ip netns exec` in `ns`, output (both streams) to a file
    /// in `dir`.
    pub fn spawn(ns: &Netns, dir: &TempDir, program: &str, args: &[&str]) -> Proc {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let output = dir.0.join(format!("proc-{n}.out"));
        let file = std::fs::File::create(&output).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, program])
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("TURNSTONE_SECRET")
            .env_remove("TURNSTONE_PASSWORD")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} under ip netns exec: {e}"));
        Proc {
            child,
            what: format!("{program} {}", args.join(" ")),
            output,
        }
    }

    /// What it printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits up to `within` for it to exit: its exit code and output; kills it and fails the
    /// test on overrun.
    pub fn wait(mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + within;
        // Bounded: polls 20 ms apart until the deadline.
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{} did not finish in {within:?}:\n{}",
            self.what,
            self.output()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Certificates for the TLS tests: a test CA the probe trusts (`--ca-file`), and server
/// certificates it signed.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    /// A server certificate for `names` signed by this CA, as (chain PEM, key PEM); `expired`
    /// makes it valid in 2020 only.
    fn leaf(&self, names: &[&str], expired: bool) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// The CA certificate in a file in `dir`, for `--ca-file`.
    fn ca_file(&self, dir: &TempDir) -> PathBuf {
        let path = dir.0.join("ca.pem");
        std::fs::write(&path, self.ca.pem()).unwrap();
        path
    }
}

impl Net {
    /// The server behind a 1:1 NAT, as on a cloud VM: the client at 203.0.113.2 on a
    /// simulated Internet, the router holding the server's public address 203.0.113.10 and
    /// mapping it to the server's private 10.88.2.2 both ways. The Internet side does not
    /// route private addresses: the router drops what arrives there for 10.88.0.0/16.
    pub fn server_nat() -> Net {
        let net = Net::routed(
            ("203.0.113.2/24", &["203.0.113.1/24", "203.0.113.10/32"]),
            (&["10.88.2.1/24"], &["10.88.2.2/24"]),
        );
        nft(
            net.router(),
            "add table ip nat; \
             add chain ip nat pre { type nat hook prerouting priority dstnat; }; \
             add chain ip nat post { type nat hook postrouting priority srcnat; }; \
             add rule ip nat pre iifname \"r0\" ip daddr 203.0.113.10 dnat to 10.88.2.2; \
             add rule ip nat post oifname \"r0\" ip saddr 10.88.2.2 snat to 203.0.113.10; \
             add table ip internet; \
             add chain ip internet pre { type filter hook prerouting priority raw; }; \
             add rule ip internet pre iifname \"r0\" ip daddr 10.88.0.0/16 drop",
        );
        net
    }
}

/// The server's public address in [`Net::server_nat`].
const PUBLIC: &str = "203.0.113.10";

/// The server of [`Net::server_nat`] with `external` as `[relay] external_address`; the
/// Internet (where the client is) allowed as peers, documentation space being refused by
/// default.
fn server_nat_cfg(external: Option<&'static str>) -> ServerCfg {
    ServerCfg {
        ip: "10.88.2.2",
        external,
        allow: "203.0.113.0/24",
        ..ServerCfg::direct()
    }
}

#[test]
fn a_healthy_network_passes_every_step_over_udp_tcp_and_tls_with_no_false_alarm() {
    let net = Net::direct();
    let pki = Pki::new("Turnstone probe test CA");
    let dir = TempDir::new();
    let ca = pki.ca_file(&dir);
    let cfg = ServerCfg {
        tls: Some(pki.leaf(&[SERVER], false)),
        ..ServerCfg::direct()
    };
    let _server = Server::start(&net.server, &cfg);
    for uri in [
        turn(SERVER, 3478, "udp"),
        turn(SERVER, 3478, "tcp"),
        format!("turns:{SERVER}:5349"),
    ] {
        let mut c = config(&uri, user(PASSWORD), LONG);
        c.ca_file = Some(ca.clone());
        let report = probe(&net, c);
        assert_healthy(&report);
        let text = report.to_text();
        assert!(text.ends_with("result: every step passed\n"), "{text}");
        says(
            &report.step(Step::Binding).unwrap().detail,
            &["no NAT between you and the server"],
            &report,
        );
        says(
            &report.step(Step::Relay).unwrap().detail,
            &[&format!("to the echo socket {CLIENT}:")],
            &report,
        );
        if uri.starts_with("turns:") {
            says(
                &report.step(Step::Tls).unwrap().detail,
                &[&format!("certificate valid for {SERVER}")],
                &report,
            );
        }
    }
    // The binary, as an operator runs it.
    let uri = turn(SERVER, 3478, "udp");
    let args = [
        "probe",
        &uri,
        "--user",
        USER,
        "--password",
        PASSWORD,
        "--timeout",
        "3s",
    ];
    let run = Proc::spawn(&net.client, &dir, env!("CARGO_BIN_EXE_turnstone"), &args);
    let (code, out) = run.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("\nresult: every step passed\n"), "{out}");
}

#[test]
fn udp_blocked_fails_the_binding_as_udp_blocked_and_tcp_still_passes() {
    let net = Net::direct();
    let _server = Server::start(&net.server, &ServerCfg::direct());
    let udp = config(&turn(SERVER, 3478, "udp"), user(PASSWORD), SHORT);

    // A firewall that drops: silence.
    firewall(&net.server, "udp dport 3478 drop");
    let started = Instant::now();
    let report = probe(&net, udp.clone());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let failed = failed_at(&report, Step::Binding);
    assert_eq!(
        failed.detail,
        "no answer within 1 s: UDP blocked or server down"
    );
    says(advice(failed), &["UDP port 3478", "transport=tcp"], &report);
    assert_eq!(report.step(Step::Allocate).unwrap().status, Status::Skipped);

    // A firewall that rejects: ICMP port unreachable, told apart from silence.
    firewall(&net.server, "udp dport 3478 reject");
    let report = probe(&net, udp);
    let failed = failed_at(&report, Step::Binding);
    says(
        &failed.detail,
        &[
            "the host 10.88.0.1 answered 'port unreachable' for UDP port 3478",
            "a firewall rejects",
        ],
        &report,
    );

    // TCP on the same port is not blocked: no false alarm.
    let tcp = config(&turn(SERVER, 3478, "tcp"), user(PASSWORD), LONG);
    assert_healthy(&probe(&net, tcp));
}

#[test]
fn tcp_blocked_fails_the_connection_as_blocked_and_udp_still_passes() {
    let net = Net::direct();
    let _server = Server::start(&net.server, &ServerCfg::direct());
    let tcp = config(&turn(SERVER, 3478, "tcp"), user(PASSWORD), SHORT);

    firewall(&net.server, "tcp dport 3478 drop");
    let report = probe(&net, tcp.clone());
    let failed = failed_at(&report, Step::Connect);
    assert_eq!(
        failed.detail,
        "no answer to the TCP connection within 1 s: a firewall drops the packets, or the host is down"
    );
    says(advice(failed), &["open TCP port 3478"], &report);
    assert_eq!(report.step(Step::Binding).unwrap().status, Status::Skipped);

    firewall(&net.server, "tcp dport 3478 reject with tcp reset");
    let report = probe(&net, tcp);
    let failed = failed_at(&report, Step::Connect);
    says(
        &failed.detail,
        &[
            "connection refused on TCP port 3478 at 10.88.0.1",
            "a firewall rejects",
        ],
        &report,
    );

    let udp = config(&turn(SERVER, 3478, "udp"), user(PASSWORD), LONG);
    assert_healthy(&probe(&net, udp));
}

#[test]
fn the_tls_port_blocked_fails_the_connection_and_plain_tcp_still_passes() {
    let net = Net::direct();
    let pki = Pki::new("Turnstone probe test CA");
    let dir = TempDir::new();
    let cfg = ServerCfg {
        tls: Some(pki.leaf(&[SERVER], false)),
        ..ServerCfg::direct()
    };
    let _server = Server::start(&net.server, &cfg);
    firewall(&net.server, "tcp dport 5349 drop");
    let mut tls = config(&format!("turns:{SERVER}:5349"), user(PASSWORD), SHORT);
    tls.ca_file = Some(pki.ca_file(&dir));
    let report = probe(&net, tls);
    let failed = failed_at(&report, Step::Connect);
    says(
        &failed.detail,
        &[
            "no answer to the TCP connection within 1 s",
            "a firewall drops",
        ],
        &report,
    );
    says(advice(failed), &["open TCP port 5349"], &report);
    assert_eq!(report.step(Step::Tls).unwrap().status, Status::Skipped);
    let tcp = config(&turn(SERVER, 3478, "tcp"), user(PASSWORD), LONG);
    assert_healthy(&probe(&net, tcp));
}

#[test]
fn a_server_down_is_told_apart_from_a_host_down() {
    // No server runs: the host answers, nothing listens.
    let net = Net::direct();
    let report = probe(
        &net,
        config(&turn(SERVER, 3478, "udp"), user(PASSWORD), SHORT),
    );
    let failed = failed_at(&report, Step::Binding);
    says(
        &failed.detail,
        &["answered 'port unreachable' for UDP port 3478: nothing listens there"],
        &report,
    );
    says(advice(failed), &["start the server"], &report);
    let report = probe(
        &net,
        config(&turn(SERVER, 3478, "tcp"), user(PASSWORD), SHORT),
    );
    let failed = failed_at(&report, Step::Connect);
    says(
        &failed.detail,
        &["connection refused on TCP port 3478 at 10.88.0.1: nothing listens there"],
        &report,
    );
    says(advice(failed), &["start the server"], &report);

    // Nobody holds the address: silence.
    let report = probe(
        &net,
        config(&turn(NOBODY, 3478, "udp"), user(PASSWORD), SHORT),
    );
    let failed = failed_at(&report, Step::Binding);
    assert_eq!(
        failed.detail,
        "no answer within 1 s: UDP blocked or server down"
    );
    let report = probe(
        &net,
        config(&turn(NOBODY, 3478, "tcp"), user(PASSWORD), SHORT),
    );
    let failed = failed_at(&report, Step::Connect);
    says(&failed.detail, &["or the host is down"], &report);
}

#[test]
fn a_wrong_password_and_a_wrong_secret_fail_the_allocation_in_plain_words() {
    let net = Net::direct();
    let _server = Server::start(&net.server, &ServerCfg::direct());
    let uri = turn(SERVER, 3478, "udp");

    let report = probe(&net, config(&uri, user("not-the-password"), SHORT));
    let failed = failed_at(&report, Step::Allocate);
    says(
        &failed.detail,
        &["refused the credentials (401)", "wrong password"],
        &report,
    );
    says(advice(failed), &["--password"], &report);
    assert_eq!(report.step(Step::Relay).unwrap().status, Status::Skipped);

    let wrong = Credentials::Rest {
        secret: "not-the-secret".into(),
        user: "alice".into(),
    };
    let report = probe(&net, config(&uri, wrong, SHORT));
    let failed = failed_at(&report, Step::Allocate);
    says(
        &failed.detail,
        &[
            "wrong password, from a wrong shared secret",
            "a credential valid for 7 days was refused too, so the clocks are not the cause",
        ],
        &report,
    );
    says(advice(failed), &["the shared secret differs"], &report);
}

/// A REST credential (username "<expiry>:alice") signed with the server's secret.
fn rest_credential(expiry: u64) -> Credentials {
    let username = turnstone::auth::rest_username(expiry, Some("alice"));
    let password = turnstone::auth::rest_password(SECRET.as_bytes(), &username);
    Credentials::Static { username, password }
}

#[test]
fn an_expired_rest_credential_is_named_expired() {
    let net = Net::direct();
    let _server = Server::start(&net.server, &ServerCfg::direct());
    let now = turnstone::io::clock::now().unix_secs;
    let uri = turn(SERVER, 3478, "udp");
    let report = probe(&net, config(&uri, rest_credential(now - 300), SHORT));
    let failed = failed_at(&report, Step::Allocate);
    says(
        &failed.detail,
        &[
            "the credential has expired (401)",
            "expired 5 min ago by this machine's clock",
        ],
        &report,
    );
    says(advice(failed), &["fetch a fresh credential"], &report);
    // The same credential before its expiry works: no false alarm.
    assert_healthy(&probe(&net, config(&uri, rest_credential(now + 300), LONG)));
}

#[test]
fn a_client_clock_behind_the_server_is_named_as_clock_skew() {
    let net = Net::direct();
    let _server = Server::start(&net.server, &ServerCfg::direct());
    let uri = turn(SERVER, 3478, "udp");
    let now = turnstone::io::clock::now().unix_secs;
    let mint = Credentials::Rest {
        secret: SECRET.into(),
        user: "alice".into(),
    };
    // This machine's clock 3 hours behind: the credential it mints (valid for an hour by its
    // clock) expired two hours ago by the server's.
    let mut behind = config(&uri, mint.clone(), SHORT);
    behind.unix_now = now - 3 * 3600;
    let report = probe(&net, behind);
    let failed = failed_at(&report, Step::Allocate);
    assert!(
        failed.detail.starts_with("clock skew: "),
        "{}",
        report.to_text()
    );
    says(
        &failed.detail,
        &[
            "accepted one of the same secret valid for 7 days",
            "the server's clock is ahead of this machine's by more than 60 min",
        ],
        &report,
    );
    says(advice(failed), &["NTP"], &report);
    // The secret is right: the later steps ran on the allocation the long-lived credential got.
    for step in [Step::Permission, Step::Relay, Step::Refresh] {
        assert_eq!(
            report.step(step).unwrap().status,
            Status::Pass,
            "{}",
            report.to_text()
        );
    }
    // Ahead, the minted credential lives longer, which the server accepts: nothing to report.
    let mut ahead = config(&uri, mint, LONG);
    ahead.unix_now = now + 3 * 3600;
    assert_healthy(&probe(&net, ahead));
}

/// Starts a server with `cert` on the TLS port, probes it trusting the test CA (or with
/// `--insecure`), and returns the report.
fn tls_probe(cert: (String, String), pki: &Pki, insecure: bool) -> Report {
    let net = Net::direct();
    let dir = TempDir::new();
    let cfg = ServerCfg {
        tls: Some(cert),
        ..ServerCfg::direct()
    };
    let _server = Server::start(&net.server, &cfg);
    let mut c = config(&format!("turns:{SERVER}:5349"), user(PASSWORD), LONG);
    c.ca_file = Some(pki.ca_file(&dir));
    c.insecure = insecure;
    probe(&net, c)
}

#[test]
fn an_expired_certificate_fails_tls_as_expired() {
    let pki = Pki::new("Turnstone probe test CA");
    let report = tls_probe(pki.leaf(&[SERVER], true), &pki, false);
    let failed = failed_at(&report, Step::Tls);
    assert!(
        failed
            .detail
            .starts_with("the server's certificate expired ")
            && failed.detail.ends_with(" days ago"),
        "{}",
        report.to_text()
    );
    says(advice(failed), &["renew the certificate"], &report);
    // --insecure goes on, and still names the problem.
    let report = tls_probe(pki.leaf(&[SERVER], true), &pki, true);
    assert_healthy(&report);
    says(
        &report.step(Step::Tls).unwrap().detail,
        &[
            "NOT verified (--insecure)",
            "the server's certificate expired",
        ],
        &report,
    );
}

#[test]
fn a_certificate_for_another_name_fails_tls_as_wrong_name() {
    let pki = Pki::new("Turnstone probe test CA");
    let report = tls_probe(pki.leaf(&["turn.other.test"], false), &pki, false);
    let failed = failed_at(&report, Step::Tls);
    says(
        &failed.detail,
        &[
            "wrong name: the certificate is not valid for \"10.88.0.1\"",
            "turn.other.test",
        ],
        &report,
    );
    says(
        advice(failed),
        &["a certificate that includes 10.88.0.1"],
        &report,
    );
}

#[test]
fn a_certificate_from_an_unknown_ca_fails_tls_as_unknown_issuer() {
    let trusted = Pki::new("Turnstone probe test CA");
    let unknown = Pki::new("Some other CA");
    let report = tls_probe(unknown.leaf(&[SERVER], false), &trusted, false);
    let failed = failed_at(&report, Step::Tls);
    assert!(
        failed.detail.starts_with("unknown issuer"),
        "{}",
        report.to_text()
    );
    says(advice(failed), &["--ca-file"], &report);
}

#[test]
fn relay_ports_blocked_pass_the_allocation_and_fail_the_round_trip() {
    let net = Net::direct();
    let _server = Server::start(&net.server, &ServerCfg::direct());
    // The relay ports are closed to the outside; the listener is open.
    firewall(
        &net.server,
        &format!("iifname \"s0\" udp dport {RELAY_PORTS} drop"),
    );
    let udp = config(&turn(SERVER, 3478, "udp"), user(PASSWORD), SHORT);
    let report = probe(&net, udp.clone());
    let failed = failed_at(&report, Step::Relay);
    for step in [Step::Allocate, Step::Permission, Step::Refresh] {
        assert_eq!(
            report.step(step).unwrap().status,
            Status::Pass,
            "{}",
            report.to_text()
        );
    }
    says(
        &failed.detail,
        &[
            "the relay did not pass on a datagram",
            "the relayed address is on the IP the server answered on, so a firewall (or a NAT's port forwarding) drops UDP to the relay ports",
        ],
        &report,
    );
    says(
        advice(failed),
        &["open the server's relay port range to UDP"],
        &report,
    );

    // A firewall that rejects: the echo socket hears 'port unreachable'.
    firewall(
        &net.server,
        &format!("iifname \"s0\" udp dport {RELAY_PORTS} reject"),
    );
    let report = probe(&net, udp);
    let failed = failed_at(&report, Step::Relay);
    says(
        &failed.detail,
        &[
            "answered 'port unreachable' for UDP port",
            "so a firewall rejects UDP to the relay ports",
        ],
        &report,
    );
}

#[test]
fn behind_one_to_one_nat_a_missing_external_address_fails_the_allocation() {
    let net = Net::server_nat();
    let _server = Server::start(&net.server, &server_nat_cfg(None));
    let report = probe(
        &net,
        config(&turn(PUBLIC, 3478, "udp"), user(PASSWORD), SHORT),
    );
    let failed = failed_at(&report, Step::Allocate);
    says(
        &failed.detail,
        &[
            "relayed address 10.88.2.2:",
            "private while the server is public",
        ],
        &report,
    );
    says(advice(failed), &["external_address"], &report);
    // And indeed nothing gets through it.
    let relay = report.step(Step::Relay).unwrap();
    assert_eq!(relay.status, Status::Fail, "{}", report.to_text());
    says(
        &relay.detail,
        &["10.88.2.2 is not the IP the server answered on"],
        &report,
    );
}

#[test]
fn behind_one_to_one_nat_a_wrong_external_address_fails_the_round_trip() {
    let net = Net::server_nat();
    // A typo: nobody holds 203.0.113.99.
    let _server = Server::start(&net.server, &server_nat_cfg(Some("203.0.113.99")));
    let report = probe(
        &net,
        config(&turn(PUBLIC, 3478, "udp"), user(PASSWORD), SHORT),
    );
    let failed = failed_at(&report, Step::Relay);
    says(
        &report.step(Step::Allocate).unwrap().detail,
        &["relayed address 203.0.113.99:"],
        &report,
    );
    says(
        &failed.detail,
        &[
            "the relay did not pass on a datagram",
            "the relayed address 203.0.113.99 is not the IP the server answered on (203.0.113.10)",
        ],
        &report,
    );
    says(
        advice(failed),
        &["advertise the public address", "external_address"],
        &report,
    );
}

#[test]
fn behind_one_to_one_nat_the_right_external_address_passes_every_step() {
    let net = Net::server_nat();
    let _server = Server::start(&net.server, &server_nat_cfg(Some(PUBLIC)));
    let report = probe(
        &net,
        config(&turn(PUBLIC, 3478, "udp"), user(PASSWORD), LONG),
    );
    assert_healthy(&report);
    says(
        &report.step(Step::Relay).unwrap().detail,
        &[&format!("via {PUBLIC}:")],
        &report,
    );
}
