//! Checks of `[auth]`, `[peers]` and `[limits]`: who may relay, to where, how much, how fast.

use std::collections::HashMap;
use std::time::Duration;

use super::ctx::Ctx;
use super::duration::format_duration;
use super::raw::{Dur, RawAuth, RawLimits, RawPeers};
use super::types::{AuthConfig, LimitsConfig, PeersConfig, UserConfig};
use crate::core::cidr::Cidr;
use crate::io::MAX_STREAM_TIMEOUT;

/// RFC 8489 §14.3: USERNAME is under 509 bytes.
const MAX_USERNAME_BYTES: usize = 508;

/// RFC 8656 §12: channel numbers 0x4000–0x4FFF, so at most 4096 per allocation.
const MAX_CHANNELS: usize = 0x1000;

pub(super) fn auth(raw: RawAuth, ctx: &mut Ctx) -> AuthConfig {
    for (i, secret) in raw.secrets.iter().enumerate() {
        if secret.trim().is_empty() {
            ctx.push(
                format!("auth.secrets[{i}]"),
                "empty secret; remove it or give a value",
            );
        }
    }
    let nonce_lifetime = positive(raw.nonce_lifetime, "auth.nonce_lifetime", ctx);
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (i, user) in raw.users.iter().enumerate() {
        let name_path = format!("auth.users[{i}].name");
        let password_path = format!("auth.users[{i}].password");
        if user.name.is_empty() && !ctx.failed(&name_path) {
            ctx.push(name_path, "missing or empty; every user needs a name");
        } else if crate::auth::is_selftest_username(user.name.as_bytes()) {
            ctx.push(
                name_path,
                "names with the #selftest marker are reserved for the self-test page's \
                 credentials; choose another name",
            );
        } else if user.name.len() > MAX_USERNAME_BYTES {
            ctx.push(name_path, "too long; USERNAME must be under 509 bytes");
        } else if let Some(j) = first_index.get(user.name.as_str()) {
            let msg = format!(
                "duplicate user name {:?} (first at auth.users[{j}])",
                user.name
            );
            ctx.push(name_path, msg);
        } else if !user.name.is_empty() {
            first_index.insert(&user.name, i);
        }
        if user.password.is_empty() && !ctx.failed(&password_path) {
            ctx.push(
                password_path,
                "missing or empty; every user needs a password",
            );
        }
    }
    let users = raw
        .users
        .into_iter()
        .map(|u| UserConfig {
            name: u.name,
            password: u.password,
        })
        .collect();
    AuthConfig {
        secrets: raw.secrets,
        users,
        nonce_lifetime,
    }
}

pub(super) fn peers(raw: RawPeers, ctx: &mut Ctx) -> PeersConfig {
    PeersConfig {
        allow: cidrs(&raw.allow, "peers.allow", ctx),
        deny: cidrs(&raw.deny, "peers.deny", ctx),
    }
}

fn cidrs(raw: &[String], path: &str, ctx: &mut Ctx) -> Vec<Cidr> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, s)| match s.parse::<Cidr>() {
            Ok(c) => Some(c),
            Err(e) => {
                let msg =
                    format!("{s:?} is not a CIDR prefix or IP address ({e}); e.g. \"10.0.0.0/8\"");
                ctx.push(format!("{path}[{i}]"), msg);
                None
            }
        })
        .collect()
}

pub(super) fn limits(raw: RawLimits, ctx: &mut Ctx) -> LimitsConfig {
    // LIFETIME counts whole seconds (RFC 8656 §18), so lifetimes start at 1 s.
    let lifetime = |d: Dur, key: &str, ctx: &mut Ctx| {
        let path = format!("limits.{key}");
        if d.0 < Duration::from_secs(1) && !ctx.failed(&path) {
            ctx.push(path, "must be at least 1s (lifetimes count whole seconds)");
        }
        d.0
    };
    let allocation_lifetime = lifetime(raw.allocation_lifetime, "allocation_lifetime", ctx);
    let max_allocation_lifetime =
        lifetime(raw.max_allocation_lifetime, "max_allocation_lifetime", ctx);
    let checked =
        !ctx.failed("limits.allocation_lifetime") && !ctx.failed("limits.max_allocation_lifetime");
    if checked && allocation_lifetime > max_allocation_lifetime {
        let msg = format!(
            "{} is longer than limits.max_allocation_lifetime ({}); \
             the default lifetime cannot exceed the maximum",
            format_duration(allocation_lifetime),
            format_duration(max_allocation_lifetime),
        );
        ctx.push("limits.allocation_lifetime", msg);
    }
    if raw.max_permissions_per_allocation == 0 {
        ctx.push(
            "limits.max_permissions_per_allocation",
            "must be at least 1; an allocation without permissions relays nothing",
        );
    }
    if !(1..=MAX_CHANNELS).contains(&raw.max_channels_per_allocation) {
        ctx.push(
            "limits.max_channels_per_allocation",
            "must be from 1 to 4096 (the channel numbers 0x4000-0x4FFF)",
        );
    }
    if raw.max_tcp_connections == 0 {
        ctx.push(
            "limits.max_tcp_connections",
            "must be at least 1; remove the tcp and tls listeners to turn TCP off",
        );
    }
    if raw.max_tcp_connections_per_ip == 0 {
        ctx.push(
            "limits.max_tcp_connections_per_ip",
            "must be at least 1; remove the tcp and tls listeners to turn TCP off",
        );
    }
    if raw.max_peer_connections_per_allocation == 0 {
        ctx.push(
            "limits.max_peer_connections_per_allocation",
            "must be at least 1; set relay.tcp = false to turn TCP relays off",
        );
    }
    check_rates(&raw, ctx);
    LimitsConfig {
        allocation_lifetime,
        max_allocation_lifetime,
        permission_lifetime: lifetime(raw.permission_lifetime, "permission_lifetime", ctx),
        channel_lifetime: lifetime(raw.channel_lifetime, "channel_lifetime", ctx),
        max_allocations_per_user: raw.max_allocations_per_user,
        max_allocations: raw.max_allocations,
        max_permissions_per_allocation: raw.max_permissions_per_allocation,
        max_channels_per_allocation: raw.max_channels_per_allocation,
        tcp_handshake_timeout: stream_timeout(
            raw.tcp_handshake_timeout,
            "limits.tcp_handshake_timeout",
            ctx,
        ),
        tcp_idle_timeout: stream_timeout(raw.tcp_idle_timeout, "limits.tcp_idle_timeout", ctx),
        max_tcp_connections: raw.max_tcp_connections,
        max_tcp_connections_per_ip: raw.max_tcp_connections_per_ip,
        tcp_auth_timeout: stream_timeout(raw.tcp_auth_timeout, "limits.tcp_auth_timeout", ctx),
        max_peer_connections_per_allocation: raw.max_peer_connections_per_allocation,
        tcp_connect_timeout: stream_timeout(
            raw.tcp_connect_timeout,
            "limits.tcp_connect_timeout",
            ctx,
        ),
        max_allocation_bitrate: raw.max_allocation_bitrate.0,
        allocation_burst_bytes: raw.allocation_burst.0,
        max_total_bitrate: raw.max_total_bitrate.0,
        requests_per_second_per_ip: raw.requests_per_second_per_ip,
        request_burst_per_ip: raw.request_burst_per_ip,
        max_tracked_ips: raw.max_tracked_ips,
        ipv6_prefix_length: raw.ipv6_prefix_length,
    }
}

/// A full-size Ethernet packet: a token bucket shallower than this never passes one.
const MIN_BURST_BYTES: u64 = 1500;

/// Bandwidth caps and the per-IP request limiter.
fn check_rates(raw: &RawLimits, ctx: &mut Ctx) {
    // Token buckets count whole bytes per second, so a cap needs at least 8 bit/s.
    for (key, rate) in [
        ("max_allocation_bitrate", raw.max_allocation_bitrate.0),
        ("max_total_bitrate", raw.max_total_bitrate.0),
    ] {
        if (1..8).contains(&rate) {
            ctx.push(
                format!("limits.{key}"),
                "must be \"0\" (unlimited) or at least 8bps (one byte per second)",
            );
        }
    }
    let burst = raw.allocation_burst.0;
    if (1..MIN_BURST_BYTES).contains(&burst) {
        ctx.push(
            "limits.allocation_burst",
            "must be \"0\" (one second at the bitrate) or at least 1500B: a smaller bucket \
             never passes a full-size packet",
        );
    } else if burst != 0
        && raw.max_allocation_bitrate.0 == 0
        && !ctx.failed("limits.max_allocation_bitrate")
    {
        ctx.push(
            "limits.allocation_burst",
            "has no effect while limits.max_allocation_bitrate is \"0\" (unlimited); set a \
             bitrate or remove this key",
        );
    }
    if raw.request_burst_per_ip == 0
        && raw.requests_per_second_per_ip != 0
        && !ctx.failed("limits.requests_per_second_per_ip")
    {
        ctx.push(
            "limits.request_burst_per_ip",
            "must be at least 1 while limits.requests_per_second_per_ip is set; 0 would refuse \
             every request",
        );
    }
    if raw.max_tracked_ips == 0 {
        ctx.push(
            "limits.max_tracked_ips",
            "must be at least 1; set limits.requests_per_second_per_ip = 0 to turn the \
             limiter off",
        );
    }
    if !(32..=128).contains(&raw.ipv6_prefix_length) {
        ctx.push(
            "limits.ipv6_prefix_length",
            "must be 32 to 128; 64 counts each IPv6 subnet (usually one host or home) as one \
             source, 128 each address",
        );
    }
}

/// A TCP/TLS timeout: longer than zero, and at most [`MAX_STREAM_TIMEOUT`] (a day), since
/// each is added to the time a connection started and a deadline must stay representable.
fn stream_timeout(d: Dur, path: &str, ctx: &mut Ctx) -> Duration {
    if d.0 > MAX_STREAM_TIMEOUT && !ctx.failed(path) {
        let max = format_duration(MAX_STREAM_TIMEOUT);
        ctx.push(path, format!("must be at most {max}"));
    }
    positive(d, path, ctx)
}

/// A duration that must be longer than zero.
fn positive(d: Dur, path: &str, ctx: &mut Ctx) -> Duration {
    if d.0.is_zero() && !ctx.failed(path) {
        ctx.push(path, "must be longer than 0");
    }
    d.0
}
