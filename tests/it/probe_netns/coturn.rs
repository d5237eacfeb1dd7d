//! The probe against Debian coturn's `turnserver`, started by the test in the server
//! namespace: every step passes over UDP and TCP (with a relay straight to the probe's echo
//! socket), a wrong password is named as such, and with coturn's REST API secret a wrong
//! secret and a clock behind the server's are told apart as they are with Turnstone.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use turnstone::diag::{Credentials, Status, Step};

use super::{
    CLIENT, LONG, Net, Proc, RELAY_PORTS, SERVER, SHORT, advice, assert_healthy, config, failed_at,
    probe, says, turn, user, within,
};
use crate::client::binding_request;
use crate::common::{PASSWORD, REALM, SECRET, TempDir, USER};

/// Starts coturn in the server namespace of `net` (long-term credentials for the test user,
/// or the REST API secret with `rest`), and waits until it answers over UDP and TCP.
fn start_coturn(net: &Net, dir: &TempDir, rest: bool) -> Proc {
    let (min, max) = RELAY_PORTS.split_once('-').unwrap();
    let mut args = vec![
        "-n".to_owned(),
        format!("--listening-ip={SERVER}"),
        "--listening-port=3478".into(),
        format!("--relay-ip={SERVER}"),
        format!("--min-port={min}"),
        format!("--max-port={max}"),
        format!("--realm={REALM}"),
        "--no-cli".into(),
        "--no-tls".into(),
        "--no-dtls".into(),
        "--log-file=stdout".into(),
        "--simple-log".into(),
        // coturn's pid file and user database stay out of /var.
        format!("--pidfile={}", dir.0.join("coturn.pid").display()),
        format!("--db={}", dir.0.join("coturn.sqlite").display()),
    ];
    if rest {
        args.push("--use-auth-secret".into());
        args.push(format!("--static-auth-secret={SECRET}"));
    } else {
        args.push("--lt-cred-mech".into());
        args.push(format!("--user={USER}:{PASSWORD}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let coturn = Proc::spawn(&net.server, dir, "turnserver", &args);
    let ready = within(&net.client, || {
        let server: SocketAddr = format!("{SERVER}:3478").parse().unwrap();
        let udp = UdpSocket::bind((CLIENT, 0)).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 512];
        // Bounded: until the deadline, one Binding every 100 ms, then TCP connections.
        while Instant::now() < deadline {
            let (_, request) = binding_request();
            let _ = udp.send_to(&request, server);
            if udp.recv_from(&mut buf).is_ok() {
                break;
            }
        }
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&server, Duration::from_millis(100)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    assert!(ready, "coturn did not answer:\n{}", coturn.output());
    coturn
}

#[test]
fn coturn_passes_every_step_and_a_wrong_password_is_named() {
    let net = Net::direct();
    let dir = TempDir::new();
    let coturn = start_coturn(&net, &dir, false);
    for transport in ["udp", "tcp"] {
        let report = probe(
            &net,
            config(&turn(SERVER, 3478, transport), user(PASSWORD), LONG),
        );
        assert_healthy(&report);
        says(
            &report.step(Step::Binding).unwrap().detail,
            &["server software: Coturn"],
            &report,
        );
        assert!(
            report.to_text().ends_with("result: every step passed\n"),
            "{}",
            report.to_text()
        );
    }
    let report = probe(
        &net,
        config(&turn(SERVER, 3478, "udp"), user("wrong"), SHORT),
    );
    let failed = failed_at(&report, Step::Allocate);
    says(
        &failed.detail,
        &["the server refused the credentials (401)", "wrong password"],
        &report,
    );
    says(advice(failed), &["--password"], &report);
    assert_eq!(report.step(Step::Relay).unwrap().status, Status::Skipped);
    drop(coturn);
}

#[test]
fn coturn_with_a_rest_secret_tells_a_wrong_secret_from_a_clock_behind() {
    let net = Net::direct();
    let dir = TempDir::new();
    let coturn = start_coturn(&net, &dir, true);
    let uri = turn(SERVER, 3478, "udp");
    let mint = |secret: &str| Credentials::Rest {
        secret: secret.into(),
        user: "alice".into(),
    };
    assert_healthy(&probe(&net, config(&uri, mint(SECRET), LONG)));

    let report = probe(&net, config(&uri, mint("not-the-secret"), SHORT));
    let failed = failed_at(&report, Step::Allocate);
    says(
        &failed.detail,
        &[
            "wrong password, from a wrong shared secret",
            "so the clocks are not the cause",
        ],
        &report,
    );

    let mut behind = config(&uri, mint(SECRET), SHORT);
    behind.unix_now -= 3 * 3600;
    let report = probe(&net, behind);
    let failed = failed_at(&report, Step::Allocate);
    says(
        &failed.detail,
        &[
            "clock skew: ",
            "the server's clock is ahead of this machine's by more than 60 min",
        ],
        &report,
    );
    assert_eq!(
        report.step(Step::Relay).unwrap().status,
        Status::Pass,
        "{}",
        report.to_text()
    );
    drop(coturn);
}
