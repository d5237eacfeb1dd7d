//! Token buckets for bandwidth caps: per allocation and per worker (the worker's share of the
//! total cap, so no lock is taken on the data plane).

use std::time::{Duration, Instant};

/// A rate in bytes per second and a burst in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bandwidth {
    /// Sustained rate.
    pub bytes_per_sec: u64,
    /// Bucket depth.
    pub burst_bytes: u64,
}

/// A token bucket refilled lazily from the time passed in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenBucket {
    limit: Bandwidth,
    tokens: u64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(limit: Bandwidth, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.burst_bytes,
            last: now,
        }
    }

    /// Takes `bytes` if available; false means the packet is over the cap.
    pub fn take(&mut self, now: Instant, bytes: u64) -> bool {
        self.refill(now);
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }

    /// Adds the tokens earned since the last refill.
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let earned =
            (elapsed.as_nanos() * u128::from(self.limit.bytes_per_sec) / 1_000_000_000) as u64;
        if earned > 0 {
            self.tokens = self
                .tokens
                .saturating_add(earned)
                .min(self.limit.burst_bytes);
            self.last = now;
        }
    }

    /// Takes `bytes` whatever the balance (they were already read from a byte stream, RFC
    /// 6062): returns how long until the bucket is out of debt, zero when it never was. The
    /// debt is paid by refills from now until then.
    pub fn charge(&mut self, now: Instant, bytes: u64) -> Duration {
        self.refill(now);
        if self.tokens >= bytes {
            self.tokens -= bytes;
            return Duration::ZERO;
        }
        let deficit = bytes - self.tokens;
        self.tokens = 0;
        let nanos =
            u128::from(deficit) * 1_000_000_000 / u128::from(self.limit.bytes_per_sec.max(1));
        let wait = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        // No tokens are earned before `now + wait`: they pay the deficit.
        self.last = self.last.max(now) + wait;
        wait
    }

    /// Whether `bytes` are available now, without taking them.
    fn has(&mut self, now: Instant, bytes: u64) -> bool {
        self.refill(now);
        self.tokens >= bytes
    }
}

/// Whether `bytes` fit both the allocation's cap and the worker's share of the total cap.
/// Both are checked before either is charged, so a packet one cap refuses costs the other
/// nothing.
pub(crate) fn admit(
    allocation: &mut Option<TokenBucket>,
    worker: &mut Option<TokenBucket>,
    worker_limit: Option<Bandwidth>,
    now: Instant,
    bytes: u64,
) -> bool {
    let mut worker =
        worker_limit.map(|limit| worker.get_or_insert_with(|| TokenBucket::new(limit, now)));
    let fits = allocation.as_mut().is_none_or(|b| b.has(now, bytes))
        && worker.as_mut().is_none_or(|b| b.has(now, bytes));
    if fits {
        if let Some(b) = allocation {
            b.take(now, bytes);
        }
        if let Some(b) = worker {
            b.take(now, bytes);
        }
    }
    fits
}

/// Charges `bytes` of a byte stream to the allocation's cap and the worker's share of the
/// total cap (see [`TokenBucket::charge`]): the longer of the two waits.
pub(crate) fn charge(
    allocation: &mut Option<TokenBucket>,
    worker: &mut Option<TokenBucket>,
    worker_limit: Option<Bandwidth>,
    now: Instant,
    bytes: u64,
) -> Duration {
    let mut wait = allocation
        .as_mut()
        .map_or(Duration::ZERO, |b| b.charge(now, bytes));
    if let Some(limit) = worker_limit {
        let bucket = worker.get_or_insert_with(|| TokenBucket::new(limit, now));
        wait = wait.max(bucket.charge(now, bytes));
    }
    wait
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a fixed origin for a virtual clock"
    )]
    fn bucket_allows_burst_then_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(
            Bandwidth {
                bytes_per_sec: 1000,
                burst_bytes: 1500,
            },
            t0,
        );
        assert!(b.take(t0, 1000));
        assert!(b.take(t0, 500));
        assert!(!b.take(t0, 1));
        assert!(!b.take(t0 + Duration::from_millis(50), 100));
        assert!(b.take(t0 + Duration::from_millis(100), 100));
        assert!(b.take(t0 + Duration::from_secs(10), 1500));
        assert!(!b.take(t0 + Duration::from_secs(10), 1));
    }
}
