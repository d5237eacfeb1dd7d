//! Checks of `[selftest]`: the public self-test page. Anyone may open it and get a self-test
//! credential, so every limit must be finite: no key may turn a cap off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ctx::Ctx;
use super::raw::RawSelftest;
use super::types::{AdminConfig, ListenerConfig, SelftestConfig, TlsFiles};
use super::validate_ops::check_public_host;

/// Longest self-test credential or allocation: the page needs a minute or two.
const MAX_SELFTEST_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest data-channel measurement per transport.
const MAX_TEST_DURATION: Duration = Duration::from_secs(30);
/// Most bytes per transport for the throughput measurement.
const MAX_TEST_BYTES: u64 = 16 * 1024 * 1024;
/// Smallest bandwidth cap: one full-size packet per second is too little to test anything.
const MIN_SELFTEST_BITRATE: u64 = 64_000;

pub(super) fn selftest(
    raw: Option<RawSelftest>,
    listeners: &[ListenerConfig],
    admin: Option<&AdminConfig>,
    base: &Path,
    ctx: &mut Ctx,
) -> Option<SelftestConfig> {
    let raw = raw?;
    let address = match raw.address {
        Some(a) => a.0,
        None => {
            if !ctx.failed("selftest.address") {
                ctx.push(
                    "selftest.address",
                    "required: the [selftest] section turns the self-test page on; give the \
                     ip:port to serve it on, or remove the section to keep it off",
                );
            }
            return None;
        }
    };
    check_address(address, listeners, admin, ctx);
    let tls = tls_files(raw.certificate, raw.private_key, base, ctx);
    if let Some(host) = &raw.public_host {
        check_public_host(host, "selftest.public_host", ctx);
    }
    for (key, value) in [
        ("credential_ttl", raw.credential_ttl.0),
        ("max_allocation_lifetime", raw.max_allocation_lifetime.0),
    ] {
        let path = format!("selftest.{key}");
        if ctx.failed(&path) {
            continue;
        }
        if value < Duration::from_secs(1) {
            ctx.push(path, "must be at least 1s (lifetimes count whole seconds)");
        } else if value > MAX_SELFTEST_LIFETIME {
            ctx.push(
                path,
                "must be at most 1h: anyone can get a self-test credential",
            );
        }
    }
    let test_duration = raw.test_duration.0;
    if !ctx.failed("selftest.test_duration")
        && !(Duration::from_secs(1)..=MAX_TEST_DURATION).contains(&test_duration)
    {
        ctx.push("selftest.test_duration", "must be from 1s to 30s");
    }
    if !ctx.failed("selftest.test_bytes") && !(1024..=MAX_TEST_BYTES).contains(&raw.test_bytes.0) {
        ctx.push("selftest.test_bytes", "must be from 1KiB to 16MiB");
    }
    if !ctx.failed("selftest.max_bitrate") && raw.max_bitrate.0 < MIN_SELFTEST_BITRATE {
        ctx.push(
            "selftest.max_bitrate",
            "must be at least 64kbps; self-test allocations are always capped (\"0\" is not \
             unlimited here)",
        );
    }
    for (key, value) in [
        ("max_allocations_per_ip", raw.max_allocations_per_ip),
        ("max_allocations", raw.max_allocations),
        ("requests_per_minute_per_ip", raw.requests_per_minute_per_ip),
    ] {
        let path = format!("selftest.{key}");
        if value == 0 && !ctx.failed(&path) {
            ctx.push(
                path,
                "must be at least 1; self-test limits cannot be turned off (remove the \
                 [selftest] section to turn the page off)",
            );
        }
    }
    Some(SelftestConfig {
        address,
        tls,
        public_host: raw.public_host,
        credential_ttl: raw.credential_ttl.0,
        max_allocation_lifetime: raw.max_allocation_lifetime.0,
        max_allocations_per_ip: raw.max_allocations_per_ip,
        max_allocations: raw.max_allocations,
        max_bitrate: raw.max_bitrate.0,
        requests_per_minute_per_ip: raw.requests_per_minute_per_ip,
        test_duration,
        test_bytes: raw.test_bytes.0,
    })
}

/// The page's listener is a TCP socket of its own: not a TCP/TLS client listener's address,
/// not the admin listener's (which must stay private).
fn check_address(
    address: std::net::SocketAddr,
    listeners: &[ListenerConfig],
    admin: Option<&AdminConfig>,
    ctx: &mut Ctx,
) {
    if address.port() == 0 || ctx.failed("selftest.address") {
        return;
    }
    if let Some(i) = listeners
        .iter()
        .position(|l| l.protocol.is_stream() && l.address == address)
    {
        let protocol = listeners[i].protocol;
        ctx.push(
            "selftest.address",
            format!("{address} is already used by listen[{i}] ({protocol})"),
        );
    } else if admin.is_some_and(|a| a.address == address) {
        ctx.push(
            "selftest.address",
            format!(
                "{address} is the admin listener's; the self-test page needs its own (the \
                 admin listener stays private)"
            ),
        );
    }
}

/// `certificate` and `private_key` come together (HTTPS) or not at all (HTTP).
fn tls_files(
    certificate: Option<PathBuf>,
    private_key: Option<PathBuf>,
    base: &Path,
    ctx: &mut Ctx,
) -> Option<TlsFiles> {
    match (certificate, private_key) {
        (None, None) => None,
        (Some(c), Some(k)) if !c.as_os_str().is_empty() && !k.as_os_str().is_empty() => {
            Some(TlsFiles {
                certificate: base.join(c),
                private_key: base.join(k),
            })
        }
        (c, k) => {
            for (key, value) in [("certificate", c), ("private_key", k)] {
                if value.is_none_or(|p| p.as_os_str().is_empty()) {
                    ctx.push(
                        format!("selftest.{key}"),
                        "missing or empty: HTTPS needs both certificate and private_key \
                         (PEM files); give neither for plain HTTP",
                    );
                }
            }
            None
        }
    }
}
