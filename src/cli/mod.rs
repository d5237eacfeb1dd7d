//! The command line: `serve`, `check-config`, `credentials`.

mod bench;
mod check_config;
mod credentials;
mod probe;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// An outcome that is not a plain failure: `main` exits with `code` (1 is any other error).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// The process exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

/// Turnstone: a STUN/TURN relay server for WebRTC.
#[derive(Debug, Parser)]
#[command(name = "turnstone", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (with no --config: the built-in default, UDP and TCP on 0.0.0.0:3478).
    Serve {
        /// Configuration file (TOML); see conf/full.toml for every key.
        #[arg(long, short, env = "TURNSTONE_CONFIG")]
        config: Option<PathBuf>,
        /// Log level, overriding [log] level: error, warn, info, debug, trace.
        #[arg(long, env = "TURNSTONE_LOG")]
        log_level: Option<String>,
        /// Advertised IPv4 relay address (1:1 NAT), overriding relay.external_address.
        #[arg(long, env = "TURNSTONE_EXTERNAL_ADDRESS")]
        external_address: Option<std::net::IpAddr>,
    },
    /// Validate a configuration file: print every problem and exit non-zero if there is one.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Mint TURN REST API credentials from a shared secret and print the iceServers JSON.
    Credentials(credentials::CredentialsArgs),
    /// Load a TURN server (Turnstone, coturn, ...) with relayed traffic and report packets/s,
    /// loss and round-trip times.
    Bench(bench::BenchArgs),
    /// Diagnose TURN connectivity to a server (Turnstone, coturn, ...): resolve, connect, TLS,
    /// Binding, Allocate, a relay round trip and cleanup, each failure explained in plain words.
    /// Exit status: 0 every step passed, 1 a step failed, 2 nothing failed but the relay
    /// path could not be tested.
    Probe(probe::ProbeArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            log_level,
            external_address,
        } => serve::run(config.as_deref(), log_level.as_deref(), external_address),
        Command::CheckConfig { file } => check_config::run(&file),
        Command::Credentials(args) => credentials::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Probe(args) => probe::run(&args),
    }
}
