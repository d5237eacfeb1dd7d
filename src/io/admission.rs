//! Per-source admission of STUN requests before parsing (DESIGN.md §4): a token bucket per
//! source, IPv6 sources keyed by prefix (one host usually holds a whole /64, RFC 4291 §2.5.4),
//! in a bounded table that evicts the least recently seen source. A client already talking
//! keeps its own bucket however many addresses a flood rotates through.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::clock;
use super::lru::{LruBuckets, Tat};
use super::source::source_key;

/// Newcomers that would evict a still-active source share one bucket this many times as
/// large as one source's, so a flood of fresh addresses cannot churn the table unboundedly.
const OVERFLOW_FACTOR: u64 = 64;
/// Shards at most, each behind its own lock, so workers rarely contend.
const SHARDS: usize = 16;
/// Sources per shard at least: a small table is one shard, evicted in exact LRU order.
const MIN_SHARD: usize = 4096;

/// The request rate limiter shared by all workers.
pub struct Admission {
    limiter: Option<Limiter>,
    rejected: AtomicU64,
}

struct Limiter {
    per_source: Gcra,
    overflow: Gcra,
    overflow_tat: Mutex<Tat>,
    shards: Box<[Mutex<LruBuckets<IpAddr>>]>,
    hasher: RandomState,
    ipv6_prefix: u8,
    epoch: Instant,
}

impl Admission {
    /// `per_second` requests per source with bursts of `burst`, at most `max_sources` tracked,
    /// IPv6 sources keyed by their first `ipv6_prefix` bits; `per_second` 0 turns limiting off.
    pub fn new(per_second: u32, burst: u32, max_sources: usize, ipv6_prefix: u8) -> Self {
        let limiter = (per_second > 0).then(|| {
            let burst = u64::from(if burst == 0 { per_second } else { burst });
            let shards = (max_sources / MIN_SHARD).clamp(1, SHARDS);
            let per_shard = (max_sources / shards).max(1);
            Limiter {
                per_source: Gcra::new(u64::from(per_second), burst),
                overflow: Gcra::new(
                    u64::from(per_second) * OVERFLOW_FACTOR,
                    burst * OVERFLOW_FACTOR,
                ),
                overflow_tat: Mutex::new(0),
                shards: (0..shards)
                    .map(|_| Mutex::new(LruBuckets::new(per_shard)))
                    .collect(),
                hasher: RandomState::new(),
                ipv6_prefix: ipv6_prefix.min(128),
                epoch: clock::now().mono,
            }
        });
        Self {
            limiter,
            rejected: AtomicU64::new(0),
        }
    }

    /// Whether a request from `ip` may be processed now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        self.allow_at(ip, clock::now().mono)
    }

    fn allow_at(&self, ip: IpAddr, now: Instant) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        let ok = limiter.check(ip, limiter.nanos(now));
        if !ok {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Forgets sources whose buckets are full again (call about once a second).
    pub fn housekeeping(&self) {
        self.housekeeping_at(clock::now().mono);
    }

    fn housekeeping_at(&self, now: Instant) {
        if let Some(limiter) = &self.limiter {
            let now = limiter.nanos(now);
            for shard in &limiter.shards {
                shard.lock().retain(|tat| tat > now);
            }
        }
    }

    /// Requests refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Sources (IPv4 addresses, IPv6 prefixes) currently tracked.
    pub fn tracked(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, |l| l.shards.iter().map(|s| s.lock().len()).sum())
    }
}

impl Limiter {
    fn check(&self, ip: IpAddr, now: u64) -> bool {
        let key = source_key(ip, self.ipv6_prefix);
        // hash_one is keyed per process, so a flood cannot aim at one shard.
        let shard = (self.hasher.hash_one(key) as usize) % self.shards.len();
        let mut table = self.shards[shard].lock();
        if let Some(tat) = table.touch(&key) {
            return self.per_source.conform(tat, now);
        }
        if table.is_full() {
            // Evicting an idle source costs nothing; evicting an active one is paid for
            // from the shared overflow bucket, so tracked clients are not churned out freely.
            //
            // How often is the oldest entry active? Each request moves a source's tat 1/rate s
            // ahead, so it buys 1/rate s of activity (20 ms at 50/s; a whole burst at most
            // burst/rate s). Keeping the least recently seen of max_tracked_ips entries
            // active means refilling the table faster than its entries go idle: about
            // max_tracked_ips × rate requests per second from fresh sources (100 000 × 50 =
            // 5 M/s at the defaults; each shard gets the same share of both). Below that,
            // evictions are free and each newcomer gets its own full bucket; above it,
            // newcomers share the overflow bucket while tracked clients keep theirs. (A
            // client that spent its whole burst and then fell to the tail can put newcomers
            // on the overflow bucket for at most burst/rate s, until it goes idle.)
            let active = table.oldest().is_some_and(|tat| tat > now);
            if active && !self.overflow.conform(&mut self.overflow_tat.lock(), now) {
                return false;
            }
            table.evict_oldest();
        }
        let mut tat = now;
        let ok = self.per_source.conform(&mut tat, now);
        table.insert(key, tat);
        ok
    }

    fn nanos(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.epoch);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A token bucket as the generic cell rate algorithm: one request every `interval` ns,
/// `burst` at once.
#[derive(Clone, Copy)]
struct Gcra {
    interval: u64,
    tolerance: u64,
}

impl Gcra {
    fn new(per_second: u64, burst: u64) -> Self {
        let interval = (1_000_000_000 / per_second.max(1)).max(1);
        Self {
            interval,
            tolerance: interval.saturating_mul(burst.max(1) - 1),
        }
    }

    /// Takes a token from the bucket whose state is `tat`, if it has one.
    fn conform(self, tat: &mut Tat, now: u64) -> bool {
        let start = (*tat).max(now);
        if start - now > self.tolerance {
            return false;
        }
        *tat = start.saturating_add(self.interval);
        true
    }
}

/// Whether a datagram is a STUN request (class bits C1 C0 = 00, RFC 8489 §5); indications and
/// ChannelData are metered by the allocation's own bucket instead.
pub fn is_stun_request(pkt: &[u8]) -> bool {
    pkt.len() >= 2 && pkt[0] & 0xC1 == 0 && pkt[1] & 0x10 == 0
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::time::Duration;

    use super::*;

    fn v4(i: u32) -> IpAddr {
        IpAddr::from(i.to_be_bytes())
    }

    #[test]
    fn requests_over_the_burst_are_refused_per_ip() {
        let a = Admission::new(1, 3, 100, 64);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| a.allow(ip)));
        assert!(!a.allow(ip));
        assert!(a.allow("192.0.2.2".parse().unwrap()));
        assert_eq!(a.rejected(), 1);
    }

    #[test]
    fn a_source_gets_a_token_back_after_one_interval() {
        let a = Admission::new(10, 1, 100, 64);
        let t0 = clock::now().mono;
        let ip = v4(1);
        assert!(a.allow_at(ip, t0));
        assert!(!a.allow_at(ip, t0 + Duration::from_millis(50)));
        assert!(a.allow_at(ip, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn tracked_sources_are_capped() {
        let a = Admission::new(1, 1, 10, 64);
        for i in 0..200u32 {
            a.allow(v4(0x0A00_0000 + i));
        }
        assert!(a.tracked() <= 10);
    }

    #[test]
    fn a_tracked_client_keeps_its_own_bucket_when_the_table_fills() {
        // Burst 3, a table of 1024 sources filled by others, then 10 000 more addresses.
        let a = Admission::new(1, 3, 1024, 64);
        let t0 = clock::now().mono;
        let client = v4(0xC000_0201);
        assert!(a.allow_at(client, t0));
        for i in 0..1023 {
            assert!(a.allow_at(v4(0x0A00_0000 + i), t0));
        }
        assert!(a.allow_at(client, t0), "second of three");
        let flood = (0..10_000).filter(|i| a.allow_at(v4(0x0B00_0000 + i), t0));
        assert_eq!(
            flood.count() as u64,
            3 * OVERFLOW_FACTOR,
            "newcomers share one bucket"
        );
        assert!(
            a.allow_at(client, t0),
            "third of three, from its own bucket"
        );
        assert!(!a.allow_at(client, t0), "and only its own");
        assert_eq!(a.tracked(), 1024);
    }

    #[test]
    fn a_full_table_of_idle_sources_admits_newcomers_without_the_shared_bucket() {
        let a = Admission::new(1, 2, 16, 64);
        let t0 = clock::now().mono;
        for i in 0..16 {
            assert!(a.allow_at(v4(i), t0));
        }
        // Every bucket is full again after 1 s: newcomers evict them for free...
        let later = t0 + Duration::from_secs(3);
        assert!((100..116).all(|i| a.allow_at(v4(i), later)));
        // ...and the shared bucket is still whole for evicting active ones.
        let shared = (200..1000).filter(|&i| a.allow_at(v4(i), later)).count();
        assert_eq!(shared as u64, 2 * OVERFLOW_FACTOR);
    }

    #[test]
    fn a_newcomer_after_a_flood_below_table_size_times_rate_gets_its_own_full_burst() {
        // 16 384 sources (4 shards) at 50/s: entries stay active for 20 ms, so only a flood
        // of more than 16 384 × 50 ≈ 820 000 new sources per second keeps the oldest one
        // active. 100 000 sources at 200 000/s fill the table with idle entries.
        let a = Admission::new(50, 10, 16_384, 64);
        let t0 = clock::now().mono;
        let step = Duration::from_micros(5);
        let flood = (0..100_000u32)
            .filter(|&i| a.allow_at(v4(0x0A00_0000 + i), t0 + step * i))
            .count();
        assert_eq!(flood, 100_000, "each flood source has its own bucket");
        assert_eq!(a.tracked(), 16_384);
        let now = t0 + step * 100_000;
        let client = v4(0xC000_0201);
        let burst = (0..11).filter(|_| a.allow_at(client, now)).count();
        assert_eq!(
            burst, 10,
            "the newcomer gets its own full burst, and only it"
        );
        assert_eq!(a.rejected(), 1);
    }

    #[test]
    fn a_flood_of_newcomers_cannot_evict_active_sources_faster_than_the_overflow_rate() {
        let a = Admission::new(1, 1, 16, 64);
        let t0 = clock::now().mono;
        for i in 0..16u32 {
            assert!(a.allow_at(v4(i), t0));
        }
        let admitted = (1000..11_000u32).filter(|&i| a.allow_at(v4(i), t0)).count();
        assert_eq!(admitted as u64, OVERFLOW_FACTOR);
    }

    #[test]
    fn rotating_addresses_within_one_ipv6_prefix_counts_as_one_source() {
        let a = Admission::new(1, 5, 1000, 64);
        let t0 = clock::now().mono;
        let base = u128::from("2001:db8:66:1::".parse::<Ipv6Addr>().unwrap());
        let allowed = (1..=500u128)
            .filter(|i| a.allow_at(IpAddr::V6(Ipv6Addr::from(base + i * 7919)), t0))
            .count();
        assert_eq!((allowed, a.tracked()), (5, 1));
        // The next /64 is another source.
        let next = IpAddr::V6(Ipv6Addr::from(base + (1u128 << 64)));
        assert!(a.allow_at(next, t0));
    }

    #[test]
    fn ipv6_prefix_128_keys_each_address_and_mapped_ipv4_counts_as_ipv4() {
        let a = Admission::new(1, 1, 1000, 128);
        let t0 = clock::now().mono;
        assert!(a.allow_at("2001:db8::1".parse().unwrap(), t0));
        assert!(a.allow_at("2001:db8::2".parse().unwrap(), t0));
        assert!(a.allow_at("192.0.2.9".parse().unwrap(), t0));
        assert!(!a.allow_at("::ffff:192.0.2.9".parse().unwrap(), t0));
        assert_eq!(a.tracked(), 3);
    }

    #[test]
    fn housekeeping_forgets_sources_whose_buckets_are_full_again() {
        let a = Admission::new(10, 2, 100, 64);
        let t0 = clock::now().mono;
        a.allow_at(v4(1), t0);
        a.allow_at(v4(2), t0 + Duration::from_secs(1));
        a.housekeeping_at(t0 + Duration::from_millis(50));
        assert_eq!(a.tracked(), 2);
        a.housekeeping_at(t0 + Duration::from_millis(1050));
        assert_eq!(a.tracked(), 1);
        a.housekeeping_at(t0 + Duration::from_millis(1200));
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        let a = Admission::new(0, 0, 1, 64);
        assert!((0..1000).all(|_| a.allow("192.0.2.1".parse().unwrap())));
        assert_eq!(a.tracked(), 0);
    }

    #[test]
    fn only_requests_are_classified_as_requests() {
        assert!(is_stun_request(&[0x00, 0x01]));
        assert!(is_stun_request(&[0x00, 0x03]));
        assert!(!is_stun_request(&[0x00, 0x16]));
        assert!(!is_stun_request(&[0x01, 0x01]));
        assert!(!is_stun_request(&[0x40, 0x00]));
    }
}
