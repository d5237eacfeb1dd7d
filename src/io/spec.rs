//! What `io::start` takes: listeners, limits and the rest of a server's specification,
//! built by `config` (which depends on io, never the reverse).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::auth::CredentialStore;
use crate::core::policy::PeerRules;
use crate::core::{Settings, Transport, UsageRecord};

/// Where finished-allocation records go.
pub type UsageSink = Arc<dyn Fn(UsageRecord) + Send + Sync>;

/// One listening socket.
#[derive(Clone)]
pub struct ListenerSpec {
    /// UDP, TCP or TLS.
    pub transport: Transport,
    /// Address to bind (port 0 picks one).
    pub address: SocketAddr,
    /// The TLS configuration for TLS listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// RFC 5780 NAT behaviour discovery: a second IP and a second port beside a UDP listener.
/// `io::start` binds three more UDP sockets per worker, so that every pairing of {primary
/// IP, alternate IP} with {primary port, alternate port} listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatDiscoverySpec {
    /// Index in [`ServerSpec::listeners`] of the primary listener: UDP, on a concrete IP.
    pub listener: usize,
    /// The alternate IP: another address of this host, of the primary's family.
    pub alternate_ip: IpAddr,
    /// The alternate port; 0 takes a free one at start (for a primary on port 0).
    pub alternate_port: u16,
}

/// A TLS listener's current configuration; SIGHUP swaps it for new connections.
pub type TlsSlot = Arc<RwLock<Arc<rustls::ServerConfig>>>;

/// Per-IP request limits (before parsing).
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// STUN requests per second per source IP (0 = unlimited).
    pub per_second: u32,
    /// Burst per source IP.
    pub burst: u32,
    /// Sources tracked at most; the least recently seen is evicted beyond it.
    pub max_tracked_ips: usize,
    /// IPv6 sources are counted per prefix of this length.
    pub ipv6_prefix_length: u8,
}

/// The longest TCP/TLS timeout: configuration refuses longer ones, and io caps a longer one
/// given through the library (a deadline past it would never fire in practice anyway).
pub const MAX_STREAM_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// TCP/TLS connection limits.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// TLS handshake deadline; also for the first message, a partial message and a write.
    pub handshake_timeout: Duration,
    /// Close connections silent this long.
    pub idle_timeout: Duration,
    /// Concurrent TCP/TLS connections across all workers.
    pub max_connections: usize,
    /// Concurrent TCP/TLS connections from one source (an IPv4 address or an IPv6 prefix of
    /// `ipv6_prefix_length`), across all workers; an IPv6 /48 holds at most four times this.
    pub max_connections_per_ip: u32,
    /// IPv6 sources are counted per prefix of this length, as the request limiter counts them.
    pub ipv6_prefix_length: u8,
    /// Time from connect to an allocation; a connection without one by then is closed.
    pub auth_timeout: Duration,
    /// RFC 6062 §5.2: how long a Connect waits for the peer to accept (then 447).
    pub connect_timeout: Duration,
}

/// Everything needed to run the server.
pub struct ServerSpec {
    /// Workers (at least 1), each a UDP data-plane thread plus a TCP/TLS thread.
    pub workers: usize,
    /// Listening sockets.
    pub listeners: Vec<ListenerSpec>,
    /// RFC 5780 discovery: the alternate address beside one UDP listener, if configured.
    pub nat_discovery: Option<NatDiscoverySpec>,
    /// Relay port range.
    pub relay_ports: RangeInclusive<u16>,
    /// Core settings with the configured peer rules; `start` (and `reload`) completes them
    /// with the bound listeners, the relay ports and the host's addresses.
    pub settings: Settings<PeerRules>,
    /// Users and secrets.
    pub credentials: Arc<CredentialStore>,
    /// TCP/TLS limits.
    pub stream_limits: StreamLimits,
    /// Per-IP request limits.
    pub request_limits: RequestLimits,
    /// Usage record sink.
    pub usage: UsageSink,
    /// The kernel fast path (`[relay] fast_path`).
    pub fast_path: super::fastpath::FastPathSpec,
}
