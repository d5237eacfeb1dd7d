//! The one place the server reads clocks (clippy.toml forbids it elsewhere).

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::core::Now;

/// How long the Unix time derived from the monotonic clock is trusted before the wall
/// clock is read again (keeps NTP steps visible within a second).
const RESYNC: Duration = Duration::from_secs(1);

thread_local! {
    /// (monotonic instant, Unix seconds at that instant) of the last wall-clock read.
    static BASE: Cell<Option<(Instant, u64)>> = const { Cell::new(None) };
}

/// The current time for the core. On the relay path this costs one monotonic clock read:
/// Unix seconds are derived from it and refreshed from the wall clock once a second.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Now {
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
    Now { mono, unix_secs }
}
