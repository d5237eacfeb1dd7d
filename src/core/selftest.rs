//! Allocations made with self-test credentials (`auth::selftest`): the quota slots they take
//! and give back. The public self-test page hands such a credential to anyone, so beside the
//! allocation's usual slot (its user, the server total) each one takes a slot of the self-test
//! total and one of its source address (an IPv4 address or an IPv6 prefix, like the request
//! limiter counts sources), both from `Settings::selftest`. What they may reach is the peer
//! policy's `PeerScope::OwnRelays`; their lifetime and bandwidth caps are applied where an
//! allocation gets them (`allocate`, `confirm`, `permission`).

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::SELFTEST_MARKER;
use crate::proto::error_code as ec;

use super::Rejection;
use super::cidr::Cidr;
use super::peer_addr::canonical;
use super::pending::SelftestSlot;
use super::server::Server;

impl Server {
    /// Takes a self-test allocation's slots for a client at `ip`: 403 when the self-test page
    /// is off (its credentials are then refused outright), 508 when the server holds as many
    /// self-test allocations as it allows, 486 when this source does.
    pub(crate) fn acquire_selftest(&self, ip: IpAddr) -> Result<SelftestSlot, Rejection> {
        let Some(limits) = self.settings.selftest else {
            return Err(Rejection::new(
                ec::FORBIDDEN,
                "self-test credentials are not accepted on this server",
            ));
        };
        let source: Arc<str> = Arc::from(source_key(ip, limits.ipv6_prefix_length));
        if !self
            .shared
            .try_acquire_class(SELFTEST_MARKER, limits.max_allocations)
        {
            return Err(Rejection::new(
                ec::INSUFFICIENT_CAPACITY,
                "the server holds as many self-test allocations as it allows",
            ));
        }
        if !self
            .shared
            .try_acquire_class(&source, limits.max_allocations_per_ip)
        {
            self.shared.release_class(SELFTEST_MARKER);
            return Err(Rejection::new(
                ec::ALLOCATION_QUOTA_REACHED,
                "self-test allocation limit for this address reached",
            ));
        }
        Ok(SelftestSlot {
            source,
            bandwidth: limits.bandwidth,
        })
    }

    /// Gives back the self-test slots of an allocation (or of an Allocate that failed).
    pub(crate) fn release_selftest(&self, source: Option<&str>) {
        if let Some(source) = source {
            self.shared.release_class(source);
            self.shared.release_class(SELFTEST_MARKER);
        }
    }
}

/// The per-source quota key: the marker, then the canonical IPv4 address or the IPv6 prefix
/// (one host or home usually holds a whole /64, RFC 4291 §2.5.4).
pub(crate) fn source_key(ip: IpAddr, ipv6_prefix_length: u8) -> String {
    let ip = canonical(ip);
    let source = match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(_) => Cidr::new(ip, ipv6_prefix_length.min(128)).map_or(ip, |c| c.network()),
    };
    format!("{SELFTEST_MARKER}@{source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_ipv4_addresses_or_ipv6_prefixes() {
        let key = |s: &str| source_key(s.parse().unwrap(), 64);
        assert_eq!(key("198.51.100.7"), "#selftest@198.51.100.7");
        assert_eq!(key("::ffff:198.51.100.7"), "#selftest@198.51.100.7");
        assert_eq!(key("2001:db8:1:2:3:4:5:6"), "#selftest@2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::9"), key("2001:db8:1:2:ffff::1"));
    }
}
