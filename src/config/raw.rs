//! Serde shapes of the TOML tables, with their defaults.
//!
//! Scalars are parsed here (durations, rates, sizes, addresses, port ranges, enums)
//! so that a bad value is reported at its key; checks across keys live in `validate`.

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::duration::parse_duration;
use super::types::{LogLevel, Protocol};
use super::units::{parse_bitrate, parse_byte_size};

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawServer {
    pub realm: String,
    /// `None`: the built-in `turnstone/<version>`; `Some("")`: no SOFTWARE attribute.
    pub software: Option<String>,
    pub workers: usize,
    pub drain_grace: Dur,
    pub alternate_server: Option<Addr>,
    /// RFC 5780: a second IP of this host; `None`: no NAT behaviour discovery.
    pub alternate_address: Option<Ip>,
    /// RFC 5780: the second port; `None`: the first UDP listener's port + 1.
    pub alternate_port: Option<u16>,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            realm: "turnstone".into(),
            software: None,
            workers: 0,
            drain_grace: Dur::secs(30),
            alternate_server: None,
            alternate_address: None,
            alternate_port: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLog {
    pub level: LogLevel,
}

/// One `[[listen]]` entry.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawListener {
    pub protocol: Protocol,
    /// `None`: `0.0.0.0` on the protocol's standard port.
    pub address: Option<Addr>,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
}

impl Default for RawListener {
    fn default() -> Self {
        Self {
            protocol: Protocol::Udp,
            address: None,
            certificate: None,
            private_key: None,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub enabled: bool,
    pub address: Addr,
    pub api_key: Option<String>,
    pub credential_ttl: Dur,
    pub public_host: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            enabled: true,
            address: Addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 9641))),
            api_key: None,
            credential_ttl: Dur::secs(86_400),
            public_host: None,
        }
    }
}

/// `[selftest]`: the public self-test page; the section's presence turns it on.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawSelftest {
    pub address: Option<Addr>,
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub public_host: Option<String>,
    pub credential_ttl: Dur,
    pub max_allocation_lifetime: Dur,
    pub max_allocations_per_ip: u32,
    pub max_allocations: u32,
    pub max_bitrate: Bitrate,
    pub requests_per_minute_per_ip: u32,
    pub test_duration: Dur,
    pub test_bytes: ByteSize,
}

impl Default for RawSelftest {
    fn default() -> Self {
        Self {
            address: None,
            certificate: None,
            private_key: None,
            public_host: None,
            // Long enough for a slow run of the page, short enough to be useless to keep.
            credential_ttl: Dur::secs(300),
            max_allocation_lifetime: Dur::secs(120),
            // The page holds at most three at once (gathering, then two per transport); a
            // few people behind one NAT address can run it together.
            max_allocations_per_ip: 8,
            max_allocations: 100,
            max_bitrate: Bitrate(5_000_000),
            requests_per_minute_per_ip: 30,
            test_duration: Dur::secs(4),
            test_bytes: ByteSize(1024 * 1024),
        }
    }
}

/// `[relay]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawRelay {
    pub address: Option<Ip>,
    pub address_v6: Option<Ip>,
    pub ports: PortRange,
    pub external_address: Option<Ip>,
    pub external_address_v6: Option<Ip>,
    pub fast_path: String,
    pub fast_path_interfaces: Vec<String>,
    pub tcp: bool,
}

impl Default for RawRelay {
    fn default() -> Self {
        // RFC 8656 §7.2 suggests relay ports in the dynamic range 49152–65535.
        Self {
            address: None,
            address_v6: None,
            ports: PortRange(49152..=65535),
            external_address: None,
            external_address_v6: None,
            fast_path: "auto".into(),
            fast_path_interfaces: Vec::new(),
            // RFC 6062 TCP relays let clients open TCP connections from this host: off
            // until an operator means it (see the README).
            tcp: false,
        }
    }
}

/// `[auth]`; `users` is read element by element by the loader.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawAuth {
    pub secrets: Vec<String>,
    pub users: Vec<RawUser>,
    pub nonce_lifetime: Dur,
}

impl Default for RawAuth {
    fn default() -> Self {
        Self {
            secrets: Vec::new(),
            users: Vec::new(),
            nonce_lifetime: Dur::secs(600),
        }
    }
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawUser {
    pub name: String,
    pub password: String,
}

/// `[peers]`; entries are parsed as CIDRs by `validate` so errors carry an index.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawPeers {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawLimits {
    pub allocation_lifetime: Dur,
    pub max_allocation_lifetime: Dur,
    pub permission_lifetime: Dur,
    pub channel_lifetime: Dur,
    pub max_allocations_per_user: u32,
    pub max_allocations: usize,
    pub max_permissions_per_allocation: usize,
    pub max_channels_per_allocation: usize,
    pub tcp_handshake_timeout: Dur,
    pub tcp_idle_timeout: Dur,
    pub max_tcp_connections: usize,
    pub max_tcp_connections_per_ip: u32,
    pub tcp_auth_timeout: Dur,
    pub max_peer_connections_per_allocation: usize,
    pub tcp_connect_timeout: Dur,
    pub max_allocation_bitrate: Bitrate,
    pub allocation_burst: ByteSize,
    pub max_total_bitrate: Bitrate,
    pub requests_per_second_per_ip: u32,
    pub request_burst_per_ip: u32,
    pub max_tracked_ips: usize,
    pub ipv6_prefix_length: u8,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            allocation_lifetime: Dur::secs(600), // RFC 8656 §7.2 default lifetime
            max_allocation_lifetime: Dur::secs(3600),
            permission_lifetime: Dur::secs(300), // RFC 8656 §9
            channel_lifetime: Dur::secs(600),    // RFC 8656 §12
            // Finite by default: a leaked credential cannot take every relay port.
            max_allocations_per_user: 100,
            max_allocations: 0,
            max_permissions_per_allocation: 64,
            max_channels_per_allocation: 64,
            tcp_handshake_timeout: Dur::secs(10),
            tcp_idle_timeout: Dur::secs(300),
            max_tcp_connections: 10_000,
            // A big office behind one NAT address stays under it; one host cannot hoard.
            max_tcp_connections_per_ip: 500,
            tcp_auth_timeout: Dur::secs(20),
            max_peer_connections_per_allocation: 16,
            // RFC 6062 §5.2: at least 30 s before a Connect is answered 447.
            tcp_connect_timeout: Dur::secs(30),
            max_allocation_bitrate: Bitrate(0),
            allocation_burst: ByteSize(0),
            max_total_bitrate: Bitrate(0),
            requests_per_second_per_ip: 50,
            request_burst_per_ip: 100,
            max_tracked_ips: 100_000,
            ipv6_prefix_length: 64, // RFC 4291 §2.5.4: one subnet, usually one host or home
        }
    }
}

/// `[usage]`: `"log"`, `"stdout"` or a file path.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct RawUsage {
    pub output: String,
}

impl Default for RawUsage {
    fn default() -> Self {
        Self {
            output: "log".into(),
        }
    }
}

/// The whole file once every section is read (the loader fills it).
#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub log: RawLog,
    /// `None`: no `[[listen]]` at all, so the defaults apply.
    pub listen: Option<Vec<RawListener>>,
    pub admin: RawAdmin,
    pub relay: RawRelay,
    pub auth: RawAuth,
    pub peers: RawPeers,
    pub limits: RawLimits,
    pub usage: RawUsage,
    /// `None`: no `[selftest]` section, the page is off.
    pub selftest: Option<RawSelftest>,
}

/// A duration written with a unit (`"10m"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Dur(pub Duration);

impl Dur {
    const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
}

/// A bit rate in bits per second (`"2Mbps"`, `"0"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Bitrate(pub u64);

/// A size in bytes (`"64KiB"`, `"0"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ByteSize(pub u64);

/// An `ip:port` socket address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Addr(pub SocketAddr);

/// A bare IP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ip(pub IpAddr);

/// A `"lo-hi"` port range with `1 <= lo <= hi`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PortRange(pub RangeInclusive<u16>);

/// Parses `"lo-hi"` (or a single port) into a non-empty range without port 0.
pub(super) fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, &'static str> {
    const SHAPE: &str = "expected \"lo-hi\" with 1 <= lo <= hi <= 65535, e.g. \"49152-65535\"";
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) else {
        return Err(SHAPE);
    };
    if lo == 0 {
        return Err("the range must not include port 0; start at 1 or above");
    }
    if lo > hi {
        return Err("the low port is above the high port; write \"lo-hi\" with lo <= hi");
    }
    Ok(lo..=hi)
}

/// A string visitor that parses with `parse` and reports `expecting` on a wrong type.
struct ParseVisitor<T, E> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, E>,
    _out: PhantomData<T>,
}

impl<T, E: fmt::Display> Visitor<'_> for ParseVisitor<T, E> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<Er: de::Error>(self, v: &str) -> Result<T, Er> {
        (self.parse)(v).map_err(Er::custom)
    }
}

fn parse_with<'de, D: Deserializer<'de>, T, E: fmt::Display>(
    d: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, E>,
) -> Result<T, D::Error> {
    d.deserialize_str(ParseVisitor {
        expecting,
        parse,
        _out: PhantomData,
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(d, "a duration with a unit, e.g. \"10m\"", |s| {
            parse_duration(s).map(Dur)
        })
    }
}

impl<'de> Deserialize<'de> for Bitrate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(d, "a bit rate with a unit, e.g. \"2Mbps\", or \"0\"", |s| {
            parse_bitrate(s).map(Bitrate)
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(d, "a size with a unit, e.g. \"64KiB\", or \"0\"", |s| {
            parse_byte_size(s).map(ByteSize)
        })
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(
            d,
            "an ip:port string, e.g. \"127.0.0.1:3478\" or \"[::1]:3478\"",
            |s| {
                s.trim().parse().map(Addr).map_err(
                    |_| "not an ip:port address; write e.g. \"127.0.0.1:3478\" or \"[::1]:3478\"",
                )
            },
        )
    }
}

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(d, "an IP address string, e.g. \"203.0.113.7\"", |s| {
            s.trim()
                .parse()
                .map(Ip)
                .map_err(|_| "not an IP address; write e.g. \"203.0.113.7\" or \"2001:db8::7\"")
        })
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(d, "a port range string, e.g. \"49152-65535\"", |s| {
            parse_port_range(s).map(PortRange)
        })
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(d, "one of \"udp\", \"tcp\", \"tls\"", str::parse)
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_with(
            d,
            "one of \"error\", \"warn\", \"info\", \"debug\", \"trace\"",
            str::parse,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_ranges_need_one_to_65535_in_order() {
        assert_eq!(parse_port_range("49152-65535"), Ok(49152..=65535));
        assert_eq!(parse_port_range("5000"), Ok(5000..=5000));
        assert_eq!(parse_port_range(" 10 - 20 "), Ok(10..=20));
        assert!(parse_port_range("0-10").unwrap_err().contains("port 0"));
        assert!(parse_port_range("20-10").unwrap_err().contains("lo <= hi"));
        assert!(parse_port_range("1-70000").unwrap_err().contains("65535"));
        assert!(parse_port_range("a-b").unwrap_err().contains("lo-hi"));
    }

    #[test]
    fn scalars_deserialize_from_strings_with_plain_messages() {
        let t: toml::Table = "ports = \"2-1\"\nlevel = 5".parse().unwrap();
        let e = toml::Value::try_into::<PortRange>(t["ports"].clone()).unwrap_err();
        assert!(e.message().contains("lo <= hi"), "{e}");
        let e = toml::Value::try_into::<LogLevel>(t["level"].clone()).unwrap_err();
        assert!(e.message().contains("expected one of \"error\""), "{e}");
    }
}
