//! Per-source request counting for the self-test page: a fixed one-minute window per IPv4
//! address or IPv6 /64 (one host or home usually holds a whole /64, RFC 4291 §2.5.4), in a
//! table of bounded size. When the table is full of sources still inside their window, new
//! sources are refused until windows lapse: the page fails closed rather than the table growing.
//! The same table remembers which report IDs were already logged, so one credential logs once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::auth::ReportId;
use crate::core::cidr::Cidr;

/// The counting window.
const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at once.
const MAX_SOURCES: usize = 16_384;
/// Report IDs remembered at once.
const MAX_REPORTS: usize = 16_384;

/// Request counts per source and the report IDs already taken.
#[derive(Debug)]
pub(super) struct Limiter {
    per_minute: u32,
    sources: HashMap<IpAddr, (Instant, u32)>,
    reports: HashMap<ReportId, Instant>,
}

impl Limiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            sources: HashMap::new(),
            reports: HashMap::new(),
        }
    }

    /// Counts a request from `ip` at `now`; false when the source is over its rate, or is new
    /// while the table is full.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = source(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            self.sources
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if self.sources.len() >= MAX_SOURCES {
                return false;
            }
        }
        let (start, count) = self.sources.entry(key).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        if *count >= self.per_minute {
            return false;
        }
        *count += 1;
        true
    }

    /// Takes report `id` once: false when it was already reported, or when the table is full
    /// of IDs younger than `keep`.
    pub fn take_report(&mut self, id: ReportId, now: Instant, keep: Duration) -> bool {
        if self.reports.contains_key(&id) {
            return false;
        }
        if self.reports.len() >= MAX_REPORTS {
            self.reports
                .retain(|_, at| now.saturating_duration_since(*at) < keep);
            if self.reports.len() >= MAX_REPORTS {
                return false;
            }
        }
        self.reports.insert(id, now);
        true
    }
}

/// The source an address counts as: itself, or its IPv6 /64.
fn source(ip: IpAddr) -> IpAddr {
    let ip = crate::core::policy::canonical(ip);
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(_) => Cidr::new(ip, 64).map_or(ip, |c| c.network()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a fixed origin; time only advances from it"
    )]
    fn a_source_gets_its_rate_per_minute_and_an_ipv6_64_is_one_source() {
        let t0 = Instant::now();
        let mut l = Limiter::new(2);
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert!(l.allow(a, t0) && l.allow(b, t0));
        assert!(!l.allow(a, t0));
        assert!(l.allow("198.51.100.1".parse().unwrap(), t0));
        assert!(l.allow(a, t0 + WINDOW));
        let id = ReportId::from_random([1; 5]);
        assert!(l.take_report(id, t0, WINDOW));
        assert!(!l.take_report(id, t0 + WINDOW, WINDOW));
    }
}
