//! What a peer address is before any configured rule: its canonical form (an IPv4 address
//! inside an IPv6 wrapper is that IPv4 address) and the special-purpose range it falls in,
//! if any. Both the peer policy and the server's own addresses (`own_addrs`) reason about
//! canonical addresses, so this sits below both of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cidr::Cidr;

/// Canonicalises an address before any check: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, except `::` and `::1`), 6to4
/// (`2002:AABB:CCDD::/16` → the embedded v4), NAT64 well-known prefix
/// `64:ff9b::/96` and local-use `64:ff9b:1::/96` (RFC 8215; embedded v4 in the
/// last 32 bits), Teredo `2001:0::/32` (the obfuscated client v4: last 32
/// bits XOR `0xffffffff`) → the embedded IPv4. Anything else unchanged.
///
/// Only the `/96` at the start of the local-use `/48` is canonicalised: with
/// other RFC 6052 prefix lengths the v4 sits elsewhere, so the rest of the
/// `/48` stays IPv6 and the built-in list refuses it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
    }
}

/// The IPv4 address an IPv6 address stands for, if it is a known wrapper.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let o = a.octets();
    let last = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    match a.segments() {
        // RFC 4291 §2.5.5.2 (mapped), §2.5.5.1 (compatible; :: and ::1 are not v4).
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(last),
        [0, 0, 0, 0, 0, 0, _, _] if u32::from(last) > 1 => Some(last),
        // RFC 6052 §2.1 well-known prefix; RFC 8215 local-use, /96 form.
        [0x64, 0xff9b, 0 | 1, 0, 0, 0, _, _] => Some(last),
        // RFC 3056 §2: 2002:V4ADDR::/48.
        [0x2002, ..] => Some(Ipv4Addr::new(o[2], o[3], o[4], o[5])),
        // RFC 4380 §4: the client's mapped v4 is stored inverted.
        [0x2001, 0, ..] => Some(!last),
        _ => None,
    }
}

/// A prefix inside `::ffff:0:0/96` written for v4 traffic becomes that v4
/// prefix, so a configured `::ffff:10.0.0.0/104` matches canonical peers.
pub(super) fn canonical_cidr(c: Cidr) -> Cidr {
    match c.network() {
        IpAddr::V6(n) if c.prefix_len() >= 96 => match n.to_ipv4_mapped() {
            Some(v4) => Cidr::new(IpAddr::V4(v4), c.prefix_len() - 96).unwrap_or(c),
            None => c,
        },
        _ => c,
    }
}

/// The built-in reason to refuse a canonical address, if any.
pub(super) fn builtin_reason(ip: IpAddr) -> Option<&'static str> {
    BUILTIN
        .iter()
        .find(|(cidr, _)| cidr.contains(ip))
        .map(|&(_, reason)| reason)
}

pub(super) const THIS_NETWORK: &str = "peer address is unspecified/this network (0.0.0.0/8)";
pub(super) const PRIVATE: &str = "peer address is private (RFC 1918)";
pub(super) const CGNAT: &str = "peer address is in shared CGNAT space (RFC 6598)";
pub(super) const LOOPBACK: &str = "peer address is loopback";
pub(super) const LINK_LOCAL_V4: &str =
    "peer address is link-local (incl. cloud metadata 169.254.169.254)";
pub(super) const IETF_V4: &str =
    "peer address is reserved for IETF protocol assignments (192.0.0.0/24)";
pub(super) const DOCUMENTATION: &str = "peer address is reserved for documentation";
pub(super) const RELAY_6TO4: &str = "peer address is the 6to4 relay anycast (192.88.99.0/24)";
pub(super) const BENCHMARKING: &str = "peer address is reserved for benchmarking";
pub(super) const MULTICAST: &str = "peer address is multicast";
pub(super) const RESERVED_V4: &str = "peer address is reserved (240.0.0.0/4)";
pub(super) const BROADCAST: &str = "peer address is the broadcast address";
pub(super) const UNSPECIFIED_V6: &str = "peer address is unspecified (::)";
pub(super) const UNIQUE_LOCAL: &str =
    "peer address is unique local (incl. cloud metadata fd00:ec2::254)";
pub(super) const LINK_LOCAL_V6: &str = "peer address is link-local";
pub(super) const SITE_LOCAL: &str = "peer address is site-local (deprecated)";
pub(super) const DISCARD: &str = "peer address is discard-only (100::/64)";
pub(super) const ORCHID: &str = "peer address is an ORCHID overlay identifier";
pub(super) const SRV6: &str = "peer address is an SRv6 segment identifier (5f00::/16)";
pub(super) const NAT64_ODD: &str =
    "peer address is a NAT64 local-use form with no recognisable IPv4";
pub(super) const MAPPED_ODD: &str =
    "peer address is an IPv4-mapped form that was not canonicalised";
pub(super) const SIIT: &str = "peer address is an IPv4-translated (SIIT) form";
pub(super) const NOT_GLOBAL_V6: &str = "peer address is outside IPv6 global unicast (2000::/3)";

/// Special-purpose ranges (RFC 6890 registries) that are never valid peers
/// unless allowed by config. First match wins: specific entries come before
/// the ranges that contain them.
pub(super) static BUILTIN: [(Cidr, &str); 35] = [
    (Cidr::v4(255, 255, 255, 255, 32), BROADCAST), // RFC 919
    (Cidr::v4(0, 0, 0, 0, 8), THIS_NETWORK),       // RFC 1122 §3.2.1.3
    (Cidr::v4(10, 0, 0, 0, 8), PRIVATE),           // RFC 1918
    (Cidr::v4(172, 16, 0, 0, 12), PRIVATE),
    (Cidr::v4(192, 168, 0, 0, 16), PRIVATE),
    (Cidr::v4(100, 64, 0, 0, 10), CGNAT),          // RFC 6598
    (Cidr::v4(127, 0, 0, 0, 8), LOOPBACK),         // RFC 1122
    (Cidr::v4(169, 254, 0, 0, 16), LINK_LOCAL_V4), // RFC 3927
    (Cidr::v4(192, 0, 0, 0, 24), IETF_V4),         // RFC 6890
    (Cidr::v4(192, 0, 2, 0, 24), DOCUMENTATION),   // RFC 5737
    (Cidr::v4(198, 51, 100, 0, 24), DOCUMENTATION),
    (Cidr::v4(203, 0, 113, 0, 24), DOCUMENTATION),
    (Cidr::v4(192, 88, 99, 0, 24), RELAY_6TO4), // RFC 7526
    (Cidr::v4(198, 18, 0, 0, 15), BENCHMARKING), // RFC 2544
    (Cidr::v4(224, 0, 0, 0, 4), MULTICAST),     // RFC 5771
    (Cidr::v4(240, 0, 0, 0, 4), RESERVED_V4),   // RFC 1112 §4
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), UNSPECIFIED_V6), // RFC 4291 §2.5.2
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), LOOPBACK), // RFC 4291 §2.5.3
    (Cidr::v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), MAPPED_ODD), // defence in depth
    (Cidr::v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), SIIT), // RFC 7915 (never routed)
    (Cidr::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), NAT64_ODD), // RFC 8215
    (Cidr::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), DISCARD), // RFC 6666
    (Cidr::v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48), BENCHMARKING), // RFC 5180
    (Cidr::v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28), ORCHID), // RFC 4843
    (Cidr::v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28), ORCHID), // RFC 7343
    (
        Cidr::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        DOCUMENTATION,
    ), // RFC 3849
    (Cidr::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), DOCUMENTATION), // RFC 9637
    (Cidr::v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), SRV6), // RFC 9602
    (Cidr::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), UNIQUE_LOCAL), // RFC 4193
    (Cidr::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), LINK_LOCAL_V6), // RFC 4291 §2.5.6
    (Cidr::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), SITE_LOCAL), // RFC 3879
    (Cidr::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), MULTICAST), // RFC 4291 §2.7
    // Everything outside 2000::/3 is unassigned or special (RFC 4291 §2.4).
    (Cidr::v6([0, 0, 0, 0, 0, 0, 0, 0], 3), NOT_GLOBAL_V6),
    (Cidr::v6([0x4000, 0, 0, 0, 0, 0, 0, 0], 2), NOT_GLOBAL_V6),
    (Cidr::v6([0x8000, 0, 0, 0, 0, 0, 0, 0], 1), NOT_GLOBAL_V6),
];
