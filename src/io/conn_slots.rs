//! TCP/TLS connection slots shared by every worker: a server-wide cap and a per-source cap,
//! so one address (or one IPv6 /64) cannot hoard the connections everyone else needs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Why a connection got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SlotRefused {
    /// The server-wide cap (`max_tcp_connections`) is reached.
    #[error("connection limit reached")]
    Total,
    /// This source's cap (`max_tcp_connections_per_ip`) is reached.
    #[error("per-IP connection limit reached")]
    PerIp,
}

/// Open connections, in total and per source.
#[derive(Default)]
pub(crate) struct ConnectionSlots {
    total: AtomicUsize,
    per_source: Mutex<HashMap<IpAddr, u32>>,
}

/// One open connection's slot; dropping it frees the slot.
pub(crate) struct Slot {
    slots: Arc<ConnectionSlots>,
    source: IpAddr,
}

impl ConnectionSlots {
    /// Takes a slot for a connection from `ip` unless a cap is reached.
    pub fn acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: u32,
    ) -> Result<Slot, SlotRefused> {
        let source = source_key(ip);
        // One short lock per accepted connection; entries exist only while connections do.
        let mut per_source = self.per_source.lock();
        let count = per_source.get(&source).copied().unwrap_or(0);
        if count >= max_per_ip {
            return Err(SlotRefused::PerIp);
        }
        if self.total.fetch_add(1, Ordering::Relaxed) >= max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(SlotRefused::Total);
        }
        per_source.insert(source, count + 1);
        Ok(Slot {
            slots: Arc::clone(self),
            source,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Sources with at least one open connection.
    #[cfg(test)]
    pub fn sources(&self) -> usize {
        self.per_source.lock().len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_source = self.slots.per_source.lock();
        if let Some(count) = per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                per_source.remove(&self.source);
            }
        }
        self.slots.total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The key a source is counted under: the IPv4 address, or the IPv6 /64 (one subscriber's
/// prefix: a host picks any of its 2^64 addresses at will). v4-mapped v6 counts as v4.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_over_its_cap_is_refused_while_another_source_still_gets_a_slot() {
        let slots = Arc::new(ConnectionSlots::default());
        let a = [
            slots.acquire(ip("192.0.2.1"), 10, 2).unwrap(),
            slots.acquire(ip("192.0.2.1"), 10, 2).unwrap(),
        ];
        assert_eq!(
            slots.acquire(ip("192.0.2.1"), 10, 2).err(),
            Some(SlotRefused::PerIp)
        );
        let _b = slots.acquire(ip("192.0.2.2"), 10, 2).unwrap();
        assert_eq!(slots.open(), 3);
        drop(a);
        assert_eq!(slots.open(), 1);
        assert_eq!(
            slots.sources(),
            1,
            "a source without connections leaves no entry"
        );
        slots.acquire(ip("192.0.2.1"), 10, 2).unwrap();
    }

    #[test]
    fn the_total_cap_applies_across_sources_and_a_refusal_takes_nothing() {
        let slots = Arc::new(ConnectionSlots::default());
        let _a = slots.acquire(ip("192.0.2.1"), 2, 5).unwrap();
        let _b = slots.acquire(ip("192.0.2.2"), 2, 5).unwrap();
        assert_eq!(
            slots.acquire(ip("192.0.2.3"), 2, 5).err(),
            Some(SlotRefused::Total)
        );
        assert_eq!(slots.open(), 2);
        assert_eq!(slots.sources(), 2);
    }

    #[test]
    fn ipv6_sources_are_counted_per_64_and_v4_mapped_as_v4() {
        let slots = Arc::new(ConnectionSlots::default());
        let _a = slots.acquire(ip("2001:db8:1:2::1"), 10, 1).unwrap();
        assert_eq!(
            slots.acquire(ip("2001:db8:1:2:ffff::9"), 10, 1).err(),
            Some(SlotRefused::PerIp),
            "same /64"
        );
        let _b = slots.acquire(ip("2001:db8:1:3::1"), 10, 1).unwrap();
        let _c = slots.acquire(ip("198.51.100.7"), 10, 1).unwrap();
        assert_eq!(
            slots.acquire(ip("::ffff:198.51.100.7"), 10, 1).err(),
            Some(SlotRefused::PerIp)
        );
    }
}
