//! The one place the server reads clocks (clippy.toml forbids it elsewhere).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::core::Now;

/// The current time for the core.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Now {
    let unix_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Now {
        mono: Instant::now(),
        unix_secs,
    }
}
