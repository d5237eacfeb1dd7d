//! Connection slots shared by every worker: a server-wide cap, a per-source cap (an IPv4
//! address or an IPv6 prefix of the configured length, as the request limiter counts), and a
//! coarser per-/48 cap for IPv6, so one address or one customer cannot hoard the connections
//! everyone else needs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::source::source_key;

/// The IPv6 network counted as one customer: sites are commonly given a /48 (RFC 6177), and
/// a /56 holds 256 /64s, each with its own per-source cap.
pub(crate) const NETWORK_PREFIX: u8 = 48;
/// A /48 may hold this many times the per-source cap: enough for a few busy subnets of one
/// site, while one customer rotating through its /64s stays far below the server-wide cap
/// (4 × 500 = 2 000 of 10 000 at the defaults).
pub(crate) const NETWORK_FACTOR: u32 = 4;

/// Why a connection got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotRefused {
    /// The server-wide cap (`max_tcp_connections`) is reached.
    #[error("connection limit reached")]
    Total,
    /// This source's cap (`max_tcp_connections_per_ip`) is reached.
    #[error("per-IP connection limit reached")]
    PerIp,
    /// The cap of this source's IPv6 /48 is reached.
    #[error("per-/48 connection limit reached")]
    PerNetwork,
}

/// The caps a connection is checked against.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SlotCaps {
    /// Connections open at once in total.
    pub total: usize,
    /// Connections open at once per source.
    pub per_source: u32,
    /// IPv6 sources are counted per prefix of this length.
    pub ipv6_prefix: u8,
}

impl SlotCaps {
    /// The cap per IPv6 /48, or `None` when the source prefix is already that coarse.
    fn per_network(self) -> Option<u32> {
        (self.ipv6_prefix > NETWORK_PREFIX).then(|| self.per_source.saturating_mul(NETWORK_FACTOR))
    }
}

/// Open connections, in total, per source and per IPv6 network.
#[derive(Default)]
pub(crate) struct ConnectionSlots {
    total: AtomicUsize,
    counts: Mutex<Counts>,
}

/// Two maps, not one: a /64 key and a /48 key can be the same address.
#[derive(Default)]
struct Counts {
    per_source: HashMap<IpAddr, u32>,
    per_network: HashMap<IpAddr, u32>,
}

/// One open connection's slot; dropping it frees the slot.
pub(crate) struct Slot {
    slots: Arc<ConnectionSlots>,
    source: IpAddr,
    network: Option<IpAddr>,
}

impl ConnectionSlots {
    /// Takes a slot for a connection from `ip` unless a cap is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, caps: SlotCaps) -> Result<Slot, SlotRefused> {
        let source = source_key(ip, caps.ipv6_prefix);
        let network = caps
            .per_network()
            .filter(|_| source.is_ipv6())
            .map(|cap| (source_key(ip, NETWORK_PREFIX), cap));
        // One short lock per accepted connection; entries exist only while connections do.
        let mut counts = self.counts.lock();
        if count(&counts.per_source, source) >= caps.per_source {
            return Err(SlotRefused::PerIp);
        }
        if network.is_some_and(|(key, cap)| count(&counts.per_network, key) >= cap) {
            return Err(SlotRefused::PerNetwork);
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= caps.total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(SlotRefused::Total);
        }
        *counts.per_source.entry(source).or_default() += 1;
        let network = network.map(|(key, _)| key);
        if let Some(key) = network {
            *counts.per_network.entry(key).or_default() += 1;
        }
        Ok(Slot {
            slots: Arc::clone(self),
            source,
            network,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Sources with at least one open connection.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.counts.lock().per_source.len()
    }
}

fn count(map: &HashMap<IpAddr, u32>, key: IpAddr) -> u32 {
    map.get(&key).copied().unwrap_or(0)
}

/// Takes one off `key`'s count, forgetting the entry at zero.
fn release(map: &mut HashMap<IpAddr, u32>, key: IpAddr) {
    if let Some(count) = map.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(&key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.slots.counts.lock();
        release(&mut counts.per_source, self.source);
        if let Some(network) = self.network {
            release(&mut counts.per_network, network);
        }
        self.slots.total.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn caps(total: usize, per_source: u32, ipv6_prefix: u8) -> SlotCaps {
        SlotCaps {
            total,
            per_source,
            ipv6_prefix,
        }
    }

    #[test]
    fn a_source_over_its_cap_is_refused_while_another_source_still_gets_a_slot() {
        let slots = Arc::new(ConnectionSlots::default());
        let c = caps(10, 2, 64);
        let a = [
            slots.acquire(ip("192.0.2.1"), c).unwrap(),
            slots.acquire(ip("192.0.2.1"), c).unwrap(),
        ];
        assert_eq!(
            slots.acquire(ip("192.0.2.1"), c).err(),
            Some(SlotRefused::PerIp)
        );
        let _b = slots.acquire(ip("192.0.2.2"), c).unwrap();
        assert_eq!(slots.open(), 3);
        drop(a);
        assert_eq!(slots.open(), 1);
        assert_eq!(
            slots.sources(),
            1,
            "a source without connections leaves no entry"
        );
        slots.acquire(ip("192.0.2.1"), c).unwrap();
    }

    #[test]
    fn the_total_cap_applies_across_sources_and_a_refusal_takes_nothing() {
        let slots = Arc::new(ConnectionSlots::default());
        let c = caps(2, 5, 64);
        let _a = slots.acquire(ip("192.0.2.1"), c).unwrap();
        let _b = slots.acquire(ip("192.0.2.2"), c).unwrap();
        assert_eq!(
            slots.acquire(ip("192.0.2.3"), c).err(),
            Some(SlotRefused::Total)
        );
        assert_eq!(slots.open(), 2);
        assert_eq!(slots.sources(), 2);
    }

    #[test]
    fn ipv6_sources_are_counted_per_configured_prefix_and_v4_mapped_as_v4() {
        let slots = Arc::new(ConnectionSlots::default());
        let c = caps(10, 1, 56);
        let _a = slots.acquire(ip("2001:db8:1:200::1"), c).unwrap();
        assert_eq!(
            slots.acquire(ip("2001:db8:1:2ff:ffff::9"), c).err(),
            Some(SlotRefused::PerIp),
            "another /64 of the same /56"
        );
        let _b = slots.acquire(ip("2001:db8:1:300::1"), c).unwrap();
        let _c = slots.acquire(ip("198.51.100.7"), c).unwrap();
        assert_eq!(
            slots.acquire(ip("::ffff:198.51.100.7"), c).err(),
            Some(SlotRefused::PerIp)
        );
        let per_address = caps(10, 1, 128);
        let _d = slots.acquire(ip("2001:db8:9::1"), per_address).unwrap();
        let _e = slots.acquire(ip("2001:db8:9::2"), per_address).unwrap();
    }

    #[test]
    fn one_ipv6_48_holds_at_most_four_times_the_per_source_cap_however_many_64s_it_uses() {
        let slots = Arc::new(ConnectionSlots::default());
        let c = caps(10_000, 3, 64);
        let base = u128::from("2001:db8:7::".parse::<std::net::Ipv6Addr>().unwrap());
        let mut held = Vec::new();
        let mut refused = None;
        // 256 /64s of one /56 (inside one /48), three connections each.
        'outer: for subnet in 0..256u128 {
            for host in 1..=3u128 {
                let addr = IpAddr::from(std::net::Ipv6Addr::from(base + (subnet << 64) + host));
                match slots.acquire(addr, c) {
                    Ok(slot) => held.push(slot),
                    Err(why) => {
                        refused = Some(why);
                        break 'outer;
                    }
                }
            }
        }
        assert_eq!(held.len() as u32, NETWORK_FACTOR * 3);
        assert_eq!(refused, Some(SlotRefused::PerNetwork));
        let _other_48 = slots.acquire(ip("2001:db8:8::1"), c).unwrap();
        let _ipv4 = slots.acquire(ip("192.0.2.1"), c).unwrap();
        drop(held.pop());
        slots.acquire(ip("2001:db8:7:ff::1"), c).unwrap();
    }

    #[test]
    fn with_a_source_prefix_of_48_or_shorter_only_the_per_source_cap_applies() {
        let slots = Arc::new(ConnectionSlots::default());
        let c = caps(100, 5, 48);
        let held: Vec<_> = (1..=5)
            .map(|i| slots.acquire(ip(&format!("2001:db8:7:{i}::1")), c).unwrap())
            .collect();
        assert_eq!(
            slots.acquire(ip("2001:db8:7:9::1"), c).err(),
            Some(SlotRefused::PerIp)
        );
        assert_eq!(held.len(), 5);
    }
}
