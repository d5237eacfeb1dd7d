//! The load generator (`turnstone bench`, UDP) against an in-process Turnstone on loopback:
//! open and closed loops, warmup, refreshes, Send indications, churn and refusals.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use turnstone::config::Config;
use turnstone::core::Transport;
use turnstone::io::RunningServer;
use turnstone::loadgen::{Churn, Credentials, LoadConfig, LoadError, Stage, run, run_with};

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";
const SECRET: &str = "bench-secret";

fn start_server() -> (RunningServer, SocketAddr) {
    let text = format!(
        r#"
[server]
realm = "bench.test"
workers = 1

[[listen]]
protocol = "udp"
address = "127.0.0.1:0"

[admin]
enabled = false

[relay]
address = "127.0.0.1"

[auth]
secrets = ["{SECRET}"]

[[auth.users]]
name = "{USER}"
password = "{PASSWORD}"

[peers]
allow = ["127.0.0.0/8"]

[limits]
requests_per_second_per_ip = 0
"#
    );
    let config = Config::from_toml(&text, Path::new("."))
        .unwrap_or_else(|e| panic!("test configuration invalid:\n{e}"));
    let spec = config
        .server_spec(Arc::new(config.credential_store()), Arc::new(|_| {}))
        .unwrap();
    let server = turnstone::io::start(spec).unwrap();
    let addr = server.address(Transport::Udp).unwrap();
    (server, addr)
}

fn static_user() -> Credentials {
    Credentials::Static {
        user: USER.to_owned(),
        password: PASSWORD.to_owned(),
    }
}

#[test]
fn three_allocations_at_2000_pps_for_a_second_lose_nothing() {
    let (server, addr) = start_server();
    let mut config = LoadConfig::new(addr, static_user());
    config.allocations = 3;
    config.rate = 2000;
    config.duration = Duration::from_secs(1);
    let report = run(&config).unwrap();
    server.shutdown();

    eprintln!("{}", report.to_table());
    assert!(
        (1900..=2100).contains(&report.sent),
        "sent {} in {:?}",
        report.sent,
        report.elapsed
    );
    assert_eq!(report.received, report.sent, "{}", report.to_table());
    assert_eq!(report.loss_percent(), 0.0);
    assert_eq!(report.rtt.samples, report.received);
    assert!(report.rtt.p50 > Duration::ZERO && report.rtt.p50 <= report.rtt.p999);
    assert_eq!(report.delete_failures, 0);
    assert_eq!(report.stray, 0);
}

#[test]
fn send_indications_with_rest_credentials_in_a_closed_loop_round_trip() {
    let (server, addr) = start_server();
    let mut config = LoadConfig::new(
        addr,
        Credentials::Rest {
            secret: SECRET.to_owned(),
        },
    );
    config.allocations = 2;
    config.send_indications = true;
    config.window = 4;
    config.duration = Duration::from_millis(300);
    config.max_packets = 500;
    let report = run(&config).unwrap();
    server.shutdown();

    eprintln!("{}", report.to_table());
    assert_eq!(report.sent, 500, "max_packets bounds the run");
    assert_eq!(report.received, 500);
    assert_eq!(report.delete_failures, 0);
}

#[test]
fn warmup_packets_are_not_counted() {
    let (server, addr) = start_server();
    let mut config = LoadConfig::new(addr, static_user());
    config.allocations = 1;
    config.rate = 1000;
    config.warmup = Duration::from_millis(200);
    config.duration = Duration::from_millis(300);
    let report = run(&config).unwrap();
    server.shutdown();

    assert!(
        (280..=320).contains(&report.sent),
        "only the measured 300 ms count: {}",
        report.sent
    );
    assert_eq!(report.received, report.sent);
}

#[test]
fn allocations_and_channels_are_refreshed_while_traffic_flows() {
    let (server, addr) = start_server();
    let mut config = LoadConfig::new(addr, static_user());
    config.allocations = 2;
    config.rate = 1000;
    config.duration = Duration::from_millis(500);
    config.refresh_every = Duration::from_millis(100);
    let report = run(&config).unwrap();
    server.shutdown();

    eprintln!("{}", report.to_table());
    // Every 100 ms: Refresh and ChannelBind for each of 2 allocations.
    assert!(report.refreshes >= 12, "{}", report.refreshes);
    assert_eq!(report.refresh_failures, 0);
    assert_eq!(report.received, report.sent);
}

#[test]
fn a_wrong_password_is_reported_as_rejected_with_401() {
    let (server, addr) = start_server();
    let config = LoadConfig::new(
        addr,
        Credentials::Static {
            user: USER.to_owned(),
            password: "wrong".to_owned(),
        },
    );
    let err = run(&config).unwrap_err();
    server.shutdown();
    assert!(
        matches!(
            err,
            LoadError::Rejected {
                what: "Allocate",
                code: 401,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_payload_too_short_for_the_header_is_refused() {
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = LoadConfig::new(addr, static_user());
    config.payload = 8;
    assert!(matches!(run(&config), Err(LoadError::Config(_))));
}

#[test]
fn observer_sees_ready_then_measuring_then_measured() {
    let (server, addr) = start_server();
    let mut config = LoadConfig::new(addr, static_user());
    config.allocations = 2;
    config.rate = 1000;
    config.warmup = Duration::from_millis(50);
    config.duration = Duration::from_millis(100);
    let mut stages = Vec::new();
    let report = run_with(&config, &mut |s| stages.push(s)).unwrap();
    server.shutdown();
    assert_eq!(stages, [Stage::Ready, Stage::Measuring, Stage::Measured]);
    assert_eq!(report.received, report.sent);
}

#[test]
fn churn_cycles_allocate_and_delete_with_both_kinds_of_credentials() {
    let (server, addr) = start_server();
    let rest = Credentials::Rest {
        secret: SECRET.to_owned(),
    };
    for credentials in [static_user(), rest] {
        let mut churn = Churn::new(addr, &credentials, 64).unwrap();
        let report = churn.run(64, Duration::from_secs(10)).unwrap();
        assert_eq!(report.cycles, 64, "one wave");
        assert_eq!(report.failures(), 0, "{report:?}");
        assert!(report.cycles_per_sec() > 0.0);
    }
    assert_eq!(
        server.allocations(),
        0,
        "every cycle deleted its allocation"
    );
    server.shutdown();
}
