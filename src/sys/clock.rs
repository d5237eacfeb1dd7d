//! The one place the program reads clocks (clippy.toml forbids it elsewhere). It sits in the
//! OS layer so that both the server's IO layer (`io::clock`, which hands the core its `Now`)
//! and the load generator can read the same clock without one depending on the other.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the Unix time derived from the monotonic clock is trusted before the wall
/// clock is read again (keeps NTP steps visible within a second).
const RESYNC: Duration = Duration::from_secs(1);

thread_local! {
    /// (monotonic instant, Unix seconds at that instant) of the last wall-clock read.
    static BASE: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// One reading of both clocks.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// Monotonic time.
    pub mono: Instant,
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
}

/// The current time. On the relay path this costs one monotonic clock read: Unix seconds
/// are derived from it and refreshed from the wall clock once a second.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Reading {
    let mono = Instant::now();
    let unix_secs = BASE.with(|base| match base.get() {
        Some((at, unix)) if mono.saturating_duration_since(at) < RESYNC => {
            unix + mono.saturating_duration_since(at).as_secs()
        }
        _ => {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            base.set(Some((mono, unix)));
            unix
        }
    });
    Reading { mono, unix_secs }
}

/// `at` on the kernel's `CLOCK_MONOTONIC` in nanoseconds (what eBPF's `bpf_ktime_get_ns()`
/// reads). `Instant` is that clock on Linux but opaque, so this reads both once and offsets.
#[allow(clippy::disallowed_methods)]
pub fn monotonic_nanos(at: Instant) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = Instant::now();
    let now_ns = (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64;
    let ahead = now.saturating_duration_since(at).as_nanos() as u64;
    let behind = at.saturating_duration_since(now).as_nanos() as u64;
    now_ns.saturating_sub(ahead).saturating_add(behind)
}
