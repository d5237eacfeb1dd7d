//! [`RawConfig`] → [`Config`]: checks across keys, defaults that depend on other
//! keys, and path resolution. Every problem is collected with its key path.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::ctx::Ctx;
use super::error::ConfigError;
use super::load::Loaded;
use super::raw::{Ip, RawListener, RawRelay, RawServer};
use super::types::{
    Config, ListenerConfig, LogConfig, Protocol, RelayConfig, ServerConfig, TlsFiles,
};
use super::validate_nat::nat_discovery;
use super::validate_ops::{admin, alternate_server, usage};
use super::validate_policy::{auth, limits, peers};
use super::validate_selftest::selftest;
use crate::io::FastPathMode;

/// Builds the typed config, or returns every problem (load problems first).
pub(super) fn validate(loaded: Loaded, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let Loaded {
        raw,
        errors,
        failed,
    } = loaded;
    let mut ctx = Ctx::new(errors, failed);
    let listeners = listeners(raw.listen, base_dir, &mut ctx);
    let admin = admin(raw.admin, &listeners, &mut ctx);
    let selftest = selftest(raw.selftest, &listeners, admin.as_ref(), base_dir, &mut ctx);
    let config = Config {
        server: server(raw.server, &listeners, &mut ctx),
        log: LogConfig {
            level: raw.log.level,
        },
        admin,
        listeners,
        relay: relay(raw.relay, &mut ctx),
        auth: auth(raw.auth, &mut ctx),
        peers: peers(raw.peers, &mut ctx),
        limits: limits(raw.limits, &mut ctx),
        usage: usage(raw.usage, base_dir, &mut ctx),
        selftest,
    };
    if config.relay.fast_path == FastPathMode::On && config.limits.bandwidth_capped() {
        ctx.push(
            "relay.fast_path",
            "\"on\" cannot be combined with limits.max_allocation_bitrate or \
             limits.max_total_bitrate: bandwidth caps are enforced in userspace, so the kernel \
             would relay nothing; use \"auto\" or remove the caps",
        );
    }
    ctx.finish(config)
}

/// RFC 8489 §14.9 and §14.14: REALM and SOFTWARE are under 128 characters.
const MAX_TEXT_CHARS: usize = 127;

fn server(raw: RawServer, listeners: &[ListenerConfig], ctx: &mut Ctx) -> ServerConfig {
    if raw.realm.trim().is_empty() {
        ctx.push(
            "server.realm",
            "must not be empty; clients need a realm to hash passwords",
        );
    } else if raw.realm.chars().count() > MAX_TEXT_CHARS {
        ctx.push(
            "server.realm",
            "too long; REALM must be under 128 characters",
        );
    }
    let software = match raw.software {
        None => Some(concat!("turnstone/", env!("CARGO_PKG_VERSION")).to_owned()),
        Some(s) if s.is_empty() => None,
        Some(s) => {
            if s.chars().count() > MAX_TEXT_CHARS {
                ctx.push(
                    "server.software",
                    "too long; SOFTWARE must be under 128 characters",
                );
            }
            Some(s)
        }
    };
    ServerConfig {
        realm: raw.realm,
        software,
        workers: raw.workers,
        // Zero is allowed: exit as soon as the signal arrives.
        drain_grace: raw.drain_grace.0,
        alternate_server: alternate_server(raw.alternate_server, listeners, ctx),
        nat_discovery: nat_discovery(raw.alternate_address, raw.alternate_port, listeners, ctx),
    }
}

/// With no `[[listen]]` at all: UDP and TCP on `0.0.0.0:3478`.
fn default_listeners() -> Vec<ListenerConfig> {
    [Protocol::Udp, Protocol::Tcp]
        .map(|protocol| ListenerConfig {
            protocol,
            address: SocketAddr::from((Ipv4Addr::UNSPECIFIED, protocol.default_port())),
            tls: None,
        })
        .to_vec()
}

fn listeners(raw: Option<Vec<RawListener>>, base: &Path, ctx: &mut Ctx) -> Vec<ListenerConfig> {
    let Some(raw) = raw else {
        return default_listeners();
    };
    if raw.is_empty() {
        ctx.push("listen", "at least one [[listen]] entry is required");
    }
    // (index, protocol, address) of entries whose protocol and address loaded cleanly.
    let mut seen: Vec<(usize, Protocol, SocketAddr)> = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, l) in raw.into_iter().enumerate() {
        let path = format!("listen[{i}]");
        let protocol_ok = !ctx.failed(&format!("{path}.protocol"));
        let address_ok = !ctx.failed(&format!("{path}.address"));
        let protocol = l.protocol;
        let address = l.address.map_or_else(
            || SocketAddr::from((Ipv4Addr::UNSPECIFIED, protocol.default_port())),
            |a| a.0,
        );
        let tls = match protocol {
            Protocol::Tls => {
                let certificate = file(l.certificate, &format!("{path}.certificate"), base, ctx);
                let private_key = file(l.private_key, &format!("{path}.private_key"), base, ctx);
                certificate
                    .zip(private_key)
                    .map(|(certificate, private_key)| TlsFiles {
                        certificate,
                        private_key,
                    })
            }
            Protocol::Udp | Protocol::Tcp if protocol_ok => {
                for (key, value) in [
                    ("certificate", &l.certificate),
                    ("private_key", &l.private_key),
                ] {
                    if value.is_some() {
                        let msg =
                            format!("only tls listeners take a {key}; this one is {protocol}");
                        ctx.push(format!("{path}.{key}"), msg);
                    }
                }
                None
            }
            Protocol::Udp | Protocol::Tcp => None,
        };
        // Port 0 asks the kernel for a fresh port, so it never collides.
        if protocol_ok && address_ok && address.port() != 0 {
            check_duplicate(&seen, i, protocol, address, ctx);
            seen.push((i, protocol, address));
        }
        out.push(ListenerConfig {
            protocol,
            address,
            tls,
        });
    }
    out
}

fn check_duplicate(
    seen: &[(usize, Protocol, SocketAddr)],
    i: usize,
    protocol: Protocol,
    address: SocketAddr,
    ctx: &mut Ctx,
) {
    for &(j, p, _) in seen.iter().filter(|(_, _, a)| *a == address) {
        if p == protocol {
            let msg = format!("duplicate listener: listen[{j}] is already {protocol} {address}");
            ctx.push(format!("listen[{i}]"), msg);
            return;
        }
        if p.is_stream() && protocol.is_stream() {
            let msg = format!(
                "{p} (listen[{j}]) and {protocol} cannot share {address}: both are TCP sockets"
            );
            ctx.push(format!("listen[{i}].address"), msg);
            return;
        }
    }
}

/// A required file path of a TLS listener, resolved against the config's directory.
fn file(raw: Option<PathBuf>, path: &str, base: &Path, ctx: &mut Ctx) -> Option<PathBuf> {
    match raw {
        _ if ctx.failed(path) => None,
        None => {
            ctx.push(path, "required for a tls listener (path to a PEM file)");
            None
        }
        Some(p) if p.as_os_str().is_empty() => {
            ctx.push(path, "empty file path; give the path to a PEM file");
            None
        }
        Some(p) => Some(base.join(p)),
    }
}

fn relay(raw: RawRelay, ctx: &mut Ctx) -> RelayConfig {
    let address = relay_ip(raw.address, "relay.address", false, ctx);
    let address_v6 = relay_ip(raw.address_v6, "relay.address_v6", true, ctx);
    let external_address = relay_ip(raw.external_address, "relay.external_address", false, ctx);
    let external_address_v6 = relay_ip(
        raw.external_address_v6,
        "relay.external_address_v6",
        true,
        ctx,
    );
    // A wildcard relay bind is refused: hairpinning to our own external address would send
    // to 0.0.0.0:port, which Linux delivers to loopback, and the relay's own address would
    // not be one concrete address the peer policy can recognise.
    if address.is_some_and(|a| a.is_unspecified()) {
        ctx.push(
            "relay.address",
            "0.0.0.0 is not allowed: relay sockets bind one concrete address; give this \
             host's address (relay.external_address is what clients are told behind 1:1 NAT)",
        );
    }
    if address_v6.is_some_and(|a| a.is_unspecified()) {
        ctx.push(
            "relay.address_v6",
            ":: is not allowed: relay sockets bind one concrete address; give this host's \
             address (relay.external_address_v6 is what clients are told behind 1:1 NAT)",
        );
    }
    for (key, ip) in [
        ("external_address", external_address),
        ("external_address_v6", external_address_v6),
    ] {
        if ip.is_some_and(|a| a.is_unspecified()) {
            ctx.push(
                format!("relay.{key}"),
                "must be a concrete address clients can reach",
            );
        }
    }
    if external_address_v6.is_some() && raw.address_v6.is_none() && !ctx.failed("relay.address_v6")
    {
        ctx.push(
            "relay.external_address_v6",
            "needs relay.address_v6: IPv6 relays are off without it",
        );
    }
    let fast_path = match raw.fast_path.as_str() {
        "off" => FastPathMode::Off,
        "auto" => FastPathMode::Auto,
        "on" => FastPathMode::On,
        other => {
            ctx.push(
                "relay.fast_path",
                format!("\"{other}\" is not one of \"off\", \"auto\", \"on\""),
            );
            FastPathMode::Off
        }
    };
    for name in &raw.fast_path_interfaces {
        if name.is_empty() || name.len() > 15 || name.contains('/') {
            ctx.push(
                "relay.fast_path_interfaces",
                format!("\"{name}\" is not an interface name"),
            );
        }
    }
    RelayConfig {
        address,
        address_v6,
        ports: raw.ports.0,
        external_address,
        external_address_v6,
        fast_path,
        fast_path_interfaces: raw.fast_path_interfaces,
        tcp: raw.tcp,
    }
}

/// Checks the family of a relay address and that it is unicast.
fn relay_ip(raw: Option<Ip>, path: &str, want_v6: bool, ctx: &mut Ctx) -> Option<IpAddr> {
    let ip = raw?.0;
    if ip.is_ipv6() != want_v6 {
        let msg = match (want_v6, path) {
            (true, _) => {
                let v4_key = path.trim_end_matches("_v6");
                format!("must be an IPv6 address; put IPv4 in {v4_key}")
            }
            (false, "relay.address") => {
                "must be an IPv4 address; put IPv6 in relay.address_v6".to_owned()
            }
            (false, _) => format!(
                "must be an IPv4 address (the same family as relay.address); \
                 put IPv6 in {path}_v6"
            ),
        };
        ctx.push(path, msg);
        return None;
    }
    let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
    if ip.is_multicast() || broadcast {
        ctx.push(path, "must be a unicast address");
        return None;
    }
    Some(ip)
}
