//! `turnstone probe`: tells, in plain words, why TURN connectivity to a server fails.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::config::parse_duration;
use crate::diag::{self, Credentials, ProbeConfig, Target};
use crate::io::clock;

/// Arguments of `turnstone probe`.
///
/// `--user` and `--password` take precedence over `--secret`, so an exported
/// `TURNSTONE_SECRET` does not get in the way.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The server: turn:HOST[:PORT][?transport=udp|tcp], turns:HOST[:PORT] (TLS), or
    /// stun:HOST[:PORT] (Binding only). Default ports: 3478, and 5349 for turns:.
    #[arg(value_name = "URI")]
    uri: String,
    /// Long-term credential user name (RFC 8489 §9.2), or a REST username minted elsewhere;
    /// needs --password. Takes precedence over --secret.
    #[arg(long)]
    user: Option<String>,
    /// Password of --user.
    #[arg(long, env = "TURNSTONE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// TURN REST API shared secret: the probe mints "<expiry>:<rest-user>" valid for an hour.
    #[arg(long, env = "TURNSTONE_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// User part of the REST username minted from --secret.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "probe",
        requires = "secret"
    )]
    rest_user: String,
    /// How long each step waits for an answer, e.g. 3s, 500ms.
    #[arg(long, default_value = "3s")]
    timeout: String,
    /// Accept any TLS certificate (self-signed, expired, wrong name); its problems are still
    /// reported.
    #[arg(long)]
    insecure: bool,
    /// Trust this PEM CA file instead of the system bundle (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Also run RFC 5780 NAT behaviour discovery (needs a server that sends OTHER-ADDRESS).
    #[arg(long)]
    nat: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

pub(super) fn run(args: &ProbeArgs) -> anyhow::Result<()> {
    let config = probe_config(args, clock::now().unix_secs)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(diag::probe(&config));
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        report.to_text()
    };
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    match report.first_failure() {
        // Exit 2: nothing failed, but nothing showed the relay works either.
        None if report.relay_untested() => Err(super::Exit {
            code: 2,
            message: "the relay path was not tested (see the relay step)".into(),
        }
        .into()),
        None => Ok(()),
        Some(step) => bail!("the {} step failed", step.step.name()),
    }
}

/// The probe's configuration from the flags, at `unix_now`.
fn probe_config(args: &ProbeArgs, unix_now: u64) -> anyhow::Result<ProbeConfig> {
    let target: Target = args
        .uri
        .parse()
        .with_context(|| format!("{:?} is not a STUN/TURN URI", args.uri))?;
    let timeout = parse_duration(&args.timeout)
        .with_context(|| format!("--timeout {:?} is not a duration like 3s", args.timeout))?;
    if timeout.is_zero() {
        bail!("--timeout must be more than zero");
    }
    let credentials = match (&args.user, &args.password, &args.secret) {
        (Some(username), Some(password), _) => Credentials::Static {
            username: username.clone(),
            password: password.clone(),
        },
        (Some(_), None, _) => bail!("--user needs --password (or TURNSTONE_PASSWORD)"),
        (None, _, Some(secret)) if secret.is_empty() => bail!("--secret must not be empty"),
        (None, _, Some(secret)) => Credentials::Rest {
            secret: secret.clone(),
            user: args.rest_user.clone(),
        },
        _ => Credentials::None,
    };
    let mut config = ProbeConfig::new(target, unix_now);
    config.credentials = credentials;
    config.timeout = timeout;
    config.insecure = args.insecure;
    config.ca_file = args.ca_file.clone();
    config.nat = args.nat;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::diag::Transport;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ProbeArgs,
    }

    fn parse(argv: &[&str]) -> Result<ProbeArgs, clap::Error> {
        Wrapper::try_parse_from(std::iter::once("probe").chain(argv.iter().copied()))
            .map(|w| w.args)
    }

    #[test]
    fn flags_become_the_probe_config() {
        let args = parse(&[
            "turns:turn.example.com",
            "--user",
            "u",
            "--password",
            "p",
            "--timeout",
            "500ms",
            "--insecure",
            "--nat",
        ])
        .unwrap();
        let c = probe_config(&args, 1000).unwrap();
        assert_eq!(c.target.transport, Transport::Tls);
        assert_eq!(c.target.port, 5349);
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert!(c.insecure && c.nat);
        assert_eq!(
            c.credentials,
            Credentials::Static {
                username: "u".into(),
                password: "p".into()
            }
        );
    }

    #[test]
    fn a_secret_mints_rest_credentials_unless_a_user_is_given() {
        let args = parse(&["turn:x", "--secret", "s", "--rest-user", "ops"]).unwrap();
        let c = probe_config(&args, 1000).unwrap();
        assert_eq!(
            c.credentials,
            Credentials::Rest {
                secret: "s".into(),
                user: "ops".into()
            }
        );
        let both = parse(&["turn:x", "--secret", "s", "--user", "u", "--password", "p"]).unwrap();
        assert!(matches!(
            probe_config(&both, 0).unwrap().credentials,
            Credentials::Static { .. }
        ));
        assert!(parse(&["turn:x", "--rest-user", "ops"]).is_err());
    }

    #[test]
    fn bad_uris_and_timeouts_are_refused_with_the_reason() {
        let args = parse(&["http://x"]).unwrap();
        let err = format!("{:#}", probe_config(&args, 0).unwrap_err());
        assert!(err.contains("stun:, stuns:, turn: or turns:"), "{err}");
        let args = parse(&["turn:x", "--timeout", "soon"]).unwrap();
        assert!(probe_config(&args, 0).is_err());
        let args = parse(&["turn:x", "--timeout", "0s"]).unwrap();
        assert!(probe_config(&args, 0).is_err());
    }
}
