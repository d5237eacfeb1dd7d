//! A fixed-bucket latency histogram (log-linear, like HdrHistogram with 5 significant bits):
//! values below 64 ns are exact, larger ones fall into one of 32 buckets per power of two, so a
//! percentile is off by at most 1/32 (3.1%). Recording is an index computation and an add;
//! the 1920 counters are allocated once.

use std::time::Duration;

/// Sub-buckets per power of two (5 bits of precision).
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are counted exactly, one bucket each.
const LINEAR: u64 = 2 * SUB;
/// 64 linear buckets, then 32 for each exponent from 6 to 63.
const BUCKETS: usize = LINEAR as usize + (64 - 6) * SUB as usize;

/// Round-trip times in nanoseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Counts one value (nanoseconds).
    pub fn record(&mut self, value: u64) {
        // `index` is below BUCKETS for every u64, so the lookup cannot fail.
        if let Some(c) = self.counts.get_mut(index(value)) {
            *c += 1;
        }
        self.total += 1;
        self.sum += u128::from(value);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// The number of values recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The smallest value recorded (0 when empty).
    pub fn min(&self) -> u64 {
        if self.total == 0 { 0 } else { self.min }
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean of the values recorded (0 when empty).
    pub fn mean(&self) -> u64 {
        match self.total {
            0 => 0,
            n => u64::try_from(self.sum / u128::from(n)).unwrap_or(u64::MAX),
        }
    }

    /// The nearest-rank percentile `p` (0..=100): the smallest bucket such that at least
    /// `p`% of the values are at or below it, reported as that bucket's upper bound clamped to
    /// the observed range. 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        // The epsilon keeps 99.9% of 10000 at rank 9990 despite float rounding.
        let rank = ((p / 100.0) * self.total as f64 - 1e-6).ceil().max(1.0);
        // The rank is at most total, so it fits; the cast saturates anyway.
        let rank = (rank as u64).min(self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound(i).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// The summary the report prints.
    pub fn summary(&self) -> RttSummary {
        let ns = Duration::from_nanos;
        RttSummary {
            samples: self.total,
            min: ns(self.min()),
            mean: ns(self.mean()),
            p50: ns(self.percentile(50.0)),
            p99: ns(self.percentile(99.0)),
            p999: ns(self.percentile(99.9)),
            max: ns(self.max()),
        }
    }
}

/// Round-trip time percentiles of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RttSummary {
    /// Round trips measured.
    pub samples: u64,
    /// Fastest round trip.
    pub min: Duration,
    /// Mean round trip.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Slowest round trip.
    pub max: Duration,
}

/// The bucket of `v`.
fn index(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    // v >= 64, so exp is 6..=63 and the top SUB_BITS+1 bits give 32..=63.
    let exp = 63 - v.leading_zeros();
    let top = v >> (exp - SUB_BITS);
    LINEAR as usize + (exp - 6) as usize * SUB as usize + (top - SUB) as usize
}

/// The largest value that falls into bucket `i`.
fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let exp = (i - LINEAR) / SUB + 6;
    let top = (i - LINEAR) % SUB + SUB;
    let shift = exp as u32 - SUB_BITS;
    ((top + 1) << shift).wrapping_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in 1..=50 {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), 25);
        assert_eq!(h.percentile(100.0), 50);
        assert_eq!(h.percentile(0.0), 1);
        assert_eq!(h.mean(), 25);
    }

    #[test]
    fn percentiles_of_a_uniform_range_are_within_the_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=1_000_000u64 {
            h.record(v * 10);
        }
        for (p, exact) in [
            (50.0, 5_000_000.0),
            (99.0, 9_900_000.0),
            (99.9, 9_990_000.0),
        ] {
            let got = h.percentile(p) as f64;
            let err = (got - exact).abs() / exact;
            assert!(err <= 1.0 / 32.0, "p{p}: {got} vs {exact}");
            assert!(got >= exact, "p{p}: the upper bound never under-reports");
        }
        assert_eq!(h.percentile(100.0), 10_000_000);
        assert_eq!(h.count(), 1_000_000);
    }

    #[test]
    fn a_rare_slow_tail_shows_in_p999_but_not_in_p99() {
        let mut h = Histogram::new();
        for _ in 0..9_990 {
            h.record(50_000);
        }
        for _ in 0..10 {
            h.record(5_000_000);
        }
        assert!(h.percentile(99.0) < 52_000);
        assert!(h.percentile(99.9) < 52_000);
        assert!(h.percentile(99.95) >= 5_000_000);
        assert_eq!(h.max(), 5_000_000);
    }

    #[test]
    fn every_value_has_a_bucket_whose_upper_bound_is_not_below_it() {
        for v in [
            0,
            1,
            63,
            64,
            65,
            127,
            128,
            1 << 20,
            (1 << 20) + 12345,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(upper_bound(i) >= v, "{v}");
            if i > 0 {
                assert!(upper_bound(i - 1) < v, "{v}");
            }
        }
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = Histogram::new();
        assert_eq!(h.summary(), RttSummary::default());
    }
}
