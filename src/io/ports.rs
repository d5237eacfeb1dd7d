//! Relay ports shared by every worker (DESIGN.md §4): a pre-shuffled free-port pool per
//! address family, the set of ports with a live relay socket (read by the peer policy), and
//! ports held for a later allocation (RFC 8656 §7.2 EVEN-PORT with the R bit).
//!
//! Taking a port is O(1): pop the pool's front and bind exactly that port, instead of scanning
//! the range with thousands of `bind()` calls under the worker lock when it is nearly full. A
//! port the kernel refuses (another process holds it: the range overlaps ephemeral ports) is
//! counted and put at the back for later. Freed ports also go to the back, so a port is reused
//! as late as possible (stale permissions of its last user are long gone by then).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::core::live_ports::LivePorts;
use crate::core::{RelayError, ReservationId, next_random};

use crate::sys::socket;

/// Binds tried for one relay socket before the range counts as exhausted.
const MAX_TRIES: usize = 32;

/// The relay-port state every worker shares.
#[derive(Debug)]
pub(crate) struct RelayPorts {
    pools: [Mutex<PortPool>; 2],
    /// Ports with an open relay socket (the peer policy's view of "our relay").
    pub live: Arc<LivePorts>,
    /// Ports with an open TCP relay listener (RFC 6062; the policy's view for TCP peers).
    pub live_tcp: Arc<LivePorts>,
    held: Mutex<HashMap<ReservationId, UdpSocket>>,
    next_reservation: AtomicU64,
    refused: AtomicU64,
}

impl RelayPorts {
    /// Pools over `range` for both families, shuffled from `seed` (OS randomness in
    /// production: the next relay port is not predictable from the last).
    pub fn new(range: RangeInclusive<u16>, live: Arc<LivePorts>, seed: u64) -> Self {
        Self {
            pools: [
                Mutex::new(PortPool::new(range.clone(), seed)),
                Mutex::new(PortPool::new(range, seed.rotate_left(32) ^ 0x5bd1_e995)),
            ],
            live,
            live_tcp: Arc::default(),
            held: Mutex::new(HashMap::new()),
            next_reservation: AtomicU64::new(1),
            refused: AtomicU64::new(0),
        }
    }

    /// Shares `live` as the set of live TCP relay ports (the peer policy reads it).
    #[must_use]
    pub fn with_live_tcp(mut self, live: Arc<LivePorts>) -> Self {
        self.live_tcp = live;
        self
    }

    /// A socket bound on `ip` at a free port of the range (even only, with `even`).
    pub fn bind(&self, ip: IpAddr, even: bool) -> Result<UdpSocket, RelayError> {
        let pool = &self.pools[usize::from(ip.is_ipv6())];
        for _ in 0..MAX_TRIES {
            let Some(port) = pool.lock().pop(even) else {
                return Err(RelayError::Exhausted);
            };
            match self.bind_exact(ip, port)? {
                Some(sock) => return Ok(sock),
                None => continue,
            }
        }
        Err(RelayError::Exhausted)
    }

    /// A TCP relay's listening socket on `ip` at a free port of the range (RFC 6062 §5.1).
    pub fn bind_tcp(&self, ip: IpAddr) -> Result<TcpListener, RelayError> {
        let pool = &self.pools[usize::from(ip.is_ipv6())];
        for _ in 0..MAX_TRIES {
            let Some(port) = pool.lock().pop(false) else {
                return Err(RelayError::Exhausted);
            };
            match socket::tcp_relay_listener(SocketAddr::new(ip, port)) {
                Ok(listener) => return Ok(listener),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("turnstone_relay_ports_refused_total").increment(1);
                    self.give_back(ip.is_ipv6(), port);
                }
                Err(e) => {
                    tracing::warn!(target: "turnstone::io", %ip, port, error = %e, "TCP relay listener bind failed");
                    self.give_back(ip.is_ipv6(), port);
                    return Err(RelayError::Failed);
                }
            }
        }
        Err(RelayError::Exhausted)
    }

    /// An even port and its successor (RFC 8656 §7.2): the first for a relay socket, the
    /// second held for a later allocation.
    pub fn bind_pair(&self, ip: IpAddr) -> Result<(UdpSocket, UdpSocket), RelayError> {
        let pool = &self.pools[usize::from(ip.is_ipv6())];
        for _ in 0..MAX_TRIES {
            let pair = {
                let mut pool = pool.lock();
                let Some(port) = pool.pop(true) else {
                    return Err(RelayError::Exhausted);
                };
                match port.checked_add(1).filter(|next| pool.take(*next)) {
                    Some(next) => Some((port, next)),
                    None => {
                        pool.put(port);
                        None
                    }
                }
            };
            let Some((port, next)) = pair else {
                continue;
            };
            // `bind_exact` gives back the port it tried whatever happens; `next` was taken
            // with it and must go back on every path that does not return it bound.
            let first = match self.bind_exact(ip, port) {
                Ok(Some(first)) => first,
                Ok(None) => {
                    self.give_back(ip.is_ipv6(), next);
                    continue;
                }
                Err(e) => {
                    self.give_back(ip.is_ipv6(), next);
                    return Err(e);
                }
            };
            match self.bind_exact(ip, next) {
                Ok(Some(second)) => return Ok((first, second)),
                Ok(None) => {}
                Err(e) => {
                    drop(first);
                    self.give_back(ip.is_ipv6(), port);
                    return Err(e);
                }
            }
            drop(first);
            self.give_back(ip.is_ipv6(), port);
        }
        Err(RelayError::Exhausted)
    }

    /// Binds exactly `port`; `Ok(None)` when the kernel refuses it (counted, put back at the
    /// end of the pool for later). Any other error puts it back too and fails.
    fn bind_exact(&self, ip: IpAddr, port: u16) -> Result<Option<UdpSocket>, RelayError> {
        match socket::bind_udp_exact(SocketAddr::new(ip, port)) {
            Ok(sock) => Ok(Some(sock)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("turnstone_relay_ports_refused_total").increment(1);
                self.give_back(ip.is_ipv6(), port);
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(target: "turnstone::io", %ip, port, error = %e, "relay socket bind failed");
                self.give_back(ip.is_ipv6(), port);
                Err(RelayError::Failed)
            }
        }
    }

    /// Returns a port whose socket is closed to the pool.
    pub fn give_back(&self, v6: bool, port: u16) {
        self.pools[usize::from(v6)].lock().put(port);
    }

    /// How many ports of the family are free in the pool (tests: no port may leak).
    #[cfg(test)]
    fn free_ports(&self, v6: bool) -> u32 {
        let pool = self.pools[usize::from(v6)].lock();
        pool.free.iter().map(|w| w.count_ones()).sum()
    }

    /// Ports the kernel refused since start (held by another process); production reads the
    /// `turnstone_relay_ports_refused_total` metric.
    #[cfg(test)]
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Holds a bound socket for a later allocation.
    pub fn hold(&self, sock: UdpSocket) -> ReservationId {
        let id = ReservationId(self.next_reservation.fetch_add(1, Ordering::Relaxed));
        self.held.lock().insert(id, sock);
        id
    }

    /// Claims a held socket.
    pub fn claim(&self, id: ReservationId) -> Option<UdpSocket> {
        self.held.lock().remove(&id)
    }

    /// Closes a held socket and frees its port.
    pub fn release(&self, id: ReservationId) {
        if let Some(sock) = self.claim(id) {
            let addr = sock.local_addr();
            drop(sock);
            if let Ok(addr) = addr {
                self.give_back(addr.is_ipv6(), addr.port());
            }
        }
    }
}

/// Free ports of one family: a shuffled queue plus a bit per port saying "free". Entries
/// taken out of order (`take`) stay in the queue and are skipped when popped.
#[derive(Debug)]
struct PortPool {
    queue: VecDeque<u16>,
    free: Vec<u64>,
    range: RangeInclusive<u16>,
}

impl PortPool {
    fn new(range: RangeInclusive<u16>, seed: u64) -> Self {
        let mut ports: Vec<u16> = range.clone().filter(|p| *p != 0).collect();
        // Fisher–Yates with splitmix64 (the seed is OS randomness).
        let mut state = seed;
        for i in (1..ports.len()).rev() {
            let j = (next_random(&mut state) % (i as u64 + 1)) as usize;
            ports.swap(i, j);
        }
        let mut free = vec![0u64; 1024];
        for p in &ports {
            free[usize::from(*p) / 64] |= 1 << (p % 64);
        }
        Self {
            queue: ports.into(),
            free,
            range,
        }
    }

    fn is_free(&self, port: u16) -> bool {
        self.free[usize::from(port) / 64] & (1 << (port % 64)) != 0
    }

    fn set_free(&mut self, port: u16, free: bool) {
        let (w, b) = (usize::from(port) / 64, 1u64 << (port % 64));
        if free {
            self.free[w] |= b;
        } else {
            self.free[w] &= !b;
        }
    }

    /// The next free port (even only, with `even`; odd ones met on the way go to the back).
    fn pop(&mut self, even: bool) -> Option<u16> {
        // Every entry is looked at most once, so a pool of only odd ports ends.
        for _ in 0..self.queue.len() {
            let port = self.queue.pop_front()?;
            if !self.is_free(port) {
                continue; // taken out of order earlier
            }
            if even && port % 2 != 0 {
                self.queue.push_back(port);
                continue;
            }
            self.set_free(port, false);
            return Some(port);
        }
        None
    }

    /// Takes a given port if it is free.
    fn take(&mut self, port: u16) -> bool {
        if self.range.contains(&port) && port != 0 && self.is_free(port) {
            self.set_free(port, false);
            true
        } else {
            false
        }
    }

    /// Puts a port back at the end.
    fn put(&mut self, port: u16) {
        if !self.range.contains(&port) || port == 0 || self.is_free(port) {
            return;
        }
        self.set_free(port, true);
        self.queue.push_back(port);
        // Out-of-order takes leave stale entries; drop them before they pile up.
        let span = usize::from(*self.range.end()) - usize::from(*self.range.start()) + 1;
        if self.queue.len() > 2 * span + 64 {
            let mut seen = vec![0u64; 1024];
            let free = &self.free;
            self.queue.retain(|&p| {
                let (w, b) = (usize::from(p) / 64, 1u64 << (p % 64));
                let keep = free[w] & b != 0 && seen[w] & b == 0;
                seen[w] |= b;
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A loopback range of `n` ports, each free just now, with a socket holding each port
    /// (in order): drop them to use the ports (another process may race, rarely), or keep
    /// one as a blocker. Starts even, for the pair test.
    fn free_range(n: u16) -> (RangeInclusive<u16>, Vec<UdpSocket>) {
        for _ in 0..100 {
            let probe = socket::bind_udp_exact(SocketAddr::new(LOOPBACK, 0)).unwrap();
            let p = probe.local_addr().unwrap().port().clamp(20000, 60000) & !1;
            drop(probe);
            let held: Vec<_> = (p..p + n)
                .map_while(|q| socket::bind_udp_exact(SocketAddr::new(LOOPBACK, q)).ok())
                .collect();
            if held.len() == usize::from(n) {
                return (p..=p + n - 1, held);
            }
        }
        panic!("no {n} free consecutive loopback ports");
    }

    /// An address no interface of this host has (RFC 5737 documentation space): binding it
    /// fails with EADDRNOTAVAIL, an error other than "address in use".
    const NOT_OURS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 77));

    #[test]
    fn pool_hands_out_every_port_once_then_runs_dry_and_reuses_freed_ports_last() {
        let mut pool = PortPool::new(100..=109, 7);
        let mut got: Vec<u16> = (0..10).map(|_| pool.pop(false).unwrap()).collect();
        assert_eq!(pool.pop(false), None);
        assert_ne!(got, (100..=109).collect::<Vec<_>>(), "shuffled");
        got.sort_unstable();
        assert_eq!(got, (100..=109).collect::<Vec<_>>());
        pool.put(105);
        pool.put(105);
        assert_eq!(pool.pop(false), Some(105));
        assert_eq!(pool.pop(false), None);
    }

    #[test]
    fn pool_skips_ports_taken_out_of_order_and_finds_even_ones() {
        let mut pool = PortPool::new(100..=103, 1);
        assert!(pool.take(101));
        assert!(!pool.take(101));
        let evens = [pool.pop(true).unwrap(), pool.pop(true).unwrap()];
        assert!(evens.iter().all(|p| p % 2 == 0));
        assert_eq!(pool.pop(true), None);
        assert_eq!(pool.pop(false), Some(103));
        assert_eq!(pool.pop(false), None);
    }

    #[test]
    fn repeated_out_of_order_takes_do_not_grow_the_queue_without_bound() {
        let mut pool = PortPool::new(100..=101, 1);
        for _ in 0..10_000 {
            assert!(pool.take(100));
            pool.put(100);
        }
        assert!(pool.queue.len() <= 2 * 2 + 64 + 1, "{}", pool.queue.len());
    }

    #[test]
    fn a_port_the_kernel_refuses_is_skipped_and_counted() {
        let (range, mut held) = free_range(2);
        // Keep the first port held by another socket; free the second.
        drop(held.pop());
        let _blocker = held;
        let ports = RelayPorts::new(range.clone(), Arc::default(), 3);
        let a = ports
            .bind(LOOPBACK, false)
            .expect("the second port is free");
        assert_eq!(a.local_addr().unwrap().port(), *range.end());
        let b = ports.bind(LOOPBACK, false);
        assert!(matches!(b, Err(RelayError::Exhausted)), "{b:?}");
        assert!(ports.refused() >= 1);
    }

    #[test]
    fn a_bind_error_other_than_address_in_use_gives_every_port_back() {
        let ports = RelayPorts::new(40000..=40007, Arc::default(), 11);
        assert_eq!(ports.free_ports(false), 8);
        let single = ports.bind(NOT_OURS, false);
        assert!(matches!(single, Err(RelayError::Failed)), "{single:?}");
        assert_eq!(ports.free_ports(false), 8, "a single bind leaked its port");
        // The pair takes an even port and its successor before binding the first: the
        // successor used to be lost when that first bind failed.
        let pair = ports.bind_pair(NOT_OURS);
        assert!(matches!(pair, Err(RelayError::Failed)), "{pair:?}");
        assert_eq!(ports.free_ports(false), 8, "a pair bind leaked a port");
    }

    #[test]
    fn a_pair_whose_second_port_is_refused_gives_both_ports_back() {
        let (range, held) = free_range(2);
        let mut held = held.into_iter();
        drop(held.next());
        // The odd port stays held by another socket: the pair cannot be completed.
        let _blocker = held.next();
        let ports = RelayPorts::new(range, Arc::default(), 13);
        let pair = ports.bind_pair(LOOPBACK);
        assert!(matches!(pair, Err(RelayError::Exhausted)), "{pair:?}");
        assert_eq!(ports.free_ports(false), 2);
    }

    #[test]
    fn a_full_range_is_exhausted_at_once_and_a_closed_port_comes_back() {
        let (range, held) = free_range(4);
        drop(held);
        let ports = RelayPorts::new(range.clone(), Arc::default(), 5);
        let socks: Vec<UdpSocket> = (0..4)
            .map(|_| ports.bind(LOOPBACK, false).unwrap())
            .collect();
        // No bind is tried on a port we hold: the pool knows it is taken.
        assert!(matches!(
            ports.bind(LOOPBACK, false),
            Err(RelayError::Exhausted)
        ));
        assert_eq!(ports.refused(), 0);
        let freed = socks[2].local_addr().unwrap().port();
        drop(socks);
        ports.give_back(false, freed);
        let again = ports.bind(LOOPBACK, false).unwrap();
        assert_eq!(again.local_addr().unwrap().port(), freed);
    }

    #[test]
    fn a_pair_is_an_even_port_and_its_successor_and_release_frees_the_held_one() {
        let (range, held) = free_range(8);
        drop(held);
        let ports = RelayPorts::new(range, Arc::default(), 9);
        let (a, b) = ports.bind_pair(LOOPBACK).unwrap();
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        assert_eq!((pa % 2, pb), (0, pa + 1));
        let id = ports.hold(b);
        ports.release(id);
        assert!(ports.claim(id).is_none());
        assert!(socket::bind_udp_exact(SocketAddr::new(LOOPBACK, pb)).is_ok());
    }
}
