//! State every worker of the IO layer shares, and what the runtime hands them on reloads.
//! Its own module so that workers depend on it without depending on the runtime that
//! starts them (no import cycle between `runtime` and `worker`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::CredentialStore;
use crate::core::Settings;

use super::admission::Admission;
use super::conn_slots::ConnectionSlots;
use super::ports::RelayPorts;

/// IO state shared by every worker.
pub(crate) struct IoShared {
    pub admission: Admission,
    pub streams: Arc<ConnectionSlots>,
    pub tls_failures: AtomicU64,
    pub ports: Arc<RelayPorts>,
    /// The totals last returned by [`IoShared::take_global_deltas`].
    pub published: std::sync::Mutex<(u64, u64)>,
}

impl IoShared {
    /// Rate-limited requests and TLS failures since the last call.
    pub fn take_global_deltas(&self) -> (u64, u64) {
        let now = (
            self.admission.rejected(),
            self.tls_failures.load(Ordering::Relaxed),
        );
        let Ok(mut last) = self.published.lock() else {
            return (0, 0);
        };
        let delta = (now.0 - last.0, now.1 - last.1);
        *last = now;
        delta
    }
}

/// What workers apply at run time (SIGHUP reload, SIGTERM drain).
#[derive(Clone)]
pub(crate) struct Control {
    pub settings: Settings,
    pub credentials: Arc<CredentialStore>,
    pub draining: bool,
}
