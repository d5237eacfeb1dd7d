//! `turnstone serve`: load the configuration, start workers and the admin listener, then react
//! to signals: SIGHUP reloads, SIGTERM/SIGINT drain and exit.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow};

use crate::auth::{CredentialStore, Nonces, SelftestKey};
use crate::config::{Config, LogLevel, UsageOutput};
use crate::core::{Transport, UsageRecord};
use crate::io::{self, RunningServer, UsageSink, clock};
use crate::ops::selftest::{SelftestSite, spawn_selftest};
use crate::ops::{AdminState, CredentialIssuer, install_recorder, spawn_admin};

pub(super) fn run(
    config_path: Option<&Path>,
    log_level: Option<&str>,
    external: Option<IpAddr>,
) -> anyhow::Result<()> {
    let config = load(config_path, external)?;
    let level = match log_level {
        Some(l) => l
            .parse::<LogLevel>()
            .map_err(|_| anyhow!("--log-level {l:?}: use error, warn, info, debug or trace"))?,
        None => config.log.level,
    };
    init_logging(level);

    // Self-test credentials are signed with a key made for this process only: none outlives it.
    let selftest_key = match &config.selftest {
        Some(_) => Some(SelftestKey::new(
            Nonces::random_key().context("cannot generate the self-test key")?,
        )),
        None => None,
    };
    let credentials = Arc::new(with_selftest(
        credentials_or_generated(&config)?,
        selftest_key.as_ref(),
    ));
    let usage = usage_sink(&config.usage.output)?;
    let spec = config
        .server_spec(Arc::clone(&credentials), usage)
        .context("cannot prepare listeners")?;
    let server = io::start(spec).context("cannot start the server")?;
    for (transport, address) in server.bound() {
        tracing::info!(target: "turnstone::io", "listening on {} {address}", transport.name());
    }
    if let Some(nat) = server.nat_discovery() {
        let [_, second_port, second_ip, other] = nat.addresses();
        tracing::info!(target: "turnstone::io",
            "RFC 5780 NAT discovery: also listening on udp {second_port}, {second_ip} and {other}");
    }
    let admin_state = Arc::new(AdminState::new(install_recorder()));
    admin_state.set_issuer(issuer(&config, &credentials, &server));
    let _admin = match &config.admin {
        Some(admin) => {
            let handle = spawn_admin(admin.address, Arc::clone(&admin_state))
                .with_context(|| format!("cannot listen on admin address {}", admin.address))?;
            tracing::info!(target: "turnstone::io", "admin HTTP on http://{}", handle.address());
            Some(handle)
        }
        None => None,
    };
    let _selftest = match &selftest_key {
        Some(key) => {
            let site = SelftestSite::from_config(&config, server.bound(), key.clone())
                .context("cannot prepare the self-test page")?;
            match site {
                Some(site) => {
                    let handle =
                        spawn_selftest(site).context("cannot listen for the self-test page")?;
                    tracing::info!(target: "turnstone::selftest", "self-test page on {}", handle.url());
                    Some(handle)
                }
                None => None,
            }
        }
        None => None,
    };
    admin_state.set_ready(true);
    let grace = config.server.drain_grace;
    let mut current = credentials;
    signal_loop(&server, &admin_state, grace, |server| {
        let Some(path) = config_path else {
            tracing::info!(target: "turnstone::io", "SIGHUP: running on the built-in configuration; nothing to reload");
            return;
        };
        match reload(path, external, &current, selftest_key.as_ref()) {
            Ok((new_config, new_credentials, spec)) => {
                server.reload(spec);
                admin_state.set_issuer(issuer(&new_config, &new_credentials, server));
                current = new_credentials;
                tracing::info!(target: "turnstone::io", path = %path.display(), "configuration reloaded");
            }
            Err(e) => {
                tracing::error!(target: "turnstone::io", "reload refused, keeping the running configuration: {e:#}")
            }
        }
    })?;
    server.shutdown();
    tracing::info!(target: "turnstone::io", "stopped");
    Ok(())
}

fn load(config_path: Option<&Path>, external: Option<IpAddr>) -> anyhow::Result<Config> {
    let mut config = match config_path {
        Some(path) => Config::from_file(path)
            .map_err(|e| anyhow!("invalid configuration {}:\n{e}", path.display()))?,
        None => Config::embedded_default(),
    };
    if let Some(ip) = external {
        config.relay.external_address = Some(ip);
    }
    Ok(config)
}

/// A new configuration, checked completely before anything changes (a bad file changes nothing).
fn reload(
    path: &Path,
    external: Option<IpAddr>,
    current: &Arc<CredentialStore>,
    selftest_key: Option<&SelftestKey>,
) -> anyhow::Result<(Config, Arc<CredentialStore>, io::ServerSpec)> {
    let config = load(Some(path), external)?;
    let store = config.credential_store();
    // A server started without credentials keeps its generated secret; the self-test page's
    // key stays while its listener does (it changes only with a restart).
    let credentials = if store.has_credentials() {
        Arc::new(with_selftest(store, selftest_key))
    } else {
        Arc::clone(current)
    };
    let noop: UsageSink = Arc::new(|_| {});
    let spec = config
        .server_spec(Arc::clone(&credentials), noop)
        .context("cannot load TLS files")?;
    Ok((config, credentials, spec))
}

/// Waits for signals: SIGHUP calls `on_reload`; SIGTERM/SIGINT drain for `grace` (or until no
/// allocation is left, or a second signal), then return.
fn signal_loop(
    server: &RunningServer,
    admin: &AdminState,
    grace: Duration,
    mut on_reload: impl FnMut(&RunningServer),
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => on_reload(server),
            }
        }
        admin.set_ready(false);
        server.drain();
        tracing::info!(target: "turnstone::io", allocations = server.allocations(), grace = ?grace,
            "draining: new allocations refused, existing ones relay until they end or the grace period ends");
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            if server.allocations() == 0 {
                break;
            }
            tokio::select! {
                () = &mut deadline => break,
                _ = term.recv() => break,
                _ = int.recv() => break,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        Ok(())
    })
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
        super::credentials::mint(&secret, Some("demo"), 24 * 3600, clock::now().unix_secs)
            .context("cannot mint a demo credential")?;
    eprintln!(
        "No credentials configured: generated a TURN REST secret for this run.\n\
         A credential valid for 24 hours:\n  username: {username}\n  password: {password}\n\
         To keep credentials across restarts, set [auth] secrets = [\"...\"] or add [[auth.users]]\n\
         in a config file and run `turnstone serve --config FILE` (see conf/full.toml)."
    );
    Ok(store)
}

/// `store`, accepting self-test credentials when the self-test page runs.
fn with_selftest(store: CredentialStore, key: Option<&SelftestKey>) -> CredentialStore {
    match key {
        Some(key) => store.with_selftest(key.clone()),
        None => store,
    }
}

/// Where usage records go: log lines, stdout or an append-only file (one JSON object a line).
fn usage_sink(output: &UsageOutput) -> anyhow::Result<UsageSink> {
    Ok(match output {
        UsageOutput::Log => Arc::new(|record: UsageRecord| {
            tracing::info!(target: "turnstone::usage", "{}", record.to_json());
        }),
        UsageOutput::Stdout => Arc::new(|record: UsageRecord| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", record.to_json());
            let _ = out.flush();
        }),
        UsageOutput::File(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open usage file {}", path.display()))?;
            let file = Mutex::new(file);
            Arc::new(move |record: UsageRecord| {
                if let Ok(mut f) = file.lock()
                    && let Err(e) = writeln!(f, "{}", record.to_json())
                {
                    tracing::warn!(target: "turnstone::usage", error = %e, "cannot write usage record");
                }
            })
        }
    })
}

/// The `/credentials` issuer, when an API key is configured.
fn issuer(
    config: &Config,
    credentials: &Arc<CredentialStore>,
    server: &RunningServer,
) -> Option<CredentialIssuer> {
    let admin = config.admin.as_ref()?;
    let api_key = admin.api_key.clone()?;
    let host = admin.public_host.clone().or_else(|| {
        config
            .relay
            .external_address
            .or(config.relay.address)
            .map(host_of)
    });
    let uris = server
        .bound()
        .iter()
        .map(|(transport, addr)| {
            let host = host.clone().unwrap_or_else(|| host_of(addr.ip()));
            match transport {
                Transport::Udp => format!("turn:{host}:{}?transport=udp", addr.port()),
                Transport::Tcp => format!("turn:{host}:{}?transport=tcp", addr.port()),
                Transport::Tls => format!("turns:{host}:{}?transport=tcp", addr.port()),
            }
        })
        .collect();
    Some(CredentialIssuer {
        api_key,
        store: Arc::clone(credentials),
        ttl: admin.credential_ttl,
        uris,
    })
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
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
    // Colour only for a person at a terminal: a log file or journal gets plain text, and
    // NO_COLOR (https://no-color.org) turns it off anywhere.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}
