//! Checks of the operational keys: `[admin]`, `[usage]` and the drain settings of
//! `[server]`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use super::ctx::Ctx;
use super::raw::{Addr, RawAdmin, RawUsage};
use super::types::{AdminConfig, ListenerConfig, UsageConfig, UsageOutput};

/// Shortest accepted `admin.api_key`: long enough that guessing is hopeless.
const MIN_API_KEY_CHARS: usize = 16;

/// RFC 1035 §2.3.4: a host name is at most 253 characters, a label at most 63.
const MAX_HOST_CHARS: usize = 253;
const MAX_LABEL_CHARS: usize = 63;

pub(super) fn admin(
    raw: RawAdmin,
    listeners: &[ListenerConfig],
    ctx: &mut Ctx,
) -> Option<AdminConfig> {
    if !raw.enabled {
        return None;
    }
    let address = raw.address.0;
    let clash = listeners
        .iter()
        .position(|l| l.protocol.is_stream() && l.address == address && address.port() != 0);
    if let Some(i) = clash.filter(|_| !ctx.failed("admin.address")) {
        let protocol = listeners[i].protocol;
        ctx.push(
            "admin.address",
            format!("{address} is already used by listen[{i}] ({protocol})"),
        );
    }
    if let Some(key) = &raw.api_key {
        if key.trim().is_empty() {
            ctx.push(
                "admin.api_key",
                "empty; give at least 16 characters, or remove the key to turn /credentials off",
            );
        } else if key.chars().count() < MIN_API_KEY_CHARS {
            ctx.push(
                "admin.api_key",
                "too short; use at least 16 characters (a long random string)",
            );
        }
    }
    // The credentials' expiry is a Unix time in whole seconds (TURN REST API usernames).
    let path = "admin.credential_ttl";
    if raw.credential_ttl.0 < Duration::from_secs(1) && !ctx.failed(path) {
        ctx.push(
            path,
            "must be at least 1s (credentials expire on whole seconds)",
        );
    }
    if let Some(host) = &raw.public_host {
        check_public_host(host, "admin.public_host", ctx);
    }
    Some(AdminConfig {
        address,
        api_key: raw.api_key,
        credential_ttl: raw.credential_ttl.0,
        public_host: raw.public_host,
    })
}

/// The host put in `turn:host:port` URLs: a DNS name or a concrete IP, no scheme or port.
pub(super) fn check_public_host(host: &str, path: &str, ctx: &mut Ctx) {
    if host.trim().is_empty() {
        ctx.push(
            path,
            "empty; give a host name or IP address, or remove the key to use the relay address",
        );
    } else if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() {
            ctx.push(path, "must be an address clients can reach");
        }
    } else if !is_host_name(host) {
        ctx.push(
            path,
            format!(
                "{host:?} is not a host name or IP address; write e.g. \"turn.example.com\" \
                 (no scheme, port or brackets)"
            ),
        );
    }
}

/// Letters, digits and hyphens in dot-separated labels, none starting or ending with `-`.
fn is_host_name(host: &str) -> bool {
    host.len() <= MAX_HOST_CHARS
        && host.split('.').all(|label| {
            (1..=MAX_LABEL_CHARS).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `server.alternate_server`: a reachable address that is not one of our own listeners.
pub(super) fn alternate_server(
    raw: Option<Addr>,
    listeners: &[ListenerConfig],
    ctx: &mut Ctx,
) -> Option<SocketAddr> {
    let address = raw?.0;
    let path = "server.alternate_server";
    let ip = address.ip();
    let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
    // RFC 8489 §14.15: ALTERNATE-SERVER is where the client retries, so it must be a
    // concrete unicast transport address.
    if ip.is_unspecified() || ip.is_multicast() || broadcast || address.port() == 0 {
        ctx.push(
            path,
            "must be a unicast ip:port clients can reach (not 0.0.0.0, ::, or port 0)",
        );
    } else if let Some(i) = listeners.iter().position(|l| l.address == address) {
        ctx.push(
            path,
            format!(
                "{address} is this server's own listen[{i}]; while draining, clients would \
                 be sent straight back"
            ),
        );
    }
    Some(address)
}

pub(super) fn usage(raw: RawUsage, base: &Path, ctx: &mut Ctx) -> UsageConfig {
    let path = "usage.output";
    let output = match raw.output.as_str() {
        "log" => UsageOutput::Log,
        "stdout" => UsageOutput::Stdout,
        s if s.trim().is_empty() => {
            ctx.push(path, "empty; use \"log\", \"stdout\" or a file path");
            UsageOutput::Log
        }
        s if s.eq_ignore_ascii_case("log") || s.eq_ignore_ascii_case("stdout") => {
            let lower = s.to_ascii_lowercase();
            ctx.push(
                path,
                format!("write {lower:?} in lowercase, or \"./{s}\" for a file of that name"),
            );
            UsageOutput::Log
        }
        s if s.ends_with('/') || s.ends_with(std::path::MAIN_SEPARATOR) => {
            ctx.push(path, "names a directory; give a file to append to");
            UsageOutput::Log
        }
        s => UsageOutput::File(base.join(s)),
    };
    UsageConfig { output }
}
