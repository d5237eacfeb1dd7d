//! The server's own addresses as the peer policy sees them: relay addresses (valid peers only
//! at ports with a live relay socket) and every other address of the host (never valid peers
//! unless an allow entry names them deliberately: a loopback range or that single address, see
//! `PeerPolicy::opens_own`; a broad entry such as 10.0.0.0/8 does not). RFC 8656 §21: a relay that can send to its own host lets
//! a client reach local services, and nested allocations through its own listeners multiply
//! one datagram many times.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;

use super::live_ports::LivePorts;
use super::peer_addr::canonical;

/// What the own-address rule says about a canonical peer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OwnVerdict {
    /// Not one of ours: the other rules decide.
    NotOwn,
    /// One of our relay sockets (relay-to-relay): valid.
    LiveRelay,
    /// Ours, at a port with no relay socket, or a host address: refused (with an internal
    /// reason; what the client sees is masked, see `PeerPolicy`).
    Refused(&'static str),
}

/// The server's own addresses.
#[derive(Clone, Debug)]
pub(crate) struct OwnAddrs {
    /// Relay bind and advertised IPs, canonical, sorted, no unspecified address.
    pub relay_ips: Vec<IpAddr>,
    /// Every address of the host's interfaces (read by the IO layer), canonical, sorted.
    pub host_ips: Vec<IpAddr>,
    /// The relay port range.
    pub relay_ports: RangeInclusive<u16>,
    /// Ports with an open relay socket; without it (tests, fuzzing) the whole range counts.
    pub live: Option<Arc<LivePorts>>,
    /// Ports with an open TCP relay listener (RFC 6062), for TCP peers; the same fallback.
    pub live_tcp: Option<Arc<LivePorts>>,
}

pub(crate) const OWN_NOT_LIVE: &str = "peer is this server's own address at a port with no relay";
pub(crate) const OWN_HOST: &str = "peer is one of this host's own addresses";

impl OwnAddrs {
    /// Canonical, sorted and deduplicated, without unspecified addresses (a wildcard bind
    /// would otherwise bless `0.0.0.0`).
    pub fn normalise(ips: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = ips
            .into_iter()
            .map(canonical)
            .filter(|ip| !ip.is_unspecified())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether `ip` (canonical) is an address of this host, as far as we know.
    pub fn is_local(&self, ip: IpAddr) -> bool {
        ip.is_loopback()
            || self.relay_ips.binary_search(&ip).is_ok()
            || self.host_ips.binary_search(&ip).is_ok()
    }

    /// The rule for a canonical IP, with the port when there is one (CreatePermission has
    /// none, RFC 8656 §9: the port is checked when data is sent or a channel is bound), for a
    /// UDP peer or, with `tcp`, a TCP one (RFC 6062 Connect): each has its own live ports.
    pub fn verdict(&self, ip: IpAddr, port: Option<u16>, tcp: bool) -> OwnVerdict {
        if self.is_relay_ip(ip) {
            return match port {
                None => OwnVerdict::LiveRelay,
                Some(p) if !tcp && self.is_live(ip.is_ipv6(), p) => OwnVerdict::LiveRelay,
                Some(p) if tcp && self.is_live_tcp(ip.is_ipv6(), p) => OwnVerdict::LiveRelay,
                Some(_) => OwnVerdict::Refused(OWN_NOT_LIVE),
            };
        }
        if self.host_ips.binary_search(&ip).is_ok() {
            return OwnVerdict::Refused(OWN_HOST);
        }
        OwnVerdict::NotOwn
    }

    /// Whether `ip` (canonical) is one of our relay (bind or advertised) addresses.
    pub fn is_relay_ip(&self, ip: IpAddr) -> bool {
        self.relay_ips.binary_search(&ip).is_ok()
    }

    /// Whether `port` of the family is in the relay range with a relay socket open now.
    pub fn is_live(&self, v6: bool, port: u16) -> bool {
        self.relay_ports.contains(&port)
            && self.live.as_ref().is_none_or(|live| live.is_open(v6, port))
    }

    /// Whether `port` of the family is in the relay range with a TCP relay listener open now.
    pub fn is_live_tcp(&self, v6: bool, port: u16) -> bool {
        self.relay_ports.contains(&port)
            && self
                .live_tcp
                .as_ref()
                .is_none_or(|live| live.is_open(v6, port))
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::core::cidr::Cidr;
    use crate::core::policy::{NOT_ALLOWED, PeerPolicy, PolicyRejection};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A refusal the client sees as `reason` while the log says `detail`.
    fn refused(reason: &'static str, detail: &'static str) -> Result<SocketAddr, PolicyRejection> {
        Err(PolicyRejection { reason, detail })
    }

    /// A host with a wildcard listener on 3478, relaying on 8.8.4.4 (a stand-in for a public
    /// address), and interface addresses 10.0.0.5, 8.8.4.4, 9.9.9.9 and an IPv6 temporary one.
    fn host_policy(live: &Arc<LivePorts>) -> PeerPolicy {
        let hosts = [
            "10.0.0.5",
            "8.8.4.4",
            "9.9.9.9",
            "2606:4700::abcd",
            "127.0.0.1",
        ];
        PeerPolicy::new(
            vec![],
            vec![],
            vec![ip("8.8.4.4")],
            vec![sa("0.0.0.0:3478")],
        )
        .with_relay_ports(49152..=65535)
        .with_live_ports(Arc::clone(live))
        .with_host_ips(hosts.iter().map(|h| ip(h)).collect())
    }

    #[test]
    fn a_second_interface_address_is_refused_at_the_wildcard_listener_port() {
        let live = Arc::new(LivePorts::default());
        let p = host_policy(&live);
        // Before host addresses were known, 9.9.9.9:3478 was a valid peer: the relay could
        // send into its own listener and nest allocations.
        assert_eq!(
            p.check(sa("9.9.9.9:3478")),
            refused(NOT_ALLOWED, crate::core::policy::LISTENER)
        );
        assert!(p.check(sa("[2606:4700::abcd]:3478")).is_err());
        assert_eq!(p.check(sa("8.8.8.8:3478")), Ok(sa("8.8.8.8:3478")));
    }

    #[test]
    fn host_addresses_are_refused_at_every_port_and_by_ip() {
        let live = Arc::new(LivePorts::default());
        let p = host_policy(&live);
        assert_eq!(p.check(sa("9.9.9.9:53")), refused(NOT_ALLOWED, OWN_HOST));
        assert_eq!(
            p.check(sa("[2606:4700::abcd]:22")),
            refused(NOT_ALLOWED, OWN_HOST)
        );
        assert!(p.check_ip(ip("9.9.9.9")).is_err());
        assert!(p.check_ip(ip("::ffff:9.9.9.9")).is_err());
    }

    #[test]
    fn own_relay_address_is_a_peer_only_where_a_relay_socket_is_open() {
        let live = Arc::new(LivePorts::default());
        let p = host_policy(&live);
        let not_live = refused(NOT_ALLOWED, OWN_NOT_LIVE);
        assert_eq!(p.check(sa("8.8.4.4:50000")), not_live);
        live.open(false, 50000);
        assert_eq!(p.check(sa("8.8.4.4:50000")), Ok(sa("8.8.4.4:50000")));
        assert_eq!(p.check(sa("8.8.4.4:50002")), not_live);
        live.close(false, 50000);
        assert_eq!(p.check(sa("8.8.4.4:50000")), not_live);
    }

    #[test]
    fn a_private_host_address_is_refused_with_the_same_reason_as_any_private_address() {
        let live = Arc::new(LivePorts::default());
        let p = host_policy(&live);
        let reason = |peer| p.check(sa(peer)).map_err(|r| r.reason);
        assert_eq!(reason("10.0.0.5:53"), reason("10.0.0.6:53"));
        assert_eq!(reason("10.0.0.5:3478"), reason("10.0.0.6:3478"));
    }

    #[test]
    fn a_public_host_address_that_is_not_advertised_gets_a_reason_that_does_not_single_out_the_host()
     {
        let live = Arc::new(LivePorts::default());
        let p = host_policy(&live);
        // 9.9.9.9 is the host's but not a relay address: the client learns nothing from the
        // reason that a denied address would not tell it too; the log keeps the detail.
        let host = p.check(sa("9.9.9.9:53")).unwrap_err();
        assert_eq!(host.reason, NOT_ALLOWED);
        assert!(!host.reason.contains("host") && !host.reason.contains("own"));
        assert_eq!(host.detail, OWN_HOST);
        let at_listener = p.check(sa("9.9.9.9:3478")).unwrap_err();
        assert_eq!(at_listener.reason, NOT_ALLOWED);
    }

    #[test]
    fn loopback_relay_address_does_not_open_loopback_services() {
        // The fallback relay on 127.0.0.1 (no default route) must not make
        // 127.0.0.1:50000 a valid peer unless a relay socket is open there.
        let live = Arc::new(LivePorts::default());
        let p = PeerPolicy::new(vec![], vec![], vec![ip("127.0.0.1")], vec![])
            .with_relay_ports(49152..=65535)
            .with_live_ports(Arc::clone(&live));
        assert!(p.check(sa("127.0.0.1:50000")).is_err());
        live.open(false, 50000);
        assert_eq!(p.check(sa("127.0.0.1:50000")), Ok(sa("127.0.0.1:50000")));
    }

    fn allowing(allow: &[&str], relay: &[&str], live: &Arc<LivePorts>) -> PeerPolicy {
        let allow: Vec<Cidr> = allow.iter().map(|c| c.parse().unwrap()).collect();
        let relay = relay.iter().map(|r| ip(r)).collect();
        PeerPolicy::new(allow, vec![], relay, vec![sa("0.0.0.0:3478")])
            .with_relay_ports(49152..=65535)
            .with_live_ports(Arc::clone(live))
            .with_host_ips(vec![ip("10.0.0.5"), ip("127.0.0.1")])
    }

    #[test]
    fn a_broad_allow_entry_does_not_open_the_hosts_own_address() {
        let live = Arc::new(LivePorts::default());
        let p = allowing(&["10.0.0.0/8"], &[], &live);
        // Other addresses of the range are what the operator meant to reach.
        assert_eq!(p.check(sa("10.0.0.6:53")), Ok(sa("10.0.0.6:53")));
        assert_eq!(p.check_ip(ip("10.0.0.6")), Ok(ip("10.0.0.6")));
        // The host's own address stays refused at every port, and by IP.
        for port in [22, 53, 3478, 50000] {
            assert!(
                p.check(SocketAddr::new(ip("10.0.0.5"), port)).is_err(),
                "{port}"
            );
        }
        assert!(p.check_ip(ip("10.0.0.5")).is_err());
        // So with an allow-everything entry.
        let all = allowing(&["0.0.0.0/0"], &[], &live);
        assert!(all.check(sa("10.0.0.5:53")).is_err());
        assert_eq!(all.check(sa("10.0.0.6:53")), Ok(sa("10.0.0.6:53")));
    }

    #[test]
    fn a_broad_allow_entry_leaves_our_relay_address_a_peer_only_at_live_relay_ports() {
        let live = Arc::new(LivePorts::default());
        let p = allowing(&["10.0.0.0/8"], &["10.0.0.5"], &live);
        assert!(p.check(sa("10.0.0.5:50000")).is_err());
        assert!(p.check(sa("10.0.0.5:22")).is_err());
        live.open(false, 50000);
        assert_eq!(p.check(sa("10.0.0.5:50000")), Ok(sa("10.0.0.5:50000")));
        assert!(p.is_live_gated(sa("10.0.0.5:50000")));
        assert!(!p.is_live_gated(sa("10.0.0.6:50000")));
    }

    #[test]
    fn a_single_address_allow_entry_opens_that_host_address_except_at_listener_ports() {
        let live = Arc::new(LivePorts::default());
        let p = allowing(&["10.0.0.5/32"], &["10.0.0.5"], &live);
        assert_eq!(p.check(sa("10.0.0.5:53")), Ok(sa("10.0.0.5:53")));
        assert_eq!(p.check(sa("10.0.0.5:50000")), Ok(sa("10.0.0.5:50000")));
        assert_eq!(p.check_ip(ip("10.0.0.5")), Ok(ip("10.0.0.5")));
        assert!(p.check(sa("10.0.0.5:3478")).is_err());
        // Deliberately opened: not tied to a relay socket.
        assert!(!p.is_live_gated(sa("10.0.0.5:50000")));
        // Only that address: the rest of its range keeps the built-in refusal.
        assert!(p.check(sa("10.0.0.6:53")).is_err());
    }

    #[test]
    fn a_loopback_allow_entry_opens_loopback_host_addresses_except_at_listener_ports() {
        let live = Arc::new(LivePorts::default());
        let p = allowing(&["127.0.0.0/8"], &["127.0.0.1"], &live);
        assert_eq!(p.check(sa("127.0.0.1:50005")), Ok(sa("127.0.0.1:50005")));
        assert!(p.check(sa("127.0.0.1:3478")).is_err());
        assert!(p.check(sa("10.0.0.5:53")).is_err());
        let v6 = allowing(&["::1/128"], &[], &live).with_host_ips(vec![ip("::1")]);
        assert_eq!(v6.check(sa("[::1]:53")), Ok(sa("[::1]:53")));
    }

    #[test]
    fn replacing_host_addresses_reports_a_change_only_when_the_set_differs() {
        let mut p = PeerPolicy::new(vec![], vec![], vec![], vec![]);
        assert!(p.set_host_ips(vec![ip("9.9.9.9"), ip("0.0.0.0")]));
        assert!(!p.set_host_ips(vec![ip("::ffff:9.9.9.9")]));
        assert_eq!(p.host_ips(), [ip("9.9.9.9")]);
    }
}
