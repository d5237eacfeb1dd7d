//! Interop with coturn's command-line tools (Debian package `coturn`): `turnutils_stunclient`,
//! `turnutils_peer` and `turnutils_uclient`. A missing tool fails the test; it is never skipped.
#![allow(
    clippy::disallowed_methods,
    reason = "external processes run in real time: deadlines and polling use the real clock"
)]

use std::fs::File;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use turnstone::core::Transport;

use crate::common::{Options, PASSWORD, SECRET, TempDir, TestServer, USER};

/// Bound on one coturn tool run (uclient takes about 5 s).
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(25);

/// A spawned tool with its combined output going to a file; killed by PID when dropped.
pub(crate) struct Tool {
    pub(crate) name: String,
    child: Child,
    output: PathBuf,
}

impl Tool {
    pub(crate) fn spawn(dir: &Path, label: &str, program: &str, args: &[String]) -> Tool {
        let output = dir.join(format!("{label}.out"));
        let file = File::create(&output).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program} ({e}): install coturn's tools (Debian package `coturn`)"
                )
            });
        Tool {
            name: format!("{label}: {program} {}", args.join(" ")),
            child,
            output,
        }
    }

    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits for exit until `deadline`; on timeout kills the process and fails the test.
    pub(crate) fn wait(mut self, deadline: Instant) -> (ExitStatus, String) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.output());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not finish in time; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tool {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Child::kill signals this child's PID only.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A UDP port that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `turnutils_peer` (a UDP echo server) and waits until it echoes.
fn start_peer(dir: &Path) -> (Tool, u16) {
    let port = free_udp_port();
    let args = [
        "-p".to_string(),
        port.to_string(),
        "-L".to_string(),
        "127.0.0.1".to_string(),
    ];
    let peer = Tool::spawn(dir, "peer", "turnutils_peer", &args);
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        probe.send_to(b"ready?", ("127.0.0.1", port)).unwrap();
        if probe.recv_from(&mut buf).is_ok() {
            return (peer, port);
        }
    }
    panic!(
        "turnutils_peer did not echo on port {port}; output:\n{}",
        peer.output()
    );
}

#[test]
fn coturn_stunclient_prints_its_address_as_the_reflexive_address() {
    let server = TestServer::start();
    let dir = TempDir::new();
    let args = [
        "-p".to_string(),
        server.udp().port().to_string(),
        "127.0.0.1".to_string(),
    ];
    let tool = Tool::spawn(&dir.0, "stunclient", "turnutils_stunclient", &args);
    let (status, out) = tool.wait(Instant::now() + TOOL_TIMEOUT);
    assert!(
        status.success(),
        "turnutils_stunclient failed ({status}):\n{out}"
    );
    // e.g. "0: : IPv4. UDP reflexive addr: 127.0.0.1:44466"
    let line = out
        .lines()
        .find(|l| l.contains("UDP reflexive addr:"))
        .unwrap_or_else(|| panic!("{out}"));
    let addr = line.rsplit("addr: ").next().unwrap().trim();
    let addr: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("{addr:?}: {e}\n{out}"));
    assert_eq!(addr.ip(), std::net::Ipv4Addr::LOCALHOST);
    assert_ne!(addr.port(), 0);
}

/// Runs uclient with channels and with Send indications (`-s`), each with the static user
/// and with REST credentials, all four at once against one server and one peer.
fn uclient_relays_without_loss(transport: Transport) {
    let server = TestServer::start();
    let dir = TempDir::new();
    let (mut peer, peer_port) = start_peer(&dir.0);
    let mut runs = Vec::new();
    for send_indications in [false, true] {
        for rest in [false, true] {
            let mut args: Vec<String> = Vec::new();
            match transport {
                Transport::Udp => {}
                Transport::Tcp => args.push("-t".into()),
                // `-S` alone would be DTLS over UDP.
                Transport::Tls => args.extend(["-t".into(), "-S".into()]),
            }
            if send_indications {
                args.push("-s".into());
            }
            if rest {
                args.extend(["-W".into(), SECRET.into(), "-u".into(), "someuser".into()]);
            } else {
                args.extend(["-u".into(), USER.into(), "-w".into(), PASSWORD.into()]);
            }
            let port = server.address(transport).port();
            let common =
                format!("-e 127.0.0.1 -r {peer_port} -n 30 -m 2 -l 120 -X -p {port} 127.0.0.1");
            args.extend(common.split_whitespace().map(String::from));
            let label = format!(
                "uclient-{}{}",
                if send_indications { "send" } else { "channel" },
                if rest { "-rest" } else { "-static" }
            );
            runs.push(Tool::spawn(&dir.0, &label, "turnutils_uclient", &args));
        }
    }
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let mut failures = Vec::new();
    for run in runs {
        let name = run.name.clone();
        let (status, out) = run.wait(deadline);
        let error_lines: Vec<&str> = out
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("error"))
            .filter(|l| !(transport == Transport::Tls && is_refused_legacy_tls_attempt(l)))
            .collect();
        let old_tls = out
            .lines()
            .filter(|l| l.contains("client session connected"))
            .any(|l| !(l.contains("method=TLSv1.2") || l.contains("method=TLSv1.3")));
        if !status.success()
            || !out.contains("Total lost packets 0")
            || !error_lines.is_empty()
            || old_tls
        {
            failures.push(format!("{name} exited with {status}:\n{out}"));
        }
    }
    let _ = peer.child.kill();
    let _ = peer.child.wait();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// uclient picks a random TLS context per connection, TLS 1.0 and 1.1 among them, and retries
/// with another when the handshake fails. Turnstone (rustls) refuses those versions with a
/// handshake_failure alert (40), which uclient logs as
/// `error:0A000410:SSL routines::sslv3 alert handshake failure`: expected, not a fault.
pub(crate) fn is_refused_legacy_tls_attempt(line: &str) -> bool {
    line.contains("SSL routines") && line.contains("alert handshake failure")
}

#[test]
fn coturn_uclient_relays_over_udp_with_channels_and_send_indications_without_loss() {
    uclient_relays_without_loss(Transport::Udp);
}

#[test]
fn coturn_uclient_relays_over_tcp_with_channels_and_send_indications_without_loss() {
    uclient_relays_without_loss(Transport::Tcp);
}

#[test]
fn coturn_uclient_relays_over_tls_with_channels_and_send_indications_without_loss() {
    uclient_relays_without_loss(Transport::Tls);
}

/// Runs `turnutils_natdiscovery` (RFC 5780 mapping and filtering tests, `-m -f`) against a
/// server with an alternate address, once plain and once with 1500 bytes of PADDING (`-P`).
/// On loopback there is no NAT: both behaviours are endpoint-independent.
#[test]
fn coturn_natdiscovery_finds_endpoint_independent_mapping_and_filtering() {
    let server = TestServer::start_with(&Options::nat_discovery());
    let nat = server.nat_discovery();
    let dir = TempDir::new();
    let runs: Vec<Tool> = [("natdiscovery", false), ("natdiscovery-padded", true)]
        .into_iter()
        .map(|(label, padded)| {
            // -L binds the client's socket to 127.0.0.1, so that the local and the reflexive
            // address can be compared, and every test reuses the same local port.
            let mut args = format!("-m -f -L 127.0.0.1 -p {}", nat.primary().port());
            if padded {
                args.push_str(" -P");
            }
            args.push_str(" 127.0.0.1");
            let args: Vec<String> = args.split_whitespace().map(String::from).collect();
            Tool::spawn(&dir.0, label, "turnutils_natdiscovery", &args)
        })
        .collect();
    let deadline = Instant::now() + TOOL_TIMEOUT;
    for run in runs {
        let name = run.name.clone();
        let (status, out) = run.wait(deadline);
        assert!(status.success(), "{name} exited with {status}:\n{out}");
        let troubles: Vec<&str> = out
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                // "Not received mapped address attribute." is the tool's ALG check, which
                // compares MAPPED-ADDRESS with XOR-MAPPED-ADDRESS: Turnstone sends only the
                // latter (MAPPED-ADDRESS is for RFC 3489 clients, RFC 8489 §14.1), so no
                // comparison is made; it is not a failure.
                ["error", "timeout", "cannot", "wrong", "not a"]
                    .iter()
                    .any(|bad| l.contains(bad))
            })
            .collect();
        assert!(troubles.is_empty(), "{name}: {troubles:?}\n{out}");
        // Two Bindings for mapping, two for filtering (the second with CHANGE-REQUEST), each
        // answered with OTHER-ADDRESS.
        let answers = out
            .lines()
            .filter(|l| l.contains("RFC 5780 response"))
            .count();
        assert_eq!(answers, 4, "{name}:\n{out}");
        assert!(
            out.contains("NAT with Endpoint Independent Mapping!"),
            "{name}:\n{out}"
        );
        assert!(
            out.contains("NAT with Endpoint Independent Filtering!"),
            "{name}:\n{out}"
        );
        assert!(!out.contains("Dependent"), "{name}:\n{out}");
        assert!(
            out.contains(&nat.alternate().to_string()),
            "{name}: OTHER-ADDRESS {} not shown:\n{out}",
            nat.alternate()
        );
    }
}
