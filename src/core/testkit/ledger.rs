//! The test kit's [`AllocationLedger`]: one [`Ledger`] behind a `std` mutex. Test support
//! only (the shipped one is io's); a harness is single-threaded, the mutex is there because
//! the trait asks for `Sync`.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::core::{AllocationLedger, Ledger, QuotaFull, ReservationId};

/// A [`Ledger`] shared the simplest way.
#[derive(Debug, Default)]
pub struct TestLedger(Mutex<Ledger>);

impl TestLedger {
    fn books(&self) -> MutexGuard<'_, Ledger> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Allocations alive (across every server sharing this ledger).
    pub fn total(&self) -> u32 {
        self.books().total()
    }

    /// Slots taken of a class count.
    pub fn class_count(&self, key: &str) -> u32 {
        self.books().class_count(key)
    }
}

impl AllocationLedger for TestLedger {
    fn try_acquire(&self, key: &str, per_user_max: u32, total_max: u32) -> Result<(), QuotaFull> {
        self.books().try_acquire(key, per_user_max, total_max)
    }

    fn release(&self, key: &str) {
        self.books().release(key);
    }

    fn try_acquire_class(&self, key: &str, max: u32) -> bool {
        self.books().try_acquire_class(key, max)
    }

    fn release_class(&self, key: &str) {
        self.books().release_class(key);
    }

    fn class_count(&self, key: &str) -> u32 {
        self.books().class_count(key)
    }

    fn add_reservation(&self, token: [u8; 8], id: ReservationId, expires: Instant, owner: &str) {
        self.books().add_reservation(token, id, expires, owner);
    }

    fn claim_reservation(
        &self,
        token: &[u8; 8],
        owner: &str,
        now: Instant,
    ) -> Option<ReservationId> {
        self.books().claim_reservation(token, owner, now)
    }

    fn take_reservation(&self, token: &[u8; 8]) -> Option<(ReservationId, String)> {
        self.books().take_reservation(token)
    }

    fn expire_reservation(&self, token: &[u8; 8], now: Instant) -> Option<(ReservationId, String)> {
        self.books().expire_reservation(token, now)
    }

    fn total(&self) -> u32 {
        self.books().total()
    }
}
