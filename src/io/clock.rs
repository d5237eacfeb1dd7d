//! The server's clock: `sys::clock` (the one place that reads clocks, see clippy.toml) as
//! the core's [`Now`]. The conversion lives here because `sys` sits below `core` and cannot
//! name its types.

use crate::core::Now;
use crate::sys::clock;

/// The current time for the core (one monotonic clock read on the relay path).
#[inline]
pub fn now() -> Now {
    let clock::Reading { mono, unix_secs } = clock::now();
    Now { mono, unix_secs }
}
