//! `turnstone bench`: a TURN load generator for any server (Turnstone, coturn, ...). It
//! allocates relays, echoes through peers it runs itself and prints rates, loss and RTT.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, ValueEnum};

use crate::loadgen::{self, Credentials, LoadConfig, LoadTransport};

/// Arguments of `turnstone bench`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("credentials").required(true).args(["user", "secret"])))]
pub struct BenchArgs {
    /// The TURN server to load, HOST:PORT (e.g. 127.0.0.1:3478).
    #[arg(long, value_name = "HOST:PORT")]
    server: String,
    /// Transport between the generator and the server (UDP only for now).
    #[arg(long, value_enum, default_value_t = TransportArg::Udp)]
    transport: TransportArg,
    /// Long-term credential user name (RFC 8489 §9.2); needs --password.
    #[arg(long, requires = "password", conflicts_with = "secret")]
    user: Option<String>,
    /// Password of --user.
    #[arg(long, requires = "user")]
    password: Option<String>,
    /// TURN REST API shared secret: username "<expiry>:bench", password HMAC-SHA1(secret, username).
    #[arg(long)]
    secret: Option<String>,
    /// Allocations, each on its own client UDP socket.
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
    /// Length of the measured phase in seconds (fractions allowed).
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
}

pub(super) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let config = load_config(args)?;
    let report = loadgen::run(&config).context("load test failed")?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        println!("{}", report.to_table());
    }
    Ok(())
}

fn load_config(args: &BenchArgs) -> anyhow::Result<LoadConfig> {
    let server = resolve(&args.server)?;
    let credentials = match (&args.user, &args.password, &args.secret) {
        (Some(user), Some(password), None) => Credentials::Static {
            user: user.clone(),
            password: password.clone(),
        },
        (None, None, Some(secret)) if !secret.is_empty() => Credentials::Rest {
            secret: secret.clone(),
        },
        _ => bail!("give either --user and --password, or a non-empty --secret"),
    };
    let mut config = LoadConfig::new(server, credentials);
    config.transport = match args.transport {
        TransportArg::Udp => LoadTransport::Udp,
    };
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
    fn a_negative_duration_is_an_error() {
        let args = parse(&["--server", "127.0.0.1:1", "--secret", "s", "--duration=-1"]).unwrap();
        assert!(load_config(&args).is_err());
    }
}
