//! `turnstone bench` beyond UDP: the load generator over TCP and TLS against the in-process
//! server (one connection per allocation, ChannelData padded on the stream, RFC 8656 §12.5),
//! and the `--raw` and `--churn` modes of the command line.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use clap::Parser as _;
use turnstone::cli::Cli;
use turnstone::loadgen::{
    self, Credentials, Hello, HelloKind, LoadConfig, LoadError, LoadReport, LoadTransport,
};

use crate::common::{Options, PASSWORD, SECRET, TempDir, TestServer, USER, bounded};

/// How long a spawned command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

fn static_user() -> Credentials {
    Credentials::Static {
        user: USER.to_owned(),
        password: PASSWORD.to_owned(),
    }
}

/// 2 allocations at 1000 packets/s for a second, over `transport` to `addr`.
fn short_run(addr: SocketAddr, transport: LoadTransport) -> LoadConfig {
    let mut config = LoadConfig::new(addr, static_user());
    config.transport = transport;
    config.allocations = 2;
    config.rate = 1000;
    config.duration = Duration::from_secs(1);
    config
}

fn assert_lossless(report: &LoadReport) {
    let table = report.to_table();
    assert!(
        (900..=1100).contains(&report.sent),
        "about 1000 sent: {table}"
    );
    assert_eq!(report.received, report.sent, "{table}");
    assert_eq!(report.loss_percent(), 0.0, "{table}");
    assert_eq!(
        (report.stray, report.queue_drops, report.send_errors),
        (0, 0, 0),
        "{table}"
    );
    assert_eq!(report.delete_failures, 0, "{table}");
}

/// The server's certificate as a PEM file (self-signed, so it is its own CA).
async fn server_cert_pem(server: &TestServer, dir: &TempDir) -> PathBuf {
    let tcp = tokio::net::TcpStream::connect(server.tls()).await.unwrap();
    let tls = server
        .tls_connector()
        .connect(TestServer::tls_name(), tcp)
        .await
        .unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    );
    let path = dir.0.join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn tcp_allocations_relay_channel_data_without_loss() {
    let server = TestServer::start();
    let report = loadgen::run(&short_run(server.tcp(), LoadTransport::Tcp)).unwrap();
    eprintln!("{}", report.to_table());
    assert_lossless(&report);
    assert_eq!(report.transport, LoadTransport::Tcp);
    assert!(report.rtt.p50 > Duration::ZERO);
    assert_eq!(server.allocations(), 0, "teardown deleted both allocations");
}

#[test]
fn tcp_send_indications_in_a_closed_loop_round_trip() {
    let server = TestServer::start();
    let mut config = LoadConfig::new(
        server.tcp(),
        Credentials::Rest {
            secret: SECRET.to_owned(),
        },
    );
    config.transport = LoadTransport::Tcp;
    config.allocations = 2;
    config.send_indications = true;
    config.window = 8;
    config.max_packets = 2000;
    config.duration = Duration::from_secs(5);
    let report = loadgen::run(&config).unwrap();
    eprintln!("{}", report.to_table());
    assert_eq!((report.sent, report.received), (2000, 2000));
    assert_eq!(report.delete_failures, 0);
}

#[tokio::test]
async fn tls_allocations_verified_against_the_ca_relay_without_loss() {
    let server = TestServer::start();
    let dir = TempDir::new();
    let ca = bounded(server_cert_pem(&server, &dir)).await;
    let mut config = short_run(server.tls(), LoadTransport::Tls);
    config.tls_ca = Some(ca.clone());
    // No name: the certificate's IP address 127.0.0.1 is checked.
    let run = config.clone();
    let report = bounded(tokio::task::spawn_blocking(move || loadgen::run(&run)))
        .await
        .unwrap()
        .unwrap();
    eprintln!("{}", report.to_table());
    assert_lossless(&report);
    assert_eq!(report.transport, LoadTransport::Tls);

    // A name the certificate does not carry fails the handshake.
    config.tls_name = Some("elsewhere.test".to_owned());
    config.duration = Duration::from_millis(100);
    let err = bounded(tokio::task::spawn_blocking(move || loadgen::run(&config)))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, LoadError::Tls { .. }), "{err}");
}

#[test]
fn tls_insecure_accepts_the_self_signed_certificate() {
    let server = TestServer::start();
    let mut config = short_run(server.tls(), LoadTransport::Tls);
    config.tls_insecure = true;
    config.tls_name = Some("localhost".to_owned());
    let report = loadgen::run(&config).unwrap();
    eprintln!("{}", report.to_table());
    assert_lossless(&report);
}

#[test]
fn tls_without_a_ca_or_insecure_is_refused_before_connecting() {
    let server = TestServer::start();
    let config = short_run(server.tls(), LoadTransport::Tls);
    assert!(matches!(loadgen::run(&config), Err(LoadError::Config(_))));
}

#[test]
fn raw_needs_no_credentials_and_churn_parses() {
    let parse = |args: &[&str]| Cli::try_parse_from(["turnstone", "bench"].iter().chain(args));
    assert!(parse(&["--server", "127.0.0.1:3478", "--raw"]).is_ok());
    assert!(
        parse(&["--server", "127.0.0.1:3478"]).is_err(),
        "credentials or --raw"
    );
    assert!(
        parse(&[
            "--server",
            "127.0.0.1:3478",
            "--secret",
            "s",
            "--churn",
            "64"
        ])
        .is_ok()
    );
    assert!(parse(&["--server", "127.0.0.1:3478", "--raw", "--churn", "64"]).is_err());
}

/// Runs `turnstone bench ARGS`, killed after [`COMMAND_TIMEOUT`].
#[allow(
    clippy::disallowed_methods,
    reason = "the test polls a child process in real time"
)]
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_turnstone"))
        .arg("bench")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_churn_command_cycles_allocations_and_prints_json() {
    // A wave is 64 requests at once: more than the default per-IP request rate allows.
    let server = TestServer::start_with(&Options::limits(
        "requests_per_second_per_ip = 0\ntcp_handshake_timeout = \"5s\"",
    ));
    let addr = server.udp().to_string();
    let out = bench(&[
        "--server",
        &addr,
        "--secret",
        SECRET,
        "--churn",
        "64",
        "--churn-pool",
        "64",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(r#""cycles":64,"#), "{stdout}");
    assert!(stdout.contains(r#""failures":0,"#), "{stdout}");
    assert_eq!(server.allocations(), 0);
}

/// Kills the forwarder it holds when dropped (also when an assertion fails).
struct Forwarder(std::process::Child);

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Says hello until the forwarder at `addr` welcomes (a loaded machine may start it slowly).
#[allow(
    clippy::disallowed_methods,
    reason = "the test waits in real time for a process to bind its port"
)]
fn wait_for_forwarder(addr: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let SocketAddr::V4(peer) = socket.local_addr().unwrap() else {
        unreachable!("bound to IPv4")
    };
    let hello = Hello {
        kind: HelloKind::Hello,
        index: 0,
        addr: peer,
    };
    let mut buf = [0u8; 64];
    // At most 10 s: 200 ms per silent try, 20 ms per refused one.
    for _ in 0..500 {
        let _ = socket.send(&hello.encode());
        match socket.recv(&mut buf) {
            Ok(n) if Hello::decode(&buf[..n]).is_some_and(|w| w.kind == HelloKind::Welcome) => {
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::thread::sleep(Duration::from_millis(20)); // nothing bound there yet
            }
            _ => {}
        }
    }
    panic!("the forwarder on {addr} never welcomed a hello");
}

#[test]
fn the_raw_command_drives_the_forwarder_without_credentials() {
    // A free port for the forwarder (released just before it binds).
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let _forwarder = Forwarder(
        Command::new(env!("CARGO_BIN_EXE_turnstone-forwarder"))
            .args(["--listen", &listen, "--max-lanes", "4"])
            .spawn()
            .unwrap(),
    );
    wait_for_forwarder(&listen);
    let out = bench(&[
        "--server",
        &listen,
        "--raw",
        "--allocations",
        "2",
        "--rate",
        "1000",
        "--duration",
        "0.5",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with(&format!("udp {listen} via channel: 2 allocations")),
        "{stdout}"
    );
    assert!(stdout.contains(" lost 0;"), "{stdout}");
}
