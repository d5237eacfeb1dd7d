//! The little state workers share: allocation counts for quotas and port reservations
//! (written on allocate and free only).
//!
//! The core owns no locks (DESIGN.md §2, §3), yet quota checks need a synchronous answer from
//! state every worker's core shares. So the core keeps the books ([`Ledger`], plain and
//! single-threaded) and says what it needs from them ([`AllocationLedger`]); io supplies the
//! implementation that makes one ledger safe to share between threads (`io::ledger`, behind
//! a lock) and passes it to [`super::Server::new`]. The quota rules (whose quota a username
//! counts against) stay here, in [`Shared`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use super::relay::ReservationId;

/// Whose quota an allocation counts against: a TURN REST username `<expiry>:<user>` counts
/// against `<user>`, so minting fresh credentials does not lift the per-user quota.
fn quota_key(username: &str) -> &str {
    match (crate::auth::rest_expiry(username), username.split_once(':')) {
        (Some(_), Some((_, user))) if !user.is_empty() => user,
        _ => username,
    }
}

/// Which allocation quota is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuotaFull {
    /// The username's quota (RFC 8656: 486 Allocation Quota Reached).
    User,
    /// The server-wide quota (508 Insufficient Capacity).
    Total,
}

/// The shared books every worker's core consults, as the core needs them: each call is one
/// atomic step on one [`Ledger`] (an implementation forwards it there under its lock).
/// Usernames arrive here already turned into quota keys (see [`Shared`]), and a
/// reservation's owner is stored and given back as such a key.
pub trait AllocationLedger: Send + Sync + fmt::Debug {
    /// See [`Ledger::try_acquire`].
    fn try_acquire(&self, key: &str, per_user_max: u32, total_max: u32) -> Result<(), QuotaFull>;
    /// See [`Ledger::release`].
    fn release(&self, key: &str);
    /// See [`Ledger::try_acquire_class`].
    fn try_acquire_class(&self, key: &str, max: u32) -> bool;
    /// See [`Ledger::release_class`].
    fn release_class(&self, key: &str);
    /// See [`Ledger::class_count`].
    fn class_count(&self, key: &str) -> u32;
    /// See [`Ledger::add_reservation`].
    fn add_reservation(&self, token: [u8; 8], id: ReservationId, expires: Instant, owner: &str);
    /// See [`Ledger::claim_reservation`].
    fn claim_reservation(
        &self,
        token: &[u8; 8],
        owner: &str,
        now: Instant,
    ) -> Option<ReservationId>;
    /// See [`Ledger::take_reservation`].
    fn take_reservation(&self, token: &[u8; 8]) -> Option<(ReservationId, String)>;
    /// See [`Ledger::expire_reservation`].
    fn expire_reservation(&self, token: &[u8; 8], now: Instant) -> Option<(ReservationId, String)>;
    /// See [`Ledger::total`].
    fn total(&self) -> u32;
}

/// Counts shared by every worker's core, and port reservations: a client's RTCP allocation
/// (with RESERVATION-TOKEN) may come from another source port and land on another worker.
/// Plain and single-threaded; an [`AllocationLedger`] shares one between threads.
#[derive(Debug, Default)]
pub struct Ledger {
    total: u32,
    per_user: HashMap<String, u32>,
    /// Token → (held port, expiry, the quota key of the user who reserved it).
    reservations: HashMap<[u8; 8], (ReservationId, Instant, String)>,
}

impl Ledger {
    /// Takes one allocation slot for quota key `key`, or says which quota is full (0: no
    /// limit).
    pub fn try_acquire(
        &mut self,
        key: &str,
        per_user_max: u32,
        total_max: u32,
    ) -> Result<(), QuotaFull> {
        if total_max != 0 && self.total >= total_max {
            return Err(QuotaFull::Total);
        }
        let count = self.per_user.entry(key.to_owned()).or_insert(0);
        if per_user_max != 0 && *count >= per_user_max {
            return Err(QuotaFull::User);
        }
        *count += 1;
        self.total += 1;
        Ok(())
    }

    /// Returns a slot taken by [`Self::try_acquire`].
    pub fn release(&mut self, key: &str) {
        if let Some(count) = self.per_user.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(key);
            }
            self.total -= 1;
        }
    }

    /// Takes one slot of a class count `key` (self-test allocations in total and per source)
    /// under `max`, beside the allocation's own slot: it does not count toward the total.
    /// The keys start with the reserved self-test marker, so they never meet a user's.
    pub fn try_acquire_class(&mut self, key: &str, max: u32) -> bool {
        if self.per_user.get(key).copied().unwrap_or(0) >= max {
            return false;
        }
        *self.per_user.entry(key.to_owned()).or_insert(0) += 1;
        true
    }

    /// Returns a slot taken by [`Self::try_acquire_class`].
    pub fn release_class(&mut self, key: &str) {
        if let Some(count) = self.per_user.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.per_user.remove(key);
            }
        }
    }

    /// Slots taken of a class count (tests and diagnostics).
    pub fn class_count(&self, key: &str) -> u32 {
        self.per_user.get(key).copied().unwrap_or(0)
    }

    /// Records a reservation token (RFC 8656 §7.2) made by quota key `owner`, whose quota
    /// slot it holds.
    pub fn add_reservation(
        &mut self,
        token: [u8; 8],
        id: ReservationId,
        expires: Instant,
        owner: &str,
    ) {
        self.reservations
            .insert(token, (id, expires, owner.to_owned()));
    }

    /// Claims a reservation by its token, for the quota key that made it only: another
    /// user's Allocate finds nothing (and the reservation stays for its owner). A
    /// reservation past its expiry is gone (RFC 8656 §7.2: held about 30 s) even if its
    /// timer, on the worker that made it, has not run yet; that timer still releases its
    /// port and slot.
    pub fn claim_reservation(
        &mut self,
        token: &[u8; 8],
        owner: &str,
        now: Instant,
    ) -> Option<ReservationId> {
        match self.reservations.get(token) {
            Some((id, expires, made_by)) if *expires > now && made_by == owner => {
                let id = *id;
                self.reservations.remove(token);
                Some(id)
            }
            _ => None,
        }
    }

    /// Removes a reservation whatever its owner (shutdown); returns the port and the owner's
    /// quota key.
    pub fn take_reservation(&mut self, token: &[u8; 8]) -> Option<(ReservationId, String)> {
        self.reservations
            .remove(token)
            .map(|(id, _, owner)| (id, owner))
    }

    /// Removes a reservation whose time has come; returns the port and the owner's quota key.
    pub fn expire_reservation(
        &mut self,
        token: &[u8; 8],
        now: Instant,
    ) -> Option<(ReservationId, String)> {
        match self.reservations.get(token) {
            Some((_, expires, _)) if *expires <= now => self
                .reservations
                .remove(token)
                .map(|(id, _, owner)| (id, owner)),
            _ => None,
        }
    }

    /// Allocations alive across all workers.
    pub fn total(&self) -> u32 {
        self.total
    }
}

/// The core's view of the shared ledger: by username, with the quota rules applied.
#[derive(Clone, Debug)]
pub(crate) struct Shared(Arc<dyn AllocationLedger>);

impl Shared {
    pub(crate) fn new(ledger: Arc<dyn AllocationLedger>) -> Self {
        Self(ledger)
    }

    /// Takes one allocation slot for `user`, or says which quota is full.
    pub(crate) fn try_acquire(
        &self,
        user: &str,
        per_user_max: u32,
        total_max: u32,
    ) -> Result<(), QuotaFull> {
        self.0.try_acquire(quota_key(user), per_user_max, total_max)
    }

    /// Returns a slot taken by `try_acquire`.
    pub(crate) fn release(&self, user: &str) {
        self.0.release(quota_key(user));
    }

    /// See [`Ledger::try_acquire_class`].
    pub(crate) fn try_acquire_class(&self, key: &str, max: u32) -> bool {
        self.0.try_acquire_class(key, max)
    }

    /// See [`Ledger::release_class`].
    pub(crate) fn release_class(&self, key: &str) {
        self.0.release_class(key);
    }

    /// Records a reservation token (RFC 8656 §7.2) made by `user`, whose quota slot it holds.
    pub(crate) fn add_reservation(
        &self,
        token: [u8; 8],
        id: ReservationId,
        expires: Instant,
        user: &str,
    ) {
        self.0.add_reservation(token, id, expires, quota_key(user));
    }

    /// Claims a reservation by its token, for the user who made it only (by quota: a fresh
    /// REST credential of the same user may claim it). The quota slot the reservation held
    /// passes to the claiming allocation.
    pub(crate) fn claim_reservation(
        &self,
        token: &[u8; 8],
        user: &str,
        now: Instant,
    ) -> Option<ReservationId> {
        self.0.claim_reservation(token, quota_key(user), now)
    }

    /// Removes a reservation whatever its owner (shutdown) and returns the quota slot it
    /// held; gives back the port for io to release.
    pub(crate) fn take_reservation(&self, token: &[u8; 8]) -> Option<ReservationId> {
        let (id, owner) = self.0.take_reservation(token)?;
        self.0.release(&owner);
        Some(id)
    }

    /// Removes a reservation whose time has come and returns the quota slot it held; gives
    /// back the port for io to release.
    pub(crate) fn expire_reservation(
        &self,
        token: &[u8; 8],
        now: Instant,
    ) -> Option<ReservationId> {
        let (id, owner) = self.0.expire_reservation(token, now)?;
        self.0.release(&owner);
        Some(id)
    }

    /// Allocations alive across all workers.
    pub(crate) fn total(&self) -> u32 {
        self.0.total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::TestLedger;

    #[test]
    fn rest_credentials_of_one_user_share_the_per_user_quota() {
        let shared = Shared::new(Arc::new(TestLedger::default()));
        assert!(shared.try_acquire("1700000000:alice", 1, 0).is_ok());
        assert_eq!(
            shared.try_acquire("1800000000:alice", 1, 0),
            Err(QuotaFull::User)
        );
        assert!(shared.try_acquire("1800000000:bob", 1, 0).is_ok());
        shared.release("1800000000:alice");
        assert!(shared.try_acquire("1900000000:alice", 1, 0).is_ok());
        assert_eq!(shared.total(), 2);
    }

    #[test]
    fn a_reservation_is_claimed_by_its_user_only_and_gives_its_slot_back_when_it_lapses() {
        let shared = Shared::new(Arc::new(TestLedger::default()));
        let start = crate::core::testkit::clock_origin();
        let expires = start + std::time::Duration::from_secs(30);
        let id = ReservationId(7);
        shared.try_acquire("1700000000:alice", 0, 0).unwrap();
        shared.add_reservation([1; 8], id, expires, "1700000000:alice");
        assert_eq!(shared.claim_reservation(&[1; 8], "bob", start), None);
        assert_eq!(
            shared.claim_reservation(&[1; 8], "1800000000:alice", start),
            Some(id)
        );
        shared.try_acquire("alice", 0, 0).unwrap();
        shared.add_reservation([2; 8], id, expires, "alice");
        assert_eq!(shared.expire_reservation(&[2; 8], start), None);
        assert_eq!(shared.expire_reservation(&[2; 8], expires), Some(id));
        assert_eq!(
            shared.total(),
            1,
            "the claimed slot stays, the lapsed one is back"
        );
    }
}
