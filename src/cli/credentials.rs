//! `turnstone credentials`: TURN REST API credentials and the iceServers JSON a browser app
//! passes to `RTCPeerConnection`.

use anyhow::{Context, bail};
use clap::Args;

use crate::auth::{rest_password, rest_username};
use crate::config::parse_duration;
use crate::io::clock;

/// Arguments of `turnstone credentials`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The shared secret (the first of [auth] secrets).
    #[arg(long, env = "TURNSTONE_SECRET", hide_env_values = true)]
    secret: String,
    /// The user name embedded in the credential (shown in usage records).
    #[arg(long)]
    user: Option<String>,
    /// How long the credential stays valid, e.g. 1h, 24h.
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// TURN URIs to list in iceServers, e.g. turn:turn.example.com:3478?transport=udp (repeatable).
    #[arg(long = "uri")]
    uris: Vec<String>,
}

pub(super) fn run(args: &CredentialsArgs) -> anyhow::Result<()> {
    if args.secret.is_empty() {
        bail!("the secret must not be empty");
    }
    let ttl = parse_duration(&args.ttl)
        .with_context(|| format!("--ttl {:?} is not a duration like 24h", args.ttl))?;
    let (username, password) = mint(
        &args.secret,
        args.user.as_deref(),
        ttl.as_secs(),
        clock::now().unix_secs,
    )
    .with_context(|| format!("--ttl {} is too long", args.ttl))?;
    let uris = if args.uris.is_empty() {
        vec!["turn:YOUR-SERVER:3478".to_owned()]
    } else {
        args.uris.clone()
    };
    let text = format!(
        "username: {username}\npassword: {password}\nexpires:  in {} s\n{}\n",
        ttl.as_secs(),
        ice_servers_json(&uris, &username, &password)
    );
    // A closed pipe (`| head`) is not worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    Ok(())
}

/// The expiry would not fit in a Unix time.
#[derive(Debug, thiserror::Error)]
#[error("the expiry does not fit in 64-bit Unix seconds")]
pub(crate) struct TtlOverflow;

/// A REST credential valid for `ttl_secs` from `unix_now`.
pub(crate) fn mint(
    secret: &str,
    user: Option<&str>,
    ttl_secs: u64,
    unix_now: u64,
) -> Result<(String, String), TtlOverflow> {
    let expiry = unix_now.checked_add(ttl_secs).ok_or(TtlOverflow)?;
    let username = rest_username(expiry, user);
    let password = rest_password(secret.as_bytes(), &username);
    Ok((username, password))
}

/// The `iceServers` array for `RTCPeerConnection`.
pub(crate) fn ice_servers_json(uris: &[String], username: &str, password: &str) -> String {
    let urls: Vec<String> = uris
        .iter()
        .map(|u| format!("\"{}\"", json_escape(u)))
        .collect();
    format!(
        "{{\"iceServers\":[{{\"urls\":[{}],\"username\":\"{}\",\"credential\":\"{}\"}}]}}",
        urls.join(","),
        json_escape(username),
        json_escape(password)
    )
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_credential_has_expiry_user_and_hmac_password() {
        let (u, p) = mint("secret", Some("alice"), 100, 1_700_000_000 - 100).unwrap();
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn a_ttl_past_the_end_of_unix_time_is_refused_not_wrapped() {
        assert!(mint("secret", None, u64::MAX, 1_700_000_000).is_err());
        assert!(mint("secret", None, u64::MAX - 1_700_000_000, 1_700_000_000).is_ok());
    }

    #[test]
    fn ice_servers_json_lists_every_uri() {
        let j = ice_servers_json(&["turn:a:3478".into(), "turns:a:5349".into()], "u", "p\"");
        assert_eq!(
            j,
            r#"{"iceServers":[{"urls":["turn:a:3478","turns:a:5349"],"username":"u","credential":"p\""}]}"#
        );
    }
}
