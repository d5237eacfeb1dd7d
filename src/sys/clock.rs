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
