//! Per-IP admission of STUN requests before parsing (DESIGN.md §4): a governor keyed limiter
//! with a cap on tracked IPs, so a flood from spoofed sources cannot grow memory.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// IPs beyond the cap share one bucket this many times as large as one IP's.
const OVERFLOW_FACTOR: u32 = 64;

/// The request rate limiter shared by all workers.
pub struct Admission {
    limits: Option<(DefaultKeyedRateLimiter<IpAddr>, DefaultDirectRateLimiter)>,
    max_keys: usize,
    rejected: AtomicU64,
}

impl Admission {
    /// `per_second` requests per IP with bursts of `burst`; 0 turns limiting off.
    pub fn new(per_second: u32, burst: u32, max_keys: usize) -> Self {
        let limits = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            let per_ip = Quota::per_second(rate).allow_burst(burst);
            let overflow = Quota::per_second(
                rate.saturating_mul(NonZeroU32::MIN.saturating_add(OVERFLOW_FACTOR - 1)),
            )
            .allow_burst(burst.saturating_mul(NonZeroU32::MIN.saturating_add(OVERFLOW_FACTOR - 1)));
            (RateLimiter::keyed(per_ip), RateLimiter::direct(overflow))
        });
        Self {
            limits,
            max_keys: max_keys.max(1),
            rejected: AtomicU64::new(0),
        }
    }

    /// Whether a request from `ip` may be processed now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let Some((per_ip, overflow)) = &self.limits else {
            return true;
        };
        let ok = if per_ip.len() >= self.max_keys {
            overflow.check().is_ok()
        } else {
            per_ip.check_key(&ip).is_ok()
        };
        if !ok {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Forgets IPs whose buckets are full again (call about once a second).
    pub fn housekeeping(&self) {
        if let Some((per_ip, _)) = &self.limits {
            per_ip.retain_recent();
            per_ip.shrink_to_fit();
        }
    }

    /// Requests refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// IPs currently tracked.
    pub fn tracked(&self) -> usize {
        self.limits.as_ref().map_or(0, |(per_ip, _)| per_ip.len())
    }
}

/// Whether a datagram is a STUN request (class bits C1 C0 = 00, RFC 8489 §5); indications and
/// ChannelData are metered by the allocation's own bucket instead.
pub fn is_stun_request(pkt: &[u8]) -> bool {
    pkt.len() >= 2 && pkt[0] & 0xC1 == 0 && pkt[1] & 0x10 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_over_the_burst_are_refused_per_ip() {
        let a = Admission::new(1, 3, 100);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!((0..3).all(|_| a.allow(ip)));
        assert!(!a.allow(ip));
        assert!(a.allow("192.0.2.2".parse().unwrap()));
        assert_eq!(a.rejected(), 1);
    }

    #[test]
    fn tracked_ips_are_capped_and_overflow_shares_one_bucket() {
        let a = Admission::new(1, 1, 10);
        for i in 0..200u32 {
            a.allow(IpAddr::from((0x0A00_0000 + i).to_be_bytes()));
        }
        assert!(a.tracked() <= 10);
    }

    #[test]
    fn zero_rate_turns_limiting_off() {
        let a = Admission::new(0, 0, 1);
        assert!((0..1000).all(|_| a.allow("192.0.2.1".parse().unwrap())));
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
