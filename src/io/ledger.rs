//! The shipped [`AllocationLedger`]: the core's [`Ledger`] (per-user allocation counts and
//! port reservations) shared by every worker's core behind one lock. The core keeps the books
//! and owns no lock (DESIGN.md §2); io decides how they are shared. Written on allocate,
//! reservation and free only, so one mutex is plenty.

use std::time::Instant;

use parking_lot::Mutex;

use crate::core::{AllocationLedger, Ledger, QuotaFull, ReservationId};

/// One [`Ledger`] for all workers.
#[derive(Debug, Default)]
pub(crate) struct SharedLedger(Mutex<Ledger>);

impl AllocationLedger for SharedLedger {
    fn try_acquire(&self, key: &str, per_user_max: u32, total_max: u32) -> Result<(), QuotaFull> {
        self.0.lock().try_acquire(key, per_user_max, total_max)
    }

    fn release(&self, key: &str) {
        self.0.lock().release(key);
    }

    fn try_acquire_class(&self, key: &str, max: u32) -> bool {
        self.0.lock().try_acquire_class(key, max)
    }

    fn release_class(&self, key: &str) {
        self.0.lock().release_class(key);
    }

    fn class_count(&self, key: &str) -> u32 {
        self.0.lock().class_count(key)
    }

    fn add_reservation(&self, token: [u8; 8], id: ReservationId, expires: Instant, owner: &str) {
        self.0.lock().add_reservation(token, id, expires, owner);
    }

    fn claim_reservation(
        &self,
        token: &[u8; 8],
        owner: &str,
        now: Instant,
    ) -> Option<ReservationId> {
        self.0.lock().claim_reservation(token, owner, now)
    }

    fn take_reservation(&self, token: &[u8; 8]) -> Option<(ReservationId, String)> {
        self.0.lock().take_reservation(token)
    }

    fn expire_reservation(&self, token: &[u8; 8], now: Instant) -> Option<(ReservationId, String)> {
        self.0.lock().expire_reservation(token, now)
    }

    fn total(&self) -> u32 {
        self.0.lock().total()
    }
}
