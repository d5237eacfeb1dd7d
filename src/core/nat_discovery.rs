//! RFC 5780 NAT behaviour discovery: the server's second IP and second port.
//!
//! With an alternate address the server listens on four UDP sockets: every pairing of
//! {primary IP, alternate IP} with {primary port, alternate port}. A Binding request that
//! reached one of them is answered with OTHER-ADDRESS (the socket differing in both, §7.4)
//! and may ask, with CHANGE-REQUEST (§7.2), to be answered from the socket differing in the
//! IP, the port or both. The core only names the local address; io owns the sockets.

use std::net::SocketAddr;

/// The four local addresses of RFC 5780 discovery, given by two diagonal corners: the
/// primary listener (primary IP and port) and the alternate (alternate IP and port).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatDiscovery {
    primary: SocketAddr,
    alternate: SocketAddr,
}

impl NatDiscovery {
    /// The addresses for `primary` (the primary UDP listener, bound) and `alternate` (the
    /// alternate IP with the alternate port, bound); `None` unless they are of one family and
    /// differ in both the IP and the port, or when either is unspecified (0.0.0.0, ::, port 0).
    pub fn new(primary: SocketAddr, alternate: SocketAddr) -> Option<Self> {
        let concrete = |a: SocketAddr| !a.ip().is_unspecified() && a.port() != 0;
        let usable = concrete(primary)
            && concrete(alternate)
            && primary.is_ipv4() == alternate.is_ipv4()
            && primary.ip() != alternate.ip()
            && primary.port() != alternate.port();
        usable.then_some(Self { primary, alternate })
    }

    /// The primary listener: primary IP, primary port.
    pub fn primary(&self) -> SocketAddr {
        self.primary
    }

    /// Alternate IP, alternate port: the OTHER-ADDRESS of a request to the primary listener.
    pub fn alternate(&self) -> SocketAddr {
        self.alternate
    }

    /// All four local addresses: (primary IP, primary port), (primary IP, alternate port),
    /// (alternate IP, primary port), (alternate IP, alternate port).
    pub fn addresses(&self) -> [SocketAddr; 4] {
        let (p, a) = (self.primary, self.alternate);
        [
            p,
            SocketAddr::new(p.ip(), a.port()),
            SocketAddr::new(a.ip(), p.port()),
            a,
        ]
    }

    /// Whether `local` is one of the four addresses.
    pub fn contains(&self, local: SocketAddr) -> bool {
        self.addresses().iter().any(|a| same(*a, local))
    }

    /// The local address that differs from `local` in the IP when `change_ip` and in the
    /// port when `change_port` (RFC 5780 §7.2); `None` when `local` is not one of the four.
    pub fn changed(
        &self,
        local: SocketAddr,
        change_ip: bool,
        change_port: bool,
    ) -> Option<SocketAddr> {
        let (p, a) = (self.primary, self.alternate);
        let on_primary_ip = if local.ip() == p.ip() {
            true
        } else if local.ip() == a.ip() {
            false
        } else {
            return None;
        };
        let on_primary_port = if local.port() == p.port() {
            true
        } else if local.port() == a.port() {
            false
        } else {
            return None;
        };
        let ip = if on_primary_ip != change_ip {
            p.ip()
        } else {
            a.ip()
        };
        let port = if on_primary_port != change_port {
            p.port()
        } else {
            a.port()
        };
        Some(SocketAddr::new(ip, port))
    }

    /// OTHER-ADDRESS for a request that reached `local` (RFC 5780 §7.4): the address that
    /// differs in both IP and port.
    pub fn other(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.changed(local, true, true)
    }
}

/// Equal IP and port (an IPv6 flow label or scope of a bound socket does not matter here).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn nat() -> NatDiscovery {
        NatDiscovery::new(sa("192.0.2.1:3478"), sa("192.0.2.2:3479")).unwrap()
    }

    #[test]
    fn every_flag_combination_names_the_right_socket_from_each_of_the_four() {
        let n = nat();
        let [pp, pa, ap, aa] = n.addresses();
        assert_eq!(
            [pp, pa, ap, aa],
            [
                sa("192.0.2.1:3478"),
                sa("192.0.2.1:3479"),
                sa("192.0.2.2:3478"),
                sa("192.0.2.2:3479")
            ]
        );
        for (local, other) in [(pp, aa), (pa, ap), (ap, pa), (aa, pp)] {
            assert_eq!(n.other(local), Some(other));
            assert_eq!(n.changed(local, false, false), Some(local));
        }
        assert_eq!(n.changed(pp, true, false), Some(ap));
        assert_eq!(n.changed(pp, false, true), Some(pa));
        assert_eq!(n.changed(aa, true, false), Some(pa));
        assert_eq!(n.changed(aa, false, true), Some(ap));
        assert_eq!(n.changed(pa, true, false), Some(aa));
        assert_eq!(n.changed(ap, false, true), Some(aa));
    }

    #[test]
    fn another_listener_is_not_part_of_discovery() {
        let n = nat();
        assert_eq!(n.other(sa("192.0.2.1:5349")), None);
        assert_eq!(n.other(sa("192.0.2.3:3478")), None);
        assert!(!n.contains(sa("[::1]:3478")));
        assert!(n.contains(sa("192.0.2.2:3478")));
    }

    #[test]
    fn corners_that_share_an_ip_or_port_or_family_are_refused() {
        let ok = sa("192.0.2.1:3478");
        for bad in [
            "192.0.2.1:3479",
            "192.0.2.2:3478",
            "[2001:db8::2]:3479",
            "0.0.0.0:3479",
            "192.0.2.2:0",
        ] {
            assert_eq!(NatDiscovery::new(ok, sa(bad)), None, "{bad}");
        }
    }
}
