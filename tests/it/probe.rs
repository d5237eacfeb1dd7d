//! `turnstone probe` (the `diag` module) against the in-process server: every step passes over
//! UDP, TCP and TLS with the right credentials; wrong credentials, untrusted certificates and
//! closed ports get their plain-language verdicts.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use turnstone::core::Transport;
use turnstone::diag::{self, Credentials, ProbeConfig, Report, Status, Step};

use crate::common::{Options, PASSWORD, SECRET, TempDir, TestServer, USER, bounded};

/// The URI of `addr` for `transport`.
fn uri(transport: Transport, addr: SocketAddr) -> String {
    match transport {
        Transport::Udp => format!("turn:{addr}?transport=udp"),
        Transport::Tcp => format!("turn:{addr}?transport=tcp"),
        Transport::Tls => format!("turns:{addr}"),
    }
}

fn config(uri: &str, credentials: Credentials) -> ProbeConfig {
    let mut config = ProbeConfig::new(uri.parse().unwrap(), turnstone::io::clock::now().unix_secs);
    config.credentials = credentials;
    config.timeout = Duration::from_secs(2);
    config.insecure = true;
    config
}

fn user(username: &str, password: &str) -> Credentials {
    Credentials::Static {
        username: username.into(),
        password: password.into(),
    }
}

fn assert_all_pass(report: &Report) {
    assert!(report.ok(), "{}", report.to_text());
    for step in [
        Step::Resolve,
        Step::Connect,
        Step::Binding,
        Step::Challenge,
        Step::Allocate,
        Step::Permission,
        Step::Relay,
        Step::Refresh,
    ] {
        let s = report
            .step(step)
            .unwrap_or_else(|| panic!("{step:?} missing"));
        assert_eq!(s.status, Status::Pass, "{}", report.to_text());
    }
}

async fn probe_passes(transport: Transport) -> Report {
    let server = TestServer::start();
    let report = diag::probe(&config(
        &uri(transport, server.address(transport)),
        user(USER, PASSWORD),
    ))
    .await;
    assert_all_pass(&report);
    let relay = &report.step(Step::Relay).unwrap().detail;
    assert!(relay.starts_with("3/3 ChannelData round trips"), "{relay}");
    assert_eq!(
        server.allocations(),
        0,
        "Refresh(0) released the allocation"
    );
    report
}

#[tokio::test]
async fn probe_over_udp_passes_every_step_with_the_right_credentials() {
    let report = bounded(probe_passes(Transport::Udp)).await;
    let binding = &report.step(Step::Binding).unwrap().detail;
    assert!(binding.contains("no NAT"), "{binding}");
}

#[tokio::test]
async fn probe_over_tcp_passes_every_step_with_the_right_credentials() {
    bounded(probe_passes(Transport::Tcp)).await;
}

#[tokio::test]
async fn probe_over_tls_with_insecure_passes_and_names_the_certificate_problem() {
    let report = bounded(probe_passes(Transport::Tls)).await;
    let tls = report.step(Step::Tls).unwrap();
    assert_eq!(tls.status, Status::Pass);
    assert!(
        tls.detail.contains("NOT verified (--insecure)"),
        "{}",
        tls.detail
    );
    assert!(tls.detail.contains("unknown issuer"), "{}", tls.detail);
}

#[tokio::test]
async fn probe_with_rest_credentials_minted_from_the_secret_passes() {
    bounded(async {
        let server = TestServer::start();
        let rest = Credentials::Rest {
            secret: SECRET.into(),
            user: "probe".into(),
        };
        let report = diag::probe(&config(&uri(Transport::Udp, server.udp()), rest)).await;
        assert_all_pass(&report);
    })
    .await;
}

#[tokio::test]
async fn a_wrong_password_gets_the_wrong_password_verdict_and_fails() {
    bounded(async {
        let server = TestServer::start();
        for transport in [Transport::Udp, Transport::Tcp] {
            let c = config(
                &uri(transport, server.address(transport)),
                user(USER, "not-the-password"),
            );
            let report = diag::probe(&c).await;
            assert!(!report.ok());
            let failed = report.first_failure().unwrap();
            assert_eq!(failed.step, Step::Allocate, "{}", report.to_text());
            assert!(
                failed.detail.contains("wrong password"),
                "{}",
                failed.detail
            );
            assert!(failed.advice.as_deref().unwrap().contains("--password"));
            assert_eq!(report.step(Step::Challenge).unwrap().status, Status::Pass);
            assert_eq!(report.step(Step::Relay).unwrap().status, Status::Skipped);
        }
    })
    .await;
}

#[tokio::test]
async fn a_wrong_rest_secret_gets_the_wrong_password_verdict() {
    bounded(async {
        let server = TestServer::start();
        let rest = Credentials::Rest {
            secret: "not-the-secret".into(),
            user: "probe".into(),
        };
        let report = diag::probe(&config(&uri(Transport::Udp, server.udp()), rest)).await;
        let failed = report.first_failure().unwrap();
        assert_eq!(failed.step, Step::Allocate);
        assert!(
            failed.detail.contains("wrong password"),
            "{}",
            failed.detail
        );
        assert!(
            failed.detail.contains("valid for 60 min more"),
            "{}",
            failed.detail
        );
        assert!(failed.advice.as_deref().unwrap().contains("shared secret"));
    })
    .await;
}

#[tokio::test]
async fn a_closed_udp_port_gets_the_no_answer_verdict_within_the_timeout() {
    bounded(async {
        // A port that was just free: nothing listens there.
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut c = config(&uri(Transport::Udp, closed), user(USER, PASSWORD));
        c.timeout = Duration::from_secs(1);
        let started = tokio::time::Instant::now();
        let report = diag::probe(&c).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
        let failed = report.first_failure().unwrap();
        assert_eq!(failed.step, Step::Binding, "{}", report.to_text());
        assert!(failed.detail.starts_with("no answer"), "{}", failed.detail);
        assert_eq!(report.step(Step::Allocate).unwrap().status, Status::Skipped);
    })
    .await;
}

#[tokio::test]
async fn a_closed_tcp_port_is_reported_as_connection_refused() {
    bounded(async {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = listener.local_addr().unwrap();
        drop(listener);
        let report = diag::probe(&config(&uri(Transport::Tcp, closed), user(USER, PASSWORD))).await;
        let failed = report.first_failure().unwrap();
        assert_eq!(failed.step, Step::Connect);
        assert!(
            failed.detail.starts_with("connection refused"),
            "{}",
            failed.detail
        );
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_certificate_fails_tls_with_unknown_issuer() {
    bounded(async {
        let server = TestServer::start();
        // Trust only an unrelated CA, so the verdict does not depend on the system bundle.
        let dir = TempDir::new();
        let mut params = rcgen::CertificateParams::new(vec!["ca.invalid".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Unrelated test CA");
        let other_ca = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let ca_file = dir.0.join("ca.pem");
        std::fs::write(&ca_file, other_ca.pem()).unwrap();
        let mut c = config(&uri(Transport::Tls, server.tls()), user(USER, PASSWORD));
        c.insecure = false;
        c.ca_file = Some(ca_file);
        let report = diag::probe(&c).await;
        let failed = report.first_failure().unwrap();
        assert_eq!(failed.step, Step::Tls, "{}", report.to_text());
        assert!(
            failed.detail.starts_with("unknown issuer"),
            "{}",
            failed.detail
        );
        assert!(failed.advice.as_deref().unwrap().contains("--insecure"));
    })
    .await;
}

#[tokio::test]
async fn a_stun_uri_stops_after_binding() {
    bounded(async {
        let server = TestServer::start();
        let mut c = config(&format!("stun:{}", server.udp()), Credentials::None);
        c.nat = true;
        let report = diag::probe(&c).await;
        assert!(report.ok(), "{}", report.to_text());
        let steps: Vec<Step> = report.steps.iter().map(|s| s.step).collect();
        assert_eq!(
            steps,
            [Step::Resolve, Step::Connect, Step::Binding, Step::Nat]
        );
        let nat = report.step(Step::Nat).unwrap();
        assert_eq!(nat.status, Status::Skipped);
        assert!(
            nat.detail.contains("does not offer RFC 5780"),
            "{}",
            nat.detail
        );
    })
    .await;
}

#[tokio::test]
async fn nat_discovery_against_a_server_with_an_alternate_address_finds_no_nat() {
    bounded(async {
        let server = TestServer::start_with(&Options::nat_discovery());
        for target in [
            format!("stun:{}", server.udp()),
            uri(Transport::Udp, server.udp()),
        ] {
            let mut c = config(&target, user(USER, PASSWORD));
            c.nat = true;
            let report = diag::probe(&c).await;
            assert!(report.ok(), "{}", report.to_text());
            let nat = report.step(Step::Nat).unwrap();
            assert_eq!(nat.status, Status::Pass, "{}", report.to_text());
            // Loopback: the reflexive address is the local one, and the answer from the other
            // IP and port (CHANGE-REQUEST) arrives.
            assert_eq!(
                nat.detail,
                "no NAT (the reflexive address is the local one); endpoint-independent \
                 filtering (anyone may send to the mapping): direct connections work when the \
                 firewall lets them in",
                "{target}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn the_probe_command_reports_the_nat_verdict() {
    let server = TestServer::start_with(&Options::nat_discovery());
    let target = format!("stun:{}", server.udp());
    let out = bounded(tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_turnstone"))
            .args(["probe", &target, "--nat", "--timeout", "2s"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    }))
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "✔ nat: no NAT (the reflexive address is the local one); endpoint-independent filtering"
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with("result: every step passed\n"), "{stdout}");
}

/// Runs the `turnstone probe` binary with static credentials.
fn run_binary(target: &str, password: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_turnstone"))
        .args([
            "probe",
            target,
            "--user",
            USER,
            "--password",
            password,
            "--timeout",
            "2s",
        ])
        .env("NO_COLOR", "1")
        .env_remove("TURNSTONE_SECRET")
        .env_remove("TURNSTONE_PASSWORD")
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_probe_command_exits_zero_on_success_and_one_on_failure() {
    let server = TestServer::start();
    let target = uri(Transport::Udp, server.udp());
    let t = target.clone();
    let ok = bounded(tokio::task::spawn_blocking(move || {
        run_binary(&t, PASSWORD)
    }))
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert_eq!(ok.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("✔ relay: 3/3 ChannelData round trips"),
        "{stdout}"
    );
    assert!(stdout.ends_with("result: every step passed\n"), "{stdout}");
    let bad = bounded(tokio::task::spawn_blocking(move || {
        run_binary(&target, "wrong")
    }))
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("✘ allocate: the server refused the credentials (401)"),
        "{stdout}"
    );
}

/// A server that refuses this machine (127.0.0.1) as a peer, as a safe server refuses private
/// addresses, with its relay on `relay_address`.
fn refusing_loopback_peers(relay_address: &str) -> TestServer {
    TestServer::start_with(&Options {
        peers: "deny = [\"127.0.0.1/32\"]".into(),
        relay_address: relay_address.into(),
        ..Options::default()
    })
}

#[tokio::test]
async fn refused_as_a_peer_the_probe_relays_between_two_allocations_and_says_what_it_did_not_test()
{
    // The relay on 127.0.0.2: the probe's own address (127.0.0.1) is refused, the server's
    // relay addresses are not.
    let server = refusing_loopback_peers("127.0.0.2");
    for transport in [Transport::Udp, Transport::Tcp] {
        let target = uri(transport, server.address(transport));
        let report = bounded(diag::probe(&config(&target, user(USER, PASSWORD)))).await;
        let relay = report.step(Step::Relay).unwrap();
        assert_eq!(relay.status, Status::Pass, "{}", report.to_text());
        assert!(
            relay
                .detail
                .contains("to a second allocation at 127.0.0.2:"),
            "{}",
            relay.detail
        );
        assert!(
            relay
                .caveat
                .as_deref()
                .is_some_and(|c| c.contains("peers outside the server")),
            "{}",
            report.to_text()
        );
        assert!(
            report
                .to_text()
                .ends_with("result: every step passed (with what was not tested above)\n")
        );
        assert!(
            server.wait_allocations(0, Duration::from_secs(2)).await,
            "both released"
        );
    }
}

#[tokio::test]
async fn the_probe_command_exits_two_when_the_relay_path_could_not_be_tested() {
    // The relay's own address refused too: no peer the probe can reach, not even relay to relay.
    let server = refusing_loopback_peers("127.0.0.1");
    let target = uri(Transport::Udp, server.udp());
    let out = bounded(tokio::task::spawn_blocking(move || {
        run_binary(&target, PASSWORD)
    }))
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("- relay: skipped"), "{stdout}");
    assert!(
        stdout.ends_with("result: no step failed, but the relay path was NOT tested (see above)\n"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the relay path was not tested"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
