//! The validated, typed configuration handed to the rest of the server.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::core::cidr::Cidr;

/// The whole server configuration, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `[server]`: realm, SOFTWARE text, worker count.
    pub server: ServerConfig,
    /// `[log]`: log level.
    pub log: LogConfig,
    /// `[[listen]]`: where clients connect; never empty.
    pub listeners: Vec<ListenerConfig>,
    /// `[admin]`: the HTTP admin listener, `None` when `enabled = false`.
    pub admin: Option<AdminConfig>,
    /// `[relay]`: relay socket addresses and ports.
    pub relay: RelayConfig,
    /// `[auth]`: REST API secrets and static users.
    pub auth: AuthConfig,
    /// `[peers]`: exceptions to the built-in peer deny list.
    pub peers: PeersConfig,
    /// `[limits]`: lifetimes, quotas, rates and timeouts.
    pub limits: LimitsConfig,
    /// `[usage]`: where usage records (one per finished allocation) go.
    pub usage: UsageConfig,
    /// `[selftest]`: the public self-test page; `None` (no section): off.
    pub selftest: Option<SelftestConfig>,
}

/// `[selftest]`: a page anyone may open to test, from their browser, whether calls through
/// this server work from their network; its own listener, HTTP or HTTPS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelftestConfig {
    /// Where the page is served (`/`).
    pub address: SocketAddr,
    /// Certificate and key for HTTPS; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Host name or IP put in the `stun:`/`turn:`/`turns:` URLs the page uses; `None`:
    /// `admin.public_host`, else `relay.external_address`, else `relay.address`, else the
    /// listener's IP.
    pub public_host: Option<String>,
    /// Lifetime of a self-test credential (at most 1 h).
    pub credential_ttl: Duration,
    /// Longest lifetime of a self-test allocation.
    pub max_allocation_lifetime: Duration,
    /// Self-test allocations one source (IPv4 address or IPv6 prefix) holds at once.
    pub max_allocations_per_ip: u32,
    /// Self-test allocations the server holds at once.
    pub max_allocations: u32,
    /// Bandwidth cap of each self-test allocation, bits per second (never 0).
    pub max_bitrate: u64,
    /// Requests to the page's listener per source per minute (page, credential, report).
    pub requests_per_minute_per_ip: u32,
    /// How long the page measures each transport's data channel.
    pub test_duration: Duration,
    /// Most bytes the page sends per transport for the throughput measurement.
    pub test_bytes: u64,
}

/// `[server]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// REALM for long-term credentials (RFC 8489 §9.2); default `"turnstone"`.
    pub realm: String,
    /// SOFTWARE attribute text; `None` omits the attribute (configured as `""`).
    pub software: Option<String>,
    /// Workers (each a UDP data-plane thread plus a TCP/TLS thread); 0 means one per core.
    pub workers: usize,
    /// After SIGTERM, how long existing allocations keep relaying before exit; default 30 s.
    pub drain_grace: Duration,
    /// While draining, Allocate gets 300 (Try Alternate) with this ALTERNATE-SERVER
    /// (RFC 8656 §7.2); `None`: 508 (Insufficient Capacity).
    pub alternate_server: Option<SocketAddr>,
    /// RFC 5780 NAT behaviour discovery (`alternate_address`, `alternate_port`); `None`: off.
    pub nat_discovery: Option<NatDiscoveryConfig>,
}

/// RFC 5780 NAT behaviour discovery: a second IP and a second port beside the first UDP
/// listener, so that the server listens on every pairing of the two IPs with the two ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatDiscoveryConfig {
    /// Index in [`Config::listeners`] of the primary listener: the first UDP one.
    pub listener: usize,
    /// `server.alternate_address`: a second IP of this host, of the listener's family.
    pub address: IpAddr,
    /// `server.alternate_port`, by default the listener's port + 1; 0 (a free port chosen at
    /// start) only when the listener's port is 0 too.
    pub port: u16,
}

/// `[log]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Most verbose level that is logged.
    pub level: LogLevel,
}

/// A log verbosity level, from least to most verbose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// The default: start-up, shutdown and notable events.
    #[default]
    Info,
    /// Per-request detail.
    Debug,
    /// Per-packet detail.
    Trace,
}

/// Why a log level name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown log level; use one of error, warn, info, debug, trace")]
pub struct LogLevelError;

impl LogLevel {
    /// The lowercase name used in the configuration and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

impl FromStr for LogLevel {
    type Err = LogLevelError;

    /// Accepts the lowercase names, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            Self::Error,
            Self::Warn,
            Self::Info,
            Self::Debug,
            Self::Trace,
        ]
        .into_iter()
        .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
        .ok_or(LogLevelError)
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transport of a client listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// STUN/TURN over UDP.
    Udp,
    /// STUN/TURN over TCP (RFC 8656 §3.1).
    Tcp,
    /// STUN/TURN over TLS over TCP.
    Tls,
}

/// Why a protocol name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown protocol; use one of udp, tcp, tls")]
pub struct ProtocolError;

impl Protocol {
    /// The lowercase name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// Whether the listener is a TCP socket (plain or with TLS on top).
    pub fn is_stream(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }

    /// The standard port: 3478 for UDP and TCP, 5349 for TLS (RFC 8489 §8).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 3478,
            Self::Tls => 5349,
        }
    }
}

impl FromStr for Protocol {
    type Err = ProtocolError;

    /// Accepts `udp`, `tcp`, `tls`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Udp, Self::Tcp, Self::Tls]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(ProtocolError)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[listen]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Transport.
    pub protocol: Protocol,
    /// Local address to bind (port 0 picks a free port).
    pub address: SocketAddr,
    /// Certificate and key; `Some` exactly when `protocol` is [`Protocol::Tls`].
    pub tls: Option<TlsFiles>,
}

/// PEM files of a TLS listener, resolved against the config file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM), leaf first.
    pub certificate: PathBuf,
    /// Private key (PEM).
    pub private_key: PathBuf,
}

/// `[admin]`: the HTTP listener for health, readiness, metrics and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Local address to bind; default `127.0.0.1:9641`.
    pub address: SocketAddr,
    /// Key that `GET /credentials` requires; `None` turns the endpoint off. At least
    /// 16 characters; hidden from `Debug`.
    pub api_key: Option<String>,
    /// Lifetime of the credentials `/credentials` mints; default 24 h.
    pub credential_ttl: Duration,
    /// Host name or IP put in the `turn:`/`turns:` URLs `/credentials` returns; `None`:
    /// `relay.external_address`, else `relay.address`, else the listener's IP.
    pub public_host: Option<String>,
}

impl fmt::Debug for AdminConfig {
    /// Keeps the API key out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match self.api_key {
            Some(_) => "Some(hidden)",
            None => "None",
        };
        f.debug_struct("AdminConfig")
            .field("address", &self.address)
            .field("api_key", &format_args!("{key}"))
            .field("credential_ttl", &self.credential_ttl)
            .field("public_host", &self.public_host)
            .finish()
    }
}

/// `[relay]`: where relayed transport addresses live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayConfig {
    /// IPv4 address relay sockets bind to; `None` lets the server choose at start.
    pub address: Option<IpAddr>,
    /// IPv6 address relay sockets bind to; `None` disables IPv6 relays.
    pub address_v6: Option<IpAddr>,
    /// UDP ports relay sockets may use; never empty, never containing 0.
    pub ports: RangeInclusive<u16>,
    /// IPv4 address advertised in XOR-RELAYED-ADDRESS instead of `address` (1:1 NAT).
    pub external_address: Option<IpAddr>,
    /// IPv6 address advertised instead of `address_v6`.
    pub external_address_v6: Option<IpAddr>,
    /// The kernel fast path: off, auto (when it loads) or on (required).
    pub fast_path: crate::io::FastPathMode,
    /// Interfaces to attach it to; empty: those holding the listener and relay addresses.
    pub fast_path_interfaces: Vec<String>,
    /// RFC 6062 TCP relays (Allocate with REQUESTED-TRANSPORT TCP over TCP/TLS); off by default.
    pub tcp: bool,
}

/// `[auth]`: long-term credentials (RFC 8489 §9.2).
#[derive(Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// TURN REST API shared secrets: any of them verifies, the first mints.
    pub secrets: Vec<String>,
    /// Static users.
    pub users: Vec<UserConfig>,
    /// How long a nonce stays valid before the client gets 438 (Stale Nonce).
    pub nonce_lifetime: Duration,
}

impl fmt::Debug for AuthConfig {
    /// Keeps the secrets out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secrets", &format_args!("[{} hidden]", self.secrets.len()))
            .field("users", &self.users)
            .field("nonce_lifetime", &self.nonce_lifetime)
            .finish()
    }
}

/// One `[[auth.users]]` entry.
#[derive(Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// User name, unique and non-empty.
    pub name: String,
    /// Password, non-empty.
    pub password: String,
}

impl fmt::Debug for UserConfig {
    /// Keeps the password out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `[peers]`: which peer addresses clients may relay to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeersConfig {
    /// Prefixes allowed even though the built-in deny list covers them.
    pub allow: Vec<Cidr>,
    /// Prefixes denied in addition to the built-in deny list.
    pub deny: Vec<Cidr>,
}

/// `[limits]`: lifetimes, quotas, rates and timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Allocation lifetime when the client asks for none (RFC 8656 §7.2: 600 s).
    pub allocation_lifetime: Duration,
    /// Longest lifetime granted to an allocation request or refresh.
    pub max_allocation_lifetime: Duration,
    /// Permission lifetime (RFC 8656 §9 fixes 300 s).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656 §12 fixes 600 s).
    pub channel_lifetime: Duration,
    /// Allocations one user may hold at once; 0 means unlimited; default 100.
    pub max_allocations_per_user: u32,
    /// Allocations the server holds at once; 0 means unlimited.
    pub max_allocations: usize,
    /// Permissions one allocation may hold.
    pub max_permissions_per_allocation: usize,
    /// Channels one allocation may bind (at most 4096, RFC 8656 §12).
    pub max_channels_per_allocation: usize,
    /// Time a new TCP/TLS client has to finish the TLS handshake or send a first message;
    /// also bounds a partial message and a stalled write.
    pub tcp_handshake_timeout: Duration,
    /// A TCP/TLS client connection silent for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// TCP/TLS client connections open at once.
    pub max_tcp_connections: usize,
    /// TCP/TLS client connections open at once from one IPv4 address or IPv6 prefix.
    pub max_tcp_connections_per_ip: u32,
    /// Time a new TCP/TLS client has to get an allocation (an authenticated Allocate).
    pub tcp_auth_timeout: Duration,
    /// Peer data connections one TCP allocation may hold (RFC 6062: connecting, waiting for
    /// a ConnectionBind, or relaying).
    pub max_peer_connections_per_allocation: usize,
    /// How long a Connect waits for the peer before it is answered 447 (RFC 6062 §5.2).
    pub tcp_connect_timeout: Duration,
    /// Relayed bits per second per allocation, both directions together; 0 = unlimited.
    pub max_allocation_bitrate: u64,
    /// Depth of an allocation's token bucket in bytes; 0 = one second at the bitrate.
    pub allocation_burst_bytes: u64,
    /// Relayed bits per second for the whole server; 0 = unlimited.
    pub max_total_bitrate: u64,
    /// STUN requests per second per source IP, counted before parsing; 0 = unlimited.
    pub requests_per_second_per_ip: u32,
    /// Requests a source IP may send at once above the rate; at least 1 when it is set.
    pub request_burst_per_ip: u32,
    /// Sources tracked by the request limiter; beyond it the least recently seen is forgotten.
    pub max_tracked_ips: usize,
    /// The request limiter and TCP cap count IPv6 sources per prefix of this length.
    pub ipv6_prefix_length: u8,
}

impl LimitsConfig {
    /// Whether a bandwidth cap (per allocation or in total) is set.
    pub fn bandwidth_capped(&self) -> bool {
        self.max_allocation_bitrate != 0 || self.max_total_bitrate != 0
    }
}

/// `[usage]`: where usage records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageConfig {
    /// The destination; default [`UsageOutput::Log`].
    pub output: UsageOutput,
}

/// Where a usage record (one JSON object per finished allocation) is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UsageOutput {
    /// A tracing line with target `turnstone::usage` (`output = "log"`).
    #[default]
    Log,
    /// One JSON line each on standard output (`output = "stdout"`).
    Stdout,
    /// One JSON line each appended to this file, resolved against the config's directory.
    File(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_display() {
        for l in [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ] {
            assert_eq!(l.to_string().parse::<LogLevel>(), Ok(l));
        }
        for p in [Protocol::Udp, Protocol::Tcp, Protocol::Tls] {
            assert_eq!(p.to_string().parse::<Protocol>(), Ok(p));
        }
        assert_eq!("INFO".parse::<LogLevel>(), Ok(LogLevel::Info));
        assert_eq!("verbose".parse::<LogLevel>(), Err(LogLevelError));
        assert_eq!("sctp".parse::<Protocol>(), Err(ProtocolError));
    }

    #[test]
    fn user_debug_output_hides_the_password() {
        let u = UserConfig {
            name: "alice".into(),
            password: "wonderland".into(),
        };
        assert!(!format!("{u:?}").contains("wonderland"));
    }

    #[test]
    fn admin_debug_output_hides_the_api_key() {
        let a = AdminConfig {
            address: "127.0.0.1:9641".parse().unwrap(),
            api_key: Some("0123456789abcdef-secret".into()),
            credential_ttl: Duration::from_secs(86_400),
            public_host: Some("turn.example.com".into()),
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("api_key: Some(hidden)"), "{shown}");
        assert!(shown.contains("turn.example.com"), "{shown}");
    }
}
