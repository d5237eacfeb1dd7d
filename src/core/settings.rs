//! What the core needs to know about its deployment.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::nat_discovery::NatDiscovery;
use super::policy::{BoundAddrs, PeerPolicy, PeerRules};
use super::quota::Bandwidth;

/// Relay addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayFamily {
    /// The IP relay sockets bind to.
    pub bind: IpAddr,
    /// The IP told to clients (differs behind 1:1 NAT).
    pub advertised: IpAddr,
}

/// Allocation, permission and channel lifetimes (RFC 8656 §7, §9, §12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// Granted when the client asks for none (RFC 8656: 600 s).
    pub allocation_default: Duration,
    /// The most granted.
    pub allocation_max: Duration,
    /// Permission lifetime (RFC 8656: 300 s).
    pub permission: Duration,
    /// Channel binding lifetime (RFC 8656: 600 s).
    pub channel: Duration,
    /// Nonce validity.
    pub nonce: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            allocation_default: Duration::from_secs(600),
            allocation_max: Duration::from_secs(3600),
            permission: Duration::from_secs(300),
            channel: Duration::from_secs(600),
            nonce: Duration::from_secs(600),
        }
    }
}

/// Core settings, built from the configuration. The realm is not here: it belongs to the
/// credential store (`CredentialStore::realm`), which derives every key with it, so the
/// REALM a client is told and the one its key is checked against have one source.
///
/// `Policy` is what the settings know of peers: the configuration builds
/// `Settings<PeerRules>` (it has not bound any socket), the IO layer completes it with
/// [`Settings::complete`], and the core runs with `Settings` (a complete [`PeerPolicy`]).
#[derive(Clone, Debug)]
pub struct Settings<Policy = PeerPolicy> {
    /// SOFTWARE text in responses, if any.
    pub software: Option<String>,
    /// IPv4 relay addresses; `None` disables IPv4 allocations.
    pub relay_v4: Option<RelayFamily>,
    /// IPv6 relay addresses; `None` disables IPv6 allocations (RFC 6156).
    pub relay_v6: Option<RelayFamily>,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// Peer policy (before start: the configured peer rules).
    pub policy: Policy,
    /// Per-allocation permission cap.
    pub max_permissions: usize,
    /// Per-allocation channel cap.
    pub max_channels: usize,
    /// RFC 6062 TCP relays: Allocate with REQUESTED-TRANSPORT TCP is honoured (else 442).
    pub tcp_relay: bool,
    /// Per-allocation cap on peer data connections of a TCP allocation (connecting, waiting
    /// for their ConnectionBind, or spliced).
    pub max_tcp_connections: usize,
    /// Per-user allocation quota (0 = unlimited).
    pub max_allocations_per_user: u32,
    /// Total allocation quota (0 = unlimited).
    pub max_allocations: u32,
    /// Per-allocation bandwidth cap (both directions together); `None` = unlimited.
    pub allocation_bandwidth: Option<Bandwidth>,
    /// This worker's share of the total relay bandwidth cap; `None` = unlimited.
    pub worker_bandwidth: Option<Bandwidth>,
    /// Where to send clients while draining (300 Try Alternate); `None` = refuse with 508.
    pub alternate_server: Option<SocketAddr>,
    /// RFC 5780 NAT behaviour discovery: the four UDP listening addresses. Known only once
    /// io has bound them (port 0 resolved), so the configuration leaves it `None` and
    /// [`Settings::complete`] sets it; `None` answers as a server without a second address.
    pub nat_discovery: Option<NatDiscovery>,
    /// What allocations made with self-test credentials may use (`[selftest]`); `None`: the
    /// self-test page is off and such allocations are refused (403).
    pub selftest: Option<SelftestLimits>,
}

/// Limits of allocations made with self-test credentials (the public self-test page's; see
/// `auth::selftest`). Whoever opens the page gets one, so everything it can hold is bounded
/// per source address and in total, and it can reach only this server's own relays
/// (`PeerScope::OwnRelays`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SelftestLimits {
    /// The longest lifetime granted (RFC 8656 §7.2's default and maximum are capped by it, for
    /// Allocate and Refresh alike).
    pub max_lifetime: Duration,
    /// Self-test allocations one source holds at once (IPv4 address or IPv6 prefix).
    pub max_allocations_per_ip: u32,
    /// Self-test allocations the whole server holds at once.
    pub max_allocations: u32,
    /// IPv6 sources are counted per prefix of this length.
    pub ipv6_prefix_length: u8,
    /// Each self-test allocation's bandwidth cap (both directions together).
    pub bandwidth: Bandwidth,
}

impl Settings<PeerRules> {
    /// The settings the core runs with, once the IO layer has bound its sockets (and, with
    /// RFC 5780 discovery, the four addresses it bound for it).
    pub fn complete(self, bound: BoundAddrs, nat_discovery: Option<NatDiscovery>) -> Settings {
        Settings {
            software: self.software,
            relay_v4: self.relay_v4,
            relay_v6: self.relay_v6,
            lifetimes: self.lifetimes,
            policy: self.policy.with_bound(bound),
            max_permissions: self.max_permissions,
            max_channels: self.max_channels,
            tcp_relay: self.tcp_relay,
            max_tcp_connections: self.max_tcp_connections,
            max_allocations_per_user: self.max_allocations_per_user,
            max_allocations: self.max_allocations,
            allocation_bandwidth: self.allocation_bandwidth,
            worker_bandwidth: self.worker_bandwidth,
            alternate_server: self.alternate_server,
            nat_discovery,
            selftest: self.selftest,
        }
    }
}

impl<Policy> Settings<Policy> {
    /// The relay family for an IP version.
    pub fn relay_family(&self, v6: bool) -> Option<RelayFamily> {
        if v6 { self.relay_v6 } else { self.relay_v4 }
    }
}
