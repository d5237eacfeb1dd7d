//! An allocation as the control plane sees it (RFC 8656 §3: identified by its 5-tuple): its
//! relays, lifetime, and its own short lists of permissions and channels. The data plane reads
//! the flat tables instead (`super::flat`); `super::table` keeps the two in step.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use super::FiveTuple;
use super::policy::PeerScope;
use super::relay::RelayId;

/// A slot index plus a generation, so a stale id never reaches a newer allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

/// One relayed transport address of an allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relay {
    pub id: RelayId,
    /// The bound socket address.
    pub bound: SocketAddr,
    /// What the client is told (external IP behind NAT).
    pub advertised: SocketAddr,
}

impl Relay {
    /// A peer at our own advertised (external) address is really our own relay socket: send
    /// to the bound address, since 1:1 NAT often does not hairpin. Never to an unspecified
    /// bound address: Linux delivers a datagram sent to 0.0.0.0 to loopback.
    pub fn hairpin_out(&self, peer: SocketAddr) -> SocketAddr {
        if peer.ip() == self.advertised.ip()
            && self.advertised.ip() != self.bound.ip()
            && !self.bound.ip().is_unspecified()
        {
            SocketAddr::new(self.bound.ip(), peer.port())
        } else {
            peer
        }
    }

    /// The reverse of [`Self::hairpin_out`]: traffic from our own bound relay IP is shown as
    /// coming from the advertised address the client used in its permission.
    pub fn hairpin_in(&self, peer: SocketAddr) -> SocketAddr {
        if peer.ip() == self.bound.ip() && self.advertised.ip() != self.bound.ip() {
            SocketAddr::new(self.advertised.ip(), peer.port())
        } else {
            peer
        }
    }
}

/// RFC 8656 §9: a permission is an IP address and an expiry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

/// RFC 8656 §12: a channel binds a number to a peer transport address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub number: u16,
    /// The peer as the client named it.
    pub peer: SocketAddr,
    pub expires: Instant,
    /// The peer is one of our own relay addresses, valid only while a relay socket is open at
    /// its port (`PeerPolicy::is_live_gated`, decided at bind and on reload): only such
    /// channels pay a per-packet check, one atomic load.
    pub live_gated: bool,
}

/// An allocation.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub five_tuple: FiveTuple,
    /// The username it was created with; later requests must use the same (RFC 8656 §7.2: 441).
    pub username: Arc<str>,
    pub relays: [Option<Relay>; 2],
    pub expires: Instant,
    pub started_unix: u64,
    /// Its permissions, each mirrored in the flat permission table.
    pub permissions: Vec<Permission>,
    /// Its channels, each mirrored in the flat channel and peer tables.
    pub channels: Vec<Channel>,
    pub peers_seen: u32,
    /// Made with a self-test credential: the per-source quota key it counts against (see
    /// `Server::acquire_selftest`). Such an allocation reaches only our own relays.
    pub selftest_source: Option<Arc<str>>,
    /// A TCP allocation (RFC 6062): relays are listening sockets, peers are reached through
    /// peer data connections, never channels or Send indications.
    pub tcp: bool,
    /// Its peer data connections (RFC 6062 §5), at most `Settings::max_tcp_connections`.
    pub connections: Vec<super::tcp::ConnectionId>,
}

impl Allocation {
    /// Which peers it may reach.
    pub fn scope(&self) -> PeerScope {
        match self.selftest_source {
            Some(_) => PeerScope::OwnRelays,
            None => PeerScope::Policy,
        }
    }

    /// The relay of the peer's family.
    pub fn relay_for(&self, peer: IpAddr) -> Option<&Relay> {
        self.relays[usize::from(peer.is_ipv6())].as_ref()
    }

    /// Whether a live permission covers `ip` (control plane: a short list).
    pub fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    /// How many permissions are live.
    pub fn live_permissions(&self, now: Instant) -> usize {
        self.permissions.iter().filter(|p| p.expires > now).count()
    }

    /// The live channel with this number.
    pub fn channel(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
    }

    /// The live channel bound to this peer.
    pub fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
    }
}
