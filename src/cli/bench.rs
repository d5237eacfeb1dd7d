//! `turnstone bench`: a TURN load generator for any server (Turnstone, coturn, ...). It
//! allocates relays, echoes through peers it runs itself and prints rates, loss and RTT. It
//! also drives `turnstone-forwarder` (`--raw`) and measures the control plane (`--churn`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, ValueEnum};

use crate::loadgen::{self, CHURN_WAVE, Churn, Credentials, LoadConfig, LoadTransport};

/// Arguments of `turnstone bench`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("credentials").required(true).args(["user", "secret", "raw"])))]
pub struct BenchArgs {
    /// The server to load, HOST:PORT (e.g. 127.0.0.1:3478).
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// Transport between the generator and the server: one UDP socket, TCP connection or TLS
    /// connection per allocation (RFC 8656 §3.1). The relay to the peers is UDP in every case.
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    transport: TransportArg,
    /// TLS: accept any server certificate (self-signed benchmark servers); handshake
    /// signatures are still checked.
    #[arg(long, conflicts_with = "ca")]
    tls_insecure: bool,
    /// TLS: verify the server's certificate against the CA certificate(s) in this PEM file
    /// (--transport tls needs this or --tls-insecure).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry, also sent as SNI. Default: the host
    /// of --server: a DNS name as given, an IP address checked against the certificate's IP
    /// addresses (and no SNI sent, as RFC 6066 allows none for an IP).
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,
    /// Long-term credential user name (RFC 8489 §9.2); needs --password.
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// Password of --user.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// TURN REST API shared secret: username "<expiry>:bench", password HMAC-SHA1(secret, username).
    #[arg(long)]
    secret: Option<String>,
    /// The server is turnstone-forwarder (the floor of the comparison harness), not TURN: each
    /// lane says hello instead of allocating, so no credentials. UDP and ChannelData only.
    #[arg(long)]
    raw: bool,
    /// Control-plane churn instead of traffic: CYCLES cycles (rounded up to waves of 64) of an
    /// Allocate answered 401, the Allocate again with credentials and a Refresh with lifetime 0,
    /// then the cycles per second and failures. No wave starts after --duration. UDP only;
    /// the traffic options (--allocations, --rate, --payload, --window, ...) do not apply.
    #[arg(long, value_name = "CYCLES", conflicts_with = "raw")]
    churn: Option<u64>,
    /// Churn: client sockets to cycle through (64 to 16384). Each is reused only 2 s after its
    /// allocation was deleted, so churn makes at most POOL / 2 cycles per second.
    #[arg(long, value_name = "POOL", default_value_t = 1024, requires = "churn")]
    churn_pool: usize,
    /// Allocations, each on its own client socket or connection.
    #[arg(long, default_value_t = 10)]
    allocations: usize,
    /// Application payload bytes per packet (24 to 60000; the first 24 carry sequence and time).
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    payload: usize,
    /// Aggregate packets per second, spread round robin over the allocations; 0 = as fast as
    /// delivery allows (closed loop, --window packets in flight per allocation).
    #[arg(long, value_name = "PPS", default_value_t = 0)]
    rate: u64,
    /// Closed loop only: packets in flight per allocation.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Length of the measured phase in seconds (fractions allowed); with --churn, the longest
    /// the churn may run.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of traffic before the measured phase, not counted.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    warmup: f64,
    /// Packets sent in the measured phase at most; the run ends at this or --duration, whichever
    /// comes first.
    #[arg(long, value_name = "N", default_value_t = 100_000_000)]
    max_packets: u64,
    /// Use Send/Data indications instead of ChannelBind + ChannelData.
    #[arg(long)]
    send_indications: bool,
    /// IPv4 address the generator's echo peers bind to; the server must be allowed to relay to
    /// it (Turnstone: [peers] allow; coturn: --allow-loopback-peers for 127.0.0.1).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    peer_ip: IpAddr,
    /// Echo peer sockets, shared round robin by the allocations.
    #[arg(long, default_value_t = 4)]
    peers: usize,
    /// A packet not back within this many milliseconds counts as lost.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    loss_timeout_ms: u64,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

/// `--transport` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS over TCP.
    Tls,
}

pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(cycles) = args.churn {
        return churn(args, cycles);
    }
    let config = load_config(args)?;
    let report = loadgen::run(&config).context("load test failed")?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_table());
    }
    Ok(())
}

/// `--churn`: Allocate/Refresh(0) cycles against the server.
fn churn(args: &BenchArgs, cycles: u64) -> anyhow::Result<()> {
    let server = resolve(&args.server)?;
    if args.transport != TransportArg::Udp {
        bail!("--churn runs over UDP only");
    }
    let credentials = credentials(args)?;
    let max_time = seconds(args.duration, "--duration")?;
    let mut churn =
        Churn::new(server, &credentials, args.churn_pool).context("cannot set up churn")?;
    let report = churn.run(cycles, max_time).context("churn failed")?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!(
            "churn {server}, {} client sockets in waves of {CHURN_WAVE}: {}",
            args.churn_pool,
            report.to_table()
        );
    }
    Ok(())
}

fn load_config(args: &BenchArgs) -> anyhow::Result<LoadConfig> {
    let server = resolve(&args.server)?;
    let credentials = if args.raw {
        // Raw lanes never authenticate.
        Credentials::Static {
            user: String::new(),
            password: String::new(),
        }
    } else {
        credentials(args)?
    };
    let mut config = LoadConfig::new(server, credentials);
    config.transport = match args.transport {
        TransportArg::Udp => LoadTransport::Udp,
        TransportArg::Tcp => LoadTransport::Tcp,
        TransportArg::Tls => LoadTransport::Tls,
    };
    let tls_options = args.tls_insecure || args.ca.is_some() || args.tls_name.is_some();
    if config.transport != LoadTransport::Tls && tls_options {
        bail!("--ca, --tls-insecure and --tls-name apply to --transport tls only");
    }
    if config.transport == LoadTransport::Tls && !args.tls_insecure && args.ca.is_none() {
        bail!("--transport tls needs --ca FILE to verify the server, or --tls-insecure");
    }
    config.tls_insecure = args.tls_insecure;
    config.tls_ca.clone_from(&args.ca);
    config.tls_name = match &args.tls_name {
        Some(name) => Some(name.clone()),
        None => host_name(&args.server),
    };
    config.raw = args.raw;
    config.allocations = args.allocations;
    config.payload = args.payload;
    config.rate = args.rate;
    config.window = args.window;
    config.duration = seconds(args.duration, "--duration")?;
    config.warmup = seconds(args.warmup, "--warmup")?;
    config.max_packets = args.max_packets;
    config.send_indications = args.send_indications;
    config.peer_ip = args.peer_ip;
    config.peers = args.peers;
    config.loss_timeout = Duration::from_millis(args.loss_timeout_ms);
    Ok(config)
}

fn credentials(args: &BenchArgs) -> anyhow::Result<Credentials> {
    Ok(match (&args.user, &args.password, &args.secret) {
        (Some(user), Some(password), None) => Credentials::Static {
            user: user.clone(),
            password: password.clone(),
        },
        (None, None, Some(secret)) if !secret.is_empty() => Credentials::Rest {
            secret: secret.clone(),
        },
        _ => bail!("give either --user and --password, or a non-empty --secret"),
    })
}

/// The DNS name in `HOST:PORT`; `None` for an IP address (the library then checks the
/// certificate for the resolved IP).
fn host_name(server: &str) -> Option<String> {
    let (host, _port) = server.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.parse::<IpAddr>().is_err().then(|| host.to_owned())
}

fn resolve(server: &str) -> anyhow::Result<SocketAddr> {
    server
        .to_socket_addrs()
        .with_context(|| format!("--server {server:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--server {server:?} resolves to no address"))
}

fn seconds(secs: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .with_context(|| format!("{flag} {secs} is not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(argv: &[&str]) -> Result<BenchArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("bench").chain(argv.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn flags_become_the_load_config() {
        let args = parse(&[
            "--server",
            "127.0.0.1:3478",
            "--user",
            "u",
            "--password",
            "p",
            "--rate",
            "40000",
            "--duration",
            "2.5",
            "--warmup",
            "1",
            "--send-indications",
            "--allocations",
            "3",
        ])
        .unwrap();
        let c = load_config(&args).unwrap();
        assert_eq!(c.server, "127.0.0.1:3478".parse().unwrap());
        assert_eq!((c.rate, c.allocations, c.payload), (40_000, 3, 100));
        assert_eq!(c.duration, Duration::from_millis(2500));
        assert_eq!(c.warmup, Duration::from_secs(1));
        assert!(c.send_indications);
        assert!(matches!(c.credentials, Credentials::Static { .. }));
    }

    #[test]
    fn credentials_are_required_and_exclusive() {
        assert!(parse(&["--server", "127.0.0.1:3478"]).is_err());
        assert!(parse(&["--server", "127.0.0.1:3478", "--user", "u"]).is_err());
        let both = [
            "--server",
            "127.0.0.1:3478",
            "--user",
            "u",
            "--password",
            "p",
            "--secret",
            "s",
        ];
        assert!(parse(&both).is_err());
        let rest = parse(&["--server", "127.0.0.1:3478", "--secret", "s"]).unwrap();
        assert!(matches!(
            load_config(&rest).unwrap().credentials,
            Credentials::Rest { .. }
        ));
    }

    #[test]
    fn raw_mode_needs_no_credentials_and_takes_none() {
        let args = parse(&["--server", "127.0.0.1:4000", "--raw"]).unwrap();
        let c = load_config(&args).unwrap();
        assert!(c.raw);
        assert_eq!(c.transport, LoadTransport::Udp);
        assert!(parse(&["--server", "127.0.0.1:4000", "--raw", "--secret", "s"]).is_err());
    }

    #[test]
    fn churn_takes_cycles_and_a_pool_but_not_raw() {
        let args = parse(&["--server", "127.0.0.1:1", "--secret", "s", "--churn", "128"]).unwrap();
        assert_eq!((args.churn, args.churn_pool), (Some(128), 1024));
        let pooled = ["--server", "127.0.0.1:1", "--secret", "s", "--churn", "64"];
        let pooled = parse(&[&pooled[..], &["--churn-pool", "64"]].concat()).unwrap();
        assert_eq!(pooled.churn_pool, 64);
        assert!(
            parse(&[
                "--server",
                "127.0.0.1:1",
                "--secret",
                "s",
                "--churn-pool",
                "64"
            ])
            .is_err()
        );
        assert!(parse(&["--server", "127.0.0.1:1", "--raw", "--churn", "64"]).is_err());
        assert!(
            parse(&["--server", "127.0.0.1:1", "--churn", "64"]).is_err(),
            "credentials"
        );
    }

    #[test]
    fn tls_needs_a_ca_or_insecure_and_names_the_host() {
        let base = [
            "--server",
            "localhost:5349",
            "--secret",
            "s",
            "--transport",
            "tls",
        ];
        assert!(load_config(&parse(&base).unwrap()).is_err());
        let insecure = parse(&[&base[..], &["--tls-insecure"]].concat()).unwrap();
        let c = load_config(&insecure).unwrap();
        assert_eq!(c.transport, LoadTransport::Tls);
        assert!(c.tls_insecure);
        assert_eq!(c.tls_name.as_deref(), Some("localhost"));
        let ca = parse(
            &[
                &base[..],
                &["--ca", "/tmp/ca.pem", "--tls-name", "turn.test"],
            ]
            .concat(),
        )
        .unwrap();
        let c = load_config(&ca).unwrap();
        assert_eq!(c.tls_ca, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(c.tls_name.as_deref(), Some("turn.test"));
        assert!(parse(&[&base[..], &["--ca", "x", "--tls-insecure"]].concat()).is_err());
    }

    #[test]
    fn tls_options_without_tls_are_refused_rather_than_ignored() {
        for (transport, option) in [("udp", "--tls-insecure"), ("tcp", "--tls-insecure")] {
            let args = ["--server", "127.0.0.1:3478", "--secret", "s"];
            let argv = [&args[..], &["--transport", transport, option]].concat();
            let err = load_config(&parse(&argv).unwrap()).unwrap_err();
            assert!(err.to_string().contains("--transport tls only"), "{err}");
        }
        let argv = [
            "--server",
            "127.0.0.1:3478",
            "--secret",
            "s",
            "--ca",
            "ca.pem",
        ];
        assert!(load_config(&parse(&argv).unwrap()).is_err());
    }

    #[test]
    fn the_tls_name_of_an_ip_server_is_left_to_the_library() {
        assert_eq!(host_name("127.0.0.1:5349"), None);
        assert_eq!(host_name("[::1]:5349"), None);
        assert_eq!(
            host_name("turn.example.com:5349"),
            Some("turn.example.com".into())
        );
        let args = parse(&[
            "--server",
            "127.0.0.1:1",
            "--secret",
            "s",
            "--transport",
            "tcp",
        ]);
        assert_eq!(
            load_config(&args.unwrap()).unwrap().transport,
            LoadTransport::Tcp
        );
    }

    #[test]
    fn a_negative_duration_is_an_error() {
        let args = parse(&["--server", "127.0.0.1:1", "--secret", "s", "--duration=-1"]).unwrap();
        assert!(load_config(&args).is_err());
    }
}
