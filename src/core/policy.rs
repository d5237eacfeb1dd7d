//! The peer policy: which peer addresses a client may reach through its relay.
//!
//! RFC 8656 §21 warns that a TURN server lets anyone who can allocate send
//! traffic from the server's own network position, so by default we refuse
//! peers that are not plainly on the public Internet (loopback, private,
//! link-local and cloud metadata, reserved and special-purpose ranges), and
//! the server's own listening sockets. The check runs at CreatePermission
//! (RFC 8656 §10), ChannelBind (§12) and Send (§11); a refusal is a 403.
//!
//! Every address is first reduced to its [`canonical`] form, so an IPv4
//! address cannot slip past the IPv4 rules inside an IPv6 wrapper
//! (mapped, compatible, 6to4, NAT64, Teredo).

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;

use crate::core::cidr::Cidr;
use crate::core::live_ports::LivePorts;
use crate::core::own_addrs::{OwnAddrs, OwnVerdict};
use crate::core::peer_addr::{builtin_reason, canonical_cidr};
// The public path of the canonical form: callers outside the core name it with the policy.
pub use crate::core::peer_addr::canonical;

/// Why a peer address was refused (code is always 403; the reason is a static
/// plain-words sentence for clients, the detail the same or more for logs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct PolicyRejection {
    /// A plain-words sentence saying why, e.g. "peer address is loopback": what the client
    /// is told. For the host's own addresses it never says they are the host's.
    pub reason: &'static str,
    /// The internal reason, for logs only (differs from `reason` when that is masked, e.g.
    /// "peer is one of this host's own addresses").
    pub detail: &'static str,
}

impl PolicyRejection {
    /// The STUN error code to answer with: 403 (Forbidden), RFC 8656 §10.2.
    pub const CODE: u16 = 403;

    /// The STUN error code to answer with (always [`Self::CODE`]).
    pub const fn code(&self) -> u16 {
        Self::CODE
    }
}

/// Which peers an allocation may reach, by the class of credential that made it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerScope {
    /// Whatever the policy allows ([`PeerPolicy::check`]).
    #[default]
    Policy,
    /// Only this server's own relay addresses at ports with a live relay socket, whatever the
    /// allow list says: the scope of self-test credentials, which anyone can get from the
    /// public self-test page (`auth::selftest`). The page relays to itself, relay to relay;
    /// nothing else is reachable with such a credential (RFC 8656 §21).
    OwnRelays,
}

/// Decides whether a client may reach a peer address through its relay.
#[derive(Clone, Debug)]
pub struct PeerPolicy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    own: OwnAddrs,
    listeners: Vec<SocketAddr>,
    /// TCP and TLS listeners: what a TCP relay (RFC 6062 Connect) must not reach.
    tcp_listeners: Vec<SocketAddr>,
    /// Whether the host's addresses were given. A policy without them (a reload whose read
    /// of the interfaces failed) inherits the ones in use, see [`Self::knows_host_ips`].
    host_ips_known: bool,
}

/// The peer rules the configuration decides, complete before any socket exists: the allow
/// and deny lists and the server's relay addresses. The IO layer turns them into the
/// [`PeerPolicy`] the core runs with ([`PeerRules::with_bound`]), adding only what it alone
/// knows; nothing in between is a policy with parts missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRules {
    /// Canonical (see [`canonical_cidr`]).
    allow: Vec<Cidr>,
    /// Canonical.
    deny: Vec<Cidr>,
    /// Canonical, sorted, without unspecified addresses.
    relay_ips: Vec<IpAddr>,
}

/// What only the IO layer knows, once its sockets are bound.
#[derive(Clone, Debug)]
pub struct BoundAddrs {
    /// The bound UDP listeners (may have unspecified IPs). Relays send UDP, so only these
    /// are reachable through them; a TCP listener on the same port is another socket.
    pub udp_listeners: Vec<SocketAddr>,
    /// The relay port range in use (a reload keeps the one the server started with).
    pub relay_ports: RangeInclusive<u16>,
    /// Ports with a relay socket open now, kept up to date by the IO layer.
    pub live: Arc<LivePorts>,
    /// The bound TCP and TLS listeners: a TCP relay's Connect (RFC 6062 §5.2) reaches these.
    pub tcp_listeners: Vec<SocketAddr>,
    /// Ports with a TCP relay listener open now (RFC 6062), kept up to date by the IO layer.
    pub live_tcp: Arc<LivePorts>,
    /// Every address of the host's interfaces; `None` when they could not be read (on
    /// reload: the server then keeps the ones in use, see [`PeerPolicy::knows_host_ips`]).
    pub host_ips: Option<Vec<IpAddr>>,
}

impl PeerRules {
    /// `allow`/`deny` come from config (`[peers]`). `relay_ips`: the server's relay bind
    /// IPs and external (advertised) IPs — valid peers (two relay-only WebRTC clients on
    /// one server reach each other relay-to-relay) at live relay ports only.
    ///
    /// All addresses are canonicalised; unspecified relay IPs (a wildcard relay bind) are
    /// dropped, since they would otherwise bless `0.0.0.0`.
    pub fn new(allow: Vec<Cidr>, deny: Vec<Cidr>, relay_ips: Vec<IpAddr>) -> Self {
        Self {
            allow: allow.into_iter().map(canonical_cidr).collect(),
            deny: deny.into_iter().map(canonical_cidr).collect(),
            relay_ips: OwnAddrs::normalise(relay_ips),
        }
    }

    /// The policy for a server that has bound its sockets.
    pub fn with_bound(self, bound: BoundAddrs) -> PeerPolicy {
        let policy = self
            .with_listeners(bound.udp_listeners)
            .with_relay_ports(bound.relay_ports)
            .with_live_ports(bound.live)
            .with_tcp_listeners(bound.tcp_listeners)
            .with_live_tcp_ports(bound.live_tcp);
        match bound.host_ips {
            Some(ips) => policy.with_host_ips(ips),
            None => policy,
        }
    }

    /// The policy with `listeners` as the only sockets known: every port of a relay IP
    /// counts as a relay port and the host's addresses are unknown until given.
    fn with_listeners(self, listeners: Vec<SocketAddr>) -> PeerPolicy {
        PeerPolicy {
            allow: self.allow,
            deny: self.deny,
            own: OwnAddrs {
                relay_ips: self.relay_ips,
                host_ips: Vec::new(),
                relay_ports: 0..=u16::MAX,
                live: None,
                live_tcp: None,
            },
            listeners: listeners
                .into_iter()
                .map(|l| SocketAddr::new(canonical(l.ip()), l.port()))
                .collect(),
            tcp_listeners: Vec::new(),
            host_ips_known: false,
        }
    }
}

impl PeerPolicy {
    /// The policy of [`PeerRules::new`]`(allow, deny, own_relay_ips)` for a server whose
    /// listening sockets are `listeners` (never valid peers, port-aware), before relay ports
    /// and host addresses are known. The server itself goes through
    /// [`PeerRules::with_bound`]; tests, fuzzing and benches build a policy directly.
    pub fn new(
        allow: Vec<Cidr>,
        deny: Vec<Cidr>,
        own_relay_ips: Vec<IpAddr>,
        listeners: Vec<SocketAddr>,
    ) -> Self {
        PeerRules::new(allow, deny, own_relay_ips).with_listeners(listeners)
    }

    /// Accept the server's own relay IPs only on these ports (the relay port
    /// range). Without it, every port of an own relay IP is a valid peer,
    /// which would let a client reach other services on the same host.
    #[must_use]
    pub fn with_relay_ports(mut self, ports: RangeInclusive<u16>) -> Self {
        self.own.relay_ports = ports;
        self
    }

    /// Accept the server's own relay IPs only at ports where a relay socket
    /// is open now (the IO layer keeps `live` up to date). The relay range
    /// overlaps the kernel's ephemeral ports, so the range alone is not enough.
    #[must_use]
    pub fn with_live_ports(mut self, live: Arc<LivePorts>) -> Self {
        self.own.live = Some(live);
        self
    }

    /// The TCP and TLS listeners: never valid TCP peers (RFC 6062 Connect), port-aware.
    #[must_use]
    pub fn with_tcp_listeners(mut self, listeners: Vec<SocketAddr>) -> Self {
        self.tcp_listeners = listeners
            .into_iter()
            .map(|l| SocketAddr::new(canonical(l.ip()), l.port()))
            .collect();
        self
    }

    /// Accept the server's own relay IPs as TCP peers only at ports where a TCP relay
    /// listener is open now (RFC 6062: client to client through two TCP allocations).
    #[must_use]
    pub fn with_live_tcp_ports(mut self, live: Arc<LivePorts>) -> Self {
        self.own.live_tcp = Some(live);
        self
    }

    /// Every address of the host's interfaces (read by the IO layer at start,
    /// on reload and periodically): refused as peers unless an allow entry names
    /// them deliberately (a loopback range or that single address; a broad range does not), and at listener ports always.
    #[must_use]
    pub fn with_host_ips(mut self, ips: Vec<IpAddr>) -> Self {
        self.set_host_ips(ips);
        self
    }

    /// Replaces the host's addresses; true if the set changed.
    pub fn set_host_ips(&mut self, ips: Vec<IpAddr>) -> bool {
        let ips = OwnAddrs::normalise(ips);
        let changed = ips != self.own.host_ips;
        self.own.host_ips = ips;
        self.host_ips_known = true;
        changed
    }

    /// Whether the host's addresses were given ([`Self::with_host_ips`], [`Self::set_host_ips`]).
    /// When a new policy lacks them (the IO layer could not read them on reload), the server
    /// keeps the ones it has rather than an empty set that would make them valid peers.
    pub fn knows_host_ips(&self) -> bool {
        self.host_ips_known
    }

    /// The host addresses in use (canonical, sorted).
    pub fn host_ips(&self) -> &[IpAddr] {
        &self.own.host_ips
    }

    /// Ok(canonical peer address) or the rejection. The returned address is
    /// the canonical form (see [`canonical`]) that the relay should send to.
    pub fn check(&self, peer: SocketAddr) -> Result<SocketAddr, PolicyRejection> {
        self.check_on(peer, false)
    }

    /// The same decision for a TCP peer (RFC 6062 Connect): the server's TCP and TLS
    /// listeners are refused instead of the UDP ones, and our own relay addresses are valid
    /// only at ports with a TCP relay listener open now.
    pub fn check_tcp(&self, peer: SocketAddr) -> Result<SocketAddr, PolicyRejection> {
        self.check_on(peer, true)
    }

    fn check_on(&self, peer: SocketAddr, tcp: bool) -> Result<SocketAddr, PolicyRejection> {
        let ip = canonical(peer.ip());
        let peer_canon = if ip == peer.ip() {
            peer
        } else {
            SocketAddr::new(ip, peer.port())
        };
        let listeners = if tcp {
            &self.tcp_listeners
        } else {
            &self.listeners
        };
        if self.is_own_listener(listeners, peer_canon) {
            return Err(masked(ip, LISTENER));
        }
        self.decide(peer.ip(), ip, Some(peer.port()), tcp)
            .map(|()| peer_canon)
    }

    /// Same decision for an IP alone (CreatePermission has no meaningful
    /// port, RFC 8656 §9): everything but the listener rule.
    pub fn check_ip(&self, peer: IpAddr) -> Result<IpAddr, PolicyRejection> {
        let ip = canonical(peer);
        self.decide(peer, ip, None, false).map(|()| ip)
    }

    /// [`Self::check`] within `scope`: for [`PeerScope::OwnRelays`] the peer must also be one
    /// of our relay addresses at a port with a live relay socket. The deny list and the
    /// listener rule still apply first; the allow list opens nothing more.
    pub fn check_for(
        &self,
        peer: SocketAddr,
        scope: PeerScope,
    ) -> Result<SocketAddr, PolicyRejection> {
        let checked = self.check(peer)?;
        match scope {
            PeerScope::Policy => Ok(checked),
            PeerScope::OwnRelays => {
                let ip = checked.ip();
                match self.own.verdict(ip, Some(checked.port()), false) {
                    OwnVerdict::LiveRelay => Ok(checked),
                    _ => Err(reject(SELFTEST_OWN_RELAYS_ONLY)),
                }
            }
        }
    }

    /// [`Self::check_ip`] within `scope` (CreatePermission, RFC 8656 §9: no port): for
    /// [`PeerScope::OwnRelays`] the IP must be one of our relay addresses; the port is
    /// checked when data is sent or a channel is bound.
    pub fn check_ip_for(&self, peer: IpAddr, scope: PeerScope) -> Result<IpAddr, PolicyRejection> {
        let ip = self.check_ip(peer)?;
        match scope {
            PeerScope::Policy => Ok(ip),
            PeerScope::OwnRelays if self.own.is_relay_ip(ip) => Ok(ip),
            PeerScope::OwnRelays => Err(reject(SELFTEST_OWN_RELAYS_ONLY)),
        }
    }

    /// [`Self::is_live_gated`] within `scope`: a channel of an own-relays allocation is always
    /// gated on the relay socket at its peer's port, whatever the allow list opens.
    pub fn is_live_gated_for(&self, peer: SocketAddr, scope: PeerScope) -> bool {
        scope == PeerScope::OwnRelays || self.is_live_gated(peer)
    }

    /// Whether a peer that passed [`Self::check`] stays valid only while a relay socket is open
    /// at its port: one of our own relay addresses that no deliberate allow entry opens (a
    /// loopback range or that single address). Decided once, when a channel is bound, so the per-packet path
    /// pays for [`Self::relay_port_live`] only on such channels and for nothing on others.
    pub fn is_live_gated(&self, peer: SocketAddr) -> bool {
        let ip = canonical(peer.ip());
        self.own.is_relay_ip(ip) && !self.opens_own(ip)
    }

    /// The per-packet check of a live-gated channel (see [`Self::is_live_gated`]): false once
    /// the relay socket at the peer's port has closed, since the kernel may then hand that
    /// port to any local process. One atomic load.
    pub fn relay_port_live(&self, peer: SocketAddr) -> bool {
        self.own.is_live(peer.is_ipv6(), peer.port())
    }

    /// The decision after the listener rule. `raw` is the address as given,
    /// `ip` its canonical form. Allocation-free: a few short slice scans.
    fn decide(
        &self,
        raw: IpAddr,
        ip: IpAddr,
        port: Option<u16>,
        tcp: bool,
    ) -> Result<(), PolicyRejection> {
        // The deny list also sees the raw form, so an operator can refuse a
        // whole wrapper prefix (e.g. 2002::/16) whatever it embeds.
        if self.deny.iter().any(|c| c.contains(ip) || c.contains(raw)) {
            return Err(reject(CONFIG_DENY));
        }
        match self.own.verdict(ip, port, tcp) {
            OwnVerdict::LiveRelay => return Ok(()),
            // Only an entry that names our own address deliberately opens it; a broad entry
            // (10.0.0.0/8 to reach internal media servers) must not open the host's own
            // services and ports with no relay socket (RFC 8656 §21).
            OwnVerdict::Refused(_) if self.opens_own(ip) => return Ok(()),
            OwnVerdict::Refused(detail) => return Err(masked(ip, detail)),
            OwnVerdict::NotOwn => {}
        }
        // The allow list sees only the canonical form: allowing an outer
        // IPv6 prefix must not bless a private IPv4 address embedded in it.
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        match builtin_reason(ip) {
            Some(reason) => Err(reject(reason)),
            None => Ok(()),
        }
    }

    /// Whether an allow entry opens `ip` (canonical), one of the host's own addresses, at
    /// ports with no relay socket. Only an entry that names it deliberately does: a loopback
    /// range (inside `127.0.0.0/8`, or `::1/128`: tests and loopback trials reach peers on
    /// loopback this way), or a single-address entry (/32, /128) equal to `ip`. A broader
    /// entry (`10.0.0.0/8`, `0.0.0.0/0`) leaves the host's addresses refused: an operator
    /// who opens a private range to reach media servers does not mean the relay's own host.
    fn opens_own(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|c| {
            c.contains(ip)
                && (is_loopback_range(c) || (c.prefix_len() == full_width(ip) && c.network() == ip))
        })
    }

    /// Whether `peer` (canonical) would reach one of `listeners` (ours, of one transport).
    fn is_own_listener(&self, listeners: &[SocketAddr], peer: SocketAddr) -> bool {
        let ip = peer.ip();
        listeners
            .iter()
            .filter(|l| l.port() == peer.port())
            .any(|l| {
                l.ip() == ip
                    // Sending to 0.0.0.0 or :: is delivered to the local host.
                    || ip.is_unspecified()
                    // A wildcard listener answers on every local address.
                    || (l.ip().is_unspecified() && self.is_local_ip(ip))
            })
    }

    /// Addresses known to belong to this host.
    fn is_local_ip(&self, ip: IpAddr) -> bool {
        self.own.is_local(ip)
            || self
                .listeners
                .iter()
                .chain(&self.tcp_listeners)
                .any(|l| l.ip() == ip)
    }
}

/// The reason a client is told when one of our own addresses is refused: the
/// category the address would fall in anyway (private, loopback…) when it has
/// one, else a generic refusal, so a 403 never tells a client which address is
/// the server's (10.0.0.5 and 10.0.0.6 get the same answer, and so does a public
/// address of the host that is not advertised). The internal reason stays in
/// `detail` for the log.
fn masked(ip: IpAddr, detail: &'static str) -> PolicyRejection {
    PolicyRejection {
        reason: builtin_reason(ip).unwrap_or(NOT_ALLOWED),
        detail,
    }
}

/// Whether an allow entry lies inside loopback (`127.0.0.0/8`, `::1/128`).
fn is_loopback_range(c: &Cidr) -> bool {
    match c.network() {
        IpAddr::V4(n) => c.prefix_len() >= 8 && n.is_loopback(),
        IpAddr::V6(n) => c.prefix_len() == 128 && n.is_loopback(),
    }
}

/// The address width in bits: 32 or 128.
fn full_width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { 32 } else { 128 }
}

fn reject(reason: &'static str) -> PolicyRejection {
    PolicyRejection {
        reason,
        detail: reason,
    }
}

pub(crate) const LISTENER: &str = "peer is one of this server's own listening sockets";
const CONFIG_DENY: &str = "peer address is in the configured deny list";
/// What a self-test credential is told about any peer but our live relays.
pub(crate) const SELFTEST_OWN_RELAYS_ONLY: &str =
    "self-test credentials reach only this server's relay addresses";
/// What a client is told about one of our own addresses outside every built-in category.
pub(crate) const NOT_ALLOWED: &str = "peer address is not allowed";

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::core::own_addrs::{OWN_HOST, OWN_NOT_LIVE};
    use crate::core::peer_addr::*;

    /// The top 96 bits of `64:ff9b::/96` (RFC 6052 §2.1).
    const NAT64_WKP: u128 = 0x0064_ff9b_0000_0000_0000_0000;
    /// The top 96 bits of `64:ff9b:1::/96` (RFC 8215).
    const NAT64_LOCAL: u128 = 0x0064_ff9b_0001_0000_0000_0000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn default_policy() -> PeerPolicy {
        PeerPolicy::new(vec![], vec![], vec![], vec![])
    }

    /// Every IPv6 form that canonicalises to `v4`, with its name.
    fn wrapped_forms(v4: Ipv4Addr) -> [(&'static str, IpAddr); 6] {
        let v = u128::from(u32::from(v4));
        let six = |bits: u128| IpAddr::V6(Ipv6Addr::from(bits));
        [
            ("mapped", six(0xffff_0000_0000 | v)),
            ("compatible", six(v)),
            ("6to4", six((0x2002 << 112) | (v << 80) | 0x1)),
            ("nat64 well-known", six((NAT64_WKP << 32) | v)),
            ("nat64 local-use", six((NAT64_LOCAL << 32) | v)),
            (
                "teredo",
                six((0x2001_0000 << 96)
                    | (0x4136_e378 << 64)
                    | (0x8000_63bf << 32)
                    | (!v & 0xffff_ffff)),
            ),
        ]
    }

    /// One or more addresses per built-in entry, with the expected reason.
    const V4_DENIED: &[(&str, &str)] = &[
        ("0.1.2.3", THIS_NETWORK),
        ("10.1.2.3", PRIVATE),
        ("172.16.0.1", PRIVATE),
        ("172.31.255.254", PRIVATE),
        ("192.168.1.1", PRIVATE),
        ("100.64.0.1", CGNAT),
        ("100.127.255.254", CGNAT),
        ("127.0.0.1", LOOPBACK),
        ("127.255.255.254", LOOPBACK),
        ("169.254.169.254", LINK_LOCAL_V4),
        ("192.0.0.8", IETF_V4),
        ("192.0.2.1", DOCUMENTATION),
        ("198.51.100.7", DOCUMENTATION),
        ("203.0.113.9", DOCUMENTATION),
        ("192.88.99.1", RELAY_6TO4),
        ("198.18.0.1", BENCHMARKING),
        ("198.19.255.254", BENCHMARKING),
        ("224.0.0.1", MULTICAST),
        ("239.255.255.250", MULTICAST),
        ("240.0.0.1", RESERVED_V4),
        ("254.1.2.3", RESERVED_V4),
        ("255.255.255.255", BROADCAST),
    ];

    const V6_DENIED: &[(&str, &str)] = &[
        ("::", UNSPECIFIED_V6),
        ("::1", LOOPBACK),
        ("::ffff:0:808:808", SIIT),
        ("64:ff9b:1:abcd::808:808", NAT64_ODD),
        ("64:ff9b:1:0:1::808:808", NAT64_ODD),
        ("100::1", DISCARD),
        ("2001:2::1", BENCHMARKING),
        ("2001:10::1", ORCHID),
        ("2001:1f::1", ORCHID),
        ("2001:20::1", ORCHID),
        ("2001:2f::1", ORCHID),
        ("2001:db8::1", DOCUMENTATION),
        ("3fff::1", DOCUMENTATION),
        ("3fff:fff::1", DOCUMENTATION),
        ("5f00::1", SRV6),
        ("fc00::1", UNIQUE_LOCAL),
        ("fd00:ec2::254", UNIQUE_LOCAL),
        ("fe80::1", LINK_LOCAL_V6),
        ("fec0::1", SITE_LOCAL),
        ("ff02::1", MULTICAST),
        ("0:1::1", NOT_GLOBAL_V6),
        ("64:ff9b:0:1::808:808", NOT_GLOBAL_V6),
        ("4000::1", NOT_GLOBAL_V6),
        ("8000::1", NOT_GLOBAL_V6),
        ("e000::1", NOT_GLOBAL_V6),
    ];

    #[test]
    fn every_denied_v4_address_is_refused_with_its_reason() {
        let p = default_policy();
        for &(addr, reason) in V4_DENIED {
            assert_eq!(p.check_ip(ip(addr)), Err(reject(reason)), "{addr}");
            let peer = SocketAddr::new(ip(addr), 5000);
            assert_eq!(p.check(peer), Err(reject(reason)), "{addr}");
        }
        assert_eq!(p.check_ip(ip("0.0.0.0")), Err(reject(THIS_NETWORK)));
    }

    #[test]
    fn every_denied_v4_address_is_refused_in_each_translated_v6_form() {
        let p = default_policy();
        for &(addr, reason) in V4_DENIED {
            let IpAddr::V4(v4) = ip(addr) else {
                unreachable!()
            };
            for (form, wrapped) in wrapped_forms(v4) {
                assert_eq!(canonical(wrapped), IpAddr::V4(v4), "{form} {wrapped}");
                assert_eq!(p.check_ip(wrapped), Err(reject(reason)), "{form} {wrapped}");
                let peer = SocketAddr::new(wrapped, 5000);
                assert_eq!(p.check(peer), Err(reject(reason)), "{form} {wrapped}");
            }
        }
    }

    #[test]
    fn every_denied_v6_address_is_refused_with_its_reason() {
        let p = default_policy();
        for &(addr, reason) in V6_DENIED {
            assert_eq!(p.check_ip(ip(addr)), Err(reject(reason)), "{addr}");
            let peer = SocketAddr::new(ip(addr), 5000);
            assert_eq!(p.check(peer), Err(reject(reason)), "{addr}");
        }
    }

    #[test]
    fn every_builtin_entry_is_covered_by_a_sample_with_its_reason() {
        for (cidr, reason) in &BUILTIN {
            if *reason == MAPPED_ODD {
                continue; // unreachable through check(); see the next test
            }
            let covered = V4_DENIED
                .iter()
                .chain(V6_DENIED)
                .any(|&(a, r)| r == *reason && cidr.contains(ip(a)));
            assert!(covered, "no sample for {cidr}");
        }
    }

    #[test]
    fn builtin_table_alone_refuses_uncanonicalised_mapped_addresses() {
        assert_eq!(builtin_reason(ip("::ffff:8.8.8.8")), Some(MAPPED_ODD));
    }

    #[test]
    fn reasons_are_distinct_for_distinct_categories() {
        let mut reasons: Vec<&str> = BUILTIN.iter().map(|&(_, r)| r).collect();
        reasons.extend([LISTENER, CONFIG_DENY, OWN_NOT_LIVE, OWN_HOST, NOT_ALLOWED]);
        reasons.sort_unstable();
        reasons.dedup();
        assert_eq!(reasons.len(), 28);
    }

    #[test]
    fn public_v4_is_allowed_plain_and_in_each_translated_form() {
        let p = default_policy();
        for addr in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
        ] {
            let IpAddr::V4(v4) = ip(addr) else {
                unreachable!()
            };
            assert_eq!(p.check_ip(ip(addr)), Ok(ip(addr)));
            for (form, wrapped) in wrapped_forms(v4) {
                assert_eq!(p.check_ip(wrapped), Ok(ip(addr)), "{form} {wrapped}");
                let peer = SocketAddr::new(wrapped, 53);
                assert_eq!(p.check(peer), Ok(SocketAddr::new(ip(addr), 53)), "{form}");
            }
        }
    }

    #[test]
    fn public_v6_is_allowed_unchanged() {
        let p = default_policy();
        for addr in [
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:db9::1",
            "3fff:1000::1",
        ] {
            assert_eq!(p.check_ip(ip(addr)), Ok(ip(addr)), "{addr}");
        }
        let peer = sa("[2606:4700::1111]:443");
        assert_eq!(p.check(peer), Ok(peer));
    }

    #[test]
    fn allow_list_overrides_the_builtin_list_in_every_form() {
        let p = PeerPolicy::new(cidrs(&["127.0.0.0/8"]), vec![], vec![], vec![]);
        assert_eq!(p.check_ip(ip("127.0.0.1")), Ok(ip("127.0.0.1")));
        assert_eq!(p.check_ip(ip("::ffff:127.0.0.1")), Ok(ip("127.0.0.1")));
        assert_eq!(p.check(sa("[64:ff9b::7f00:1]:9")), Ok(sa("127.0.0.1:9")));
        assert_eq!(p.check_ip(ip("::1")), Err(reject(LOOPBACK)));
    }

    #[test]
    fn allowing_an_outer_v6_prefix_does_not_bless_a_private_embedded_v4() {
        let p = PeerPolicy::new(
            cidrs(&["2002::/16", "64:ff9b::/96"]),
            vec![],
            vec![],
            vec![],
        );
        assert_eq!(p.check_ip(ip("2002:a00:1::1")), Err(reject(PRIVATE)));
        assert_eq!(
            p.check_ip(ip("64:ff9b::a9fe:a9fe")),
            Err(reject(LINK_LOCAL_V4))
        );
        assert_eq!(p.check_ip(ip("2002:808:808::1")), Ok(ip("8.8.8.8")));
    }

    #[test]
    fn deny_list_beats_allow_list_in_every_form() {
        let p = PeerPolicy::new(
            cidrs(&["8.0.0.0/8"]),
            cidrs(&["8.8.8.0/24"]),
            vec![],
            vec![],
        );
        assert_eq!(p.check_ip(ip("8.8.8.8")), Err(reject(CONFIG_DENY)));
        assert_eq!(p.check_ip(ip("::ffff:8.8.8.8")), Err(reject(CONFIG_DENY)));
        assert_eq!(p.check(sa("[2002:808:808::]:53")), Err(reject(CONFIG_DENY)));
        assert_eq!(p.check_ip(ip("8.8.4.4")), Ok(ip("8.8.4.4")));
        let same = PeerPolicy::new(
            cidrs(&["10.0.0.0/8"]),
            cidrs(&["10.0.0.0/8"]),
            vec![],
            vec![],
        );
        assert_eq!(same.check_ip(ip("10.0.0.1")), Err(reject(CONFIG_DENY)));
    }

    #[test]
    fn deny_list_matches_the_raw_wrapper_prefix_too() {
        let p = PeerPolicy::new(vec![], cidrs(&["2002::/16"]), vec![], vec![]);
        assert_eq!(p.check_ip(ip("2002:808:808::1")), Err(reject(CONFIG_DENY)));
        assert_eq!(p.check_ip(ip("8.8.8.8")), Ok(ip("8.8.8.8")));
    }

    #[test]
    fn mapped_cidr_in_config_matches_plain_v4_peers() {
        let p = PeerPolicy::new(vec![], cidrs(&["::ffff:8.8.8.0/120"]), vec![], vec![]);
        assert_eq!(p.check_ip(ip("8.8.8.8")), Err(reject(CONFIG_DENY)));
        assert_eq!(
            canonical_cidr(cidrs(&["::ffff:8.8.8.0/120"])[0]),
            cidrs(&["8.8.8.0/24"])[0]
        );
    }

    #[test]
    fn own_relay_ip_is_allowed_even_if_private() {
        let p = PeerPolicy::new(vec![], vec![], vec![ip("10.0.0.5")], vec![]);
        assert_eq!(p.check(sa("10.0.0.5:50000")), Ok(sa("10.0.0.5:50000")));
        assert_eq!(
            p.check(sa("[::ffff:10.0.0.5]:50000")),
            Ok(sa("10.0.0.5:50000"))
        );
        assert_eq!(p.check_ip(ip("10.0.0.5")), Ok(ip("10.0.0.5")));
        assert_eq!(p.check_ip(ip("10.0.0.6")), Err(reject(PRIVATE)));
    }

    #[test]
    fn own_relay_ip_given_in_mapped_form_still_matches() {
        let p = PeerPolicy::new(vec![], vec![], vec![ip("::ffff:10.0.0.5")], vec![]);
        assert_eq!(p.check_ip(ip("10.0.0.5")), Ok(ip("10.0.0.5")));
    }

    #[test]
    fn deny_list_beats_own_relay_ip() {
        let p = PeerPolicy::new(vec![], cidrs(&["10.0.0.5"]), vec![ip("10.0.0.5")], vec![]);
        assert_eq!(p.check_ip(ip("10.0.0.5")), Err(reject(CONFIG_DENY)));
    }

    #[test]
    fn unspecified_own_relay_ip_does_not_bless_the_unspecified_address() {
        let p = PeerPolicy::new(vec![], vec![], vec![ip("0.0.0.0"), ip("::")], vec![]);
        assert_eq!(p.check_ip(ip("0.0.0.0")), Err(reject(THIS_NETWORK)));
        assert_eq!(p.check_ip(ip("::")), Err(reject(UNSPECIFIED_V6)));
    }

    #[test]
    fn own_relay_ip_outside_the_relay_port_range_is_refused() {
        let own = vec![ip("10.0.0.5"), ip("8.8.4.4")];
        let p = PeerPolicy::new(vec![], vec![], own, vec![]).with_relay_ports(49152..=65535);
        // A private own address is refused with its category: no oracle.
        let reason = |peer| p.check(sa(peer)).map_err(|r| r.reason);
        assert_eq!(reason("10.0.0.5:22"), Err(PRIVATE));
        assert_eq!(
            p.check(sa("8.8.4.4:9090")),
            Err(PolicyRejection {
                reason: NOT_ALLOWED,
                detail: OWN_NOT_LIVE
            })
        );
        assert_eq!(p.check(sa("10.0.0.5:50000")), Ok(sa("10.0.0.5:50000")));
        assert_eq!(p.check_ip(ip("10.0.0.5")), Ok(ip("10.0.0.5")));
        assert_eq!(p.check(sa("8.8.8.8:22")), Ok(sa("8.8.8.8:22")));
    }

    #[test]
    fn listener_rule_is_port_aware() {
        let listeners = vec![sa("127.0.0.1:3478")];
        let p = PeerPolicy::new(cidrs(&["127.0.0.0/8"]), vec![], vec![], listeners);
        assert_eq!(
            p.check(sa("127.0.0.1:3478")).map_err(|r| r.reason),
            Err(LOOPBACK)
        );
        assert_eq!(p.check(sa("127.0.0.1:3479")), Ok(sa("127.0.0.1:3479")));
        assert_eq!(
            p.check(sa("[::ffff:127.0.0.1]:3478")).map_err(|r| r.reason),
            Err(LOOPBACK)
        );
        assert_eq!(p.check(sa("127.0.0.2:3478")), Ok(sa("127.0.0.2:3478")));
    }

    #[test]
    fn unspecified_peer_on_a_listener_port_is_refused() {
        let listeners = vec![sa("127.0.0.1:3478")];
        let p = PeerPolicy::new(cidrs(&["0.0.0.0/0"]), vec![], vec![], listeners);
        assert_eq!(
            p.check(sa("0.0.0.0:3478")).map_err(|r| r.reason),
            Err(THIS_NETWORK)
        );
        assert_eq!(
            p.check(sa("[::]:3478")).map_err(|r| r.reason),
            Err(UNSPECIFIED_V6)
        );
    }

    #[test]
    fn wildcard_listener_covers_loopback_own_ips_and_other_listener_ips() {
        let listeners = vec![sa("0.0.0.0:3478"), sa("8.8.4.4:5349")];
        let own = vec![ip("10.0.0.5")];
        let p = PeerPolicy::new(cidrs(&["127.0.0.0/8"]), vec![], own, listeners);
        let reason = |peer| p.check(sa(peer)).map_err(|r| r.reason);
        assert_eq!(reason("10.0.0.5:3478"), Err(PRIVATE));
        assert_eq!(reason("127.0.0.2:3478"), Err(LOOPBACK));
        assert_eq!(reason("[::1]:3478"), Err(LOOPBACK));
        assert_eq!(
            p.check(sa("8.8.4.4:3478")),
            Err(masked(ip("8.8.4.4"), LISTENER))
        );
        assert_eq!(reason("8.8.4.4:5349"), Err(NOT_ALLOWED));
        assert_eq!(p.check(sa("10.0.0.5:3479")), Ok(sa("10.0.0.5:3479")));
        assert_eq!(p.check(sa("8.8.8.8:3478")), Ok(sa("8.8.8.8:3478")));
    }

    #[test]
    fn dual_stack_wildcard_listener_covers_v4_loopback() {
        let p = PeerPolicy::new(
            cidrs(&["127.0.0.0/8"]),
            vec![],
            vec![],
            vec![sa("[::]:3478")],
        );
        assert_eq!(
            p.check(sa("127.0.0.1:3478")).map_err(|r| r.reason),
            Err(LOOPBACK)
        );
    }

    #[test]
    fn listener_given_in_mapped_form_matches_plain_v4() {
        let listeners = vec![sa("[::ffff:127.0.0.1]:3478")];
        let p = PeerPolicy::new(cidrs(&["127.0.0.0/8"]), vec![], vec![], listeners);
        assert_eq!(
            p.check(sa("127.0.0.1:3478")).map_err(|r| r.reason),
            Err(LOOPBACK)
        );
    }

    #[test]
    fn check_ip_ignores_the_listener_rule() {
        let listeners = vec![sa("127.0.0.1:3478"), sa("0.0.0.0:3478")];
        let allow = cidrs(&["127.0.0.0/8"]);
        let p = PeerPolicy::new(allow, vec![], vec![ip("10.0.0.5")], listeners);
        assert_eq!(p.check_ip(ip("127.0.0.1")), Ok(ip("127.0.0.1")));
        assert_eq!(p.check_ip(ip("10.0.0.5")), Ok(ip("10.0.0.5")));
    }

    #[test]
    fn rejection_is_403_and_displays_its_reason() {
        let r = default_policy().check_ip(ip("10.0.0.1")).unwrap_err();
        assert_eq!(r.code(), 403);
        assert_eq!(r.to_string(), PRIVATE);
    }

    #[test]
    fn canonical_unwraps_ipv4_mapped() {
        assert_eq!(canonical(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn canonical_unwraps_ipv4_compatible_but_not_unspecified_or_loopback() {
        assert_eq!(canonical(ip("::192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(canonical(ip("::2")), ip("0.0.0.2"));
        assert_eq!(canonical(ip("::")), ip("::"));
        assert_eq!(canonical(ip("::1")), ip("::1"));
    }

    #[test]
    fn canonical_unwraps_6to4() {
        assert_eq!(canonical(ip("2002:c000:204::1")), ip("192.0.2.4"));
        assert_eq!(canonical(ip("2002:808:808:1:2:3:4:5")), ip("8.8.8.8"));
    }

    #[test]
    fn canonical_unwraps_nat64_well_known_prefix() {
        assert_eq!(canonical(ip("64:ff9b::192.0.2.33")), ip("192.0.2.33"));
        assert_eq!(
            canonical(ip("64:ff9b:0:1::c000:221")),
            ip("64:ff9b:0:1::c000:221")
        );
    }

    #[test]
    fn canonical_unwraps_nat64_local_use_96_only() {
        assert_eq!(canonical(ip("64:ff9b:1::192.0.2.33")), ip("192.0.2.33"));
        assert_eq!(
            canonical(ip("64:ff9b:1:abcd::c000:221")),
            ip("64:ff9b:1:abcd::c000:221")
        );
    }

    #[test]
    fn canonical_unwraps_teredo_client_address() {
        // RFC 4380 §4 layout: server 65.54.227.120, client 192.0.2.45 stored inverted.
        assert_eq!(
            canonical(ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            ip("192.0.2.45")
        );
    }

    #[test]
    fn canonical_leaves_other_addresses_unchanged() {
        for a in [
            "8.8.8.8",
            "2606:4700::1111",
            "2001:db8::1",
            "2001:1::1",
            "fe80::1",
            "::ffff:0:808:808",
        ] {
            assert_eq!(canonical(ip(a)), ip(a), "{a}");
        }
    }

    #[test]
    fn canonical_is_idempotent() {
        for (_, w) in wrapped_forms(Ipv4Addr::new(8, 8, 8, 8)) {
            assert_eq!(canonical(canonical(w)), canonical(w));
        }
    }

    #[test]
    fn check_returns_the_peer_unchanged_when_already_canonical() {
        let peer = sa("[2606:4700::1111%3]:443");
        assert_eq!(default_policy().check(peer), Ok(peer));
    }

    #[test]
    fn rules_with_what_io_bound_decide_like_a_policy_built_by_hand() {
        let live = Arc::new(LivePorts::default());
        live.open(false, 50000);
        let bound = |host_ips| BoundAddrs {
            udp_listeners: vec![sa("0.0.0.0:3478")],
            relay_ports: 49152..=65535,
            live: Arc::clone(&live),
            tcp_listeners: vec![sa("0.0.0.0:3478")],
            live_tcp: Arc::default(),
            host_ips,
        };
        let rules = PeerRules::new(
            cidrs(&["10.0.0.0/8"]),
            cidrs(&["8.8.8.0/24"]),
            vec![ip("::ffff:10.0.0.5")],
        );
        let p = rules.clone().with_bound(bound(Some(vec![ip("10.0.0.7")])));
        let by_hand = PeerPolicy::new(
            cidrs(&["10.0.0.0/8"]),
            cidrs(&["8.8.8.0/24"]),
            vec![ip("10.0.0.5")],
            vec![sa("0.0.0.0:3478")],
        )
        .with_relay_ports(49152..=65535)
        .with_live_ports(Arc::clone(&live))
        .with_host_ips(vec![ip("10.0.0.7")]);
        for peer in [
            "10.0.0.5:50000",
            "10.0.0.5:50001",
            "10.0.0.7:53",
            "10.0.0.9:3478",
            "8.8.8.8:53",
            "10.0.0.9:53",
        ] {
            assert_eq!(p.check(sa(peer)), by_hand.check(sa(peer)), "{peer}");
        }
        assert_eq!(p.check(sa("10.0.0.5:50000")), Ok(sa("10.0.0.5:50000")));
        assert!(p.check(sa("10.0.0.5:3478")).is_err());
        assert!(p.knows_host_ips());
        // Without the host's addresses (a failed read on reload) the server keeps its own.
        assert!(!rules.with_bound(bound(None)).knows_host_ips());
    }
}
