//! `turnstone serve`: load the configuration, start workers and the admin listener, wait for a
//! signal, shut down gracefully.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, anyhow};

use crate::auth::{CredentialStore, Nonces};
use crate::config::{Config, LogLevel};
use crate::core::UsageRecord;
use crate::io::{self, UsageSink, clock};
use crate::ops::{AdminState, spawn_admin};

pub(super) fn run(
    config_path: Option<&Path>,
    log_level: Option<&str>,
    external: Option<IpAddr>,
) -> anyhow::Result<()> {
    let mut config = match config_path {
        Some(path) => Config::from_file(path)
            .map_err(|e| anyhow!("invalid configuration {}:\n{e}", path.display()))?,
        None => Config::embedded_default(),
    };
    if let Some(ip) = external {
        config.relay.external_address = Some(ip);
    }
    let level = match log_level {
        Some(l) => l
            .parse::<LogLevel>()
            .map_err(|_| anyhow!("--log-level {l:?}: use error, warn, info, debug or trace"))?,
        None => config.log.level,
    };
    init_logging(level);

    let credentials = Arc::new(credentials_or_generated(&config)?);
    let usage: UsageSink = Arc::new(|record: UsageRecord| {
        tracing::info!(target: "turnstone::usage", "{}", record.to_json());
    });
    let spec = config
        .server_spec(credentials, usage)
        .context("cannot prepare listeners")?;
    let server = io::start(spec).context("cannot start the server")?;
    for (transport, address) in server.bound() {
        tracing::info!(target: "turnstone::io", "listening on {} {address}", transport.name());
    }
    let admin_state = Arc::new(AdminState::default());
    let _admin = match &config.admin {
        Some(admin) => {
            let handle = spawn_admin(admin.address, Arc::clone(&admin_state))
                .with_context(|| format!("cannot listen on admin address {}", admin.address))?;
            tracing::info!(target: "turnstone::io", "admin HTTP on http://{}", handle.address());
            Some(handle)
        }
        None => None,
    };
    admin_state.set_ready(true);
    wait_for_shutdown_signal()?;
    tracing::info!(target: "turnstone::io", "shutting down");
    admin_state.set_ready(false);
    server.shutdown();
    Ok(())
}

/// The configured users and secrets; with none, a random secret so the server is never an
/// open relay, and one ready credential printed for trying it out.
fn credentials_or_generated(config: &Config) -> anyhow::Result<CredentialStore> {
    let store = config.credential_store();
    if store.has_credentials() {
        return Ok(store);
    }
    let bytes = Nonces::random_key().context("cannot generate a secret")?;
    let secret: String = bytes.iter().take(16).map(|b| format!("{b:02x}")).collect();
    let store = CredentialStore::new(
        &config.server.realm,
        std::iter::empty(),
        vec![secret.as_bytes().to_vec()],
    );
    let (username, password) =
        super::credentials::mint(&secret, Some("demo"), 24 * 3600, clock::now().unix_secs);
    eprintln!(
        "No credentials configured: generated a TURN REST secret for this run.\n\
         A credential valid for 24 hours:\n  username: {username}\n  password: {password}\n\
         To keep credentials across restarts, set [auth] secrets = [\"...\"] or add [[auth.users]]\n\
         in a config file and run `turnstone serve --config FILE` (see conf/full.toml)."
    );
    Ok(store)
}

fn init_logging(level: LogLevel) {
    use tracing_subscriber::filter::LevelFilter;
    let filter = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}
