//! The key a client source is counted under, shared by the request limiter and the TCP/TLS
//! connection caps, so both agree on what "one source" is.

use std::net::{IpAddr, Ipv6Addr};

/// IPv4 addresses (also when mapped into IPv6 by a dual-stack socket) as they are, IPv6
/// addresses cut to their first `prefix` bits (at most 128): one host usually holds a whole
/// /64 (RFC 4291 §2.5.4) and picks any address of it at will.
pub(crate) fn source_key(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let keep = u32::from(prefix.min(128));
                // A shift by 128 (prefix 0) overflows: that prefix keeps no bit at all.
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str, prefix: u8) -> String {
        source_key(ip.parse().unwrap(), prefix).to_string()
    }

    #[test]
    fn ipv6_addresses_are_cut_to_the_prefix_and_ipv4_is_kept_whole() {
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 64), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 48), "2001:db8:1::");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 128), "2001:db8:1:2:3:4:5:6");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 200), "2001:db8:1:2:3:4:5:6");
        assert_eq!(key("2001:db8:1:2:3:4:5:6", 0), "::");
        assert_eq!(key("192.0.2.7", 48), "192.0.2.7");
    }

    #[test]
    fn a_v4_mapped_ipv6_address_counts_as_its_ipv4_address() {
        assert_eq!(key("::ffff:192.0.2.7", 64), "192.0.2.7");
    }
}
