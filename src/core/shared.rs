//! The little state workers share: allocation counts for quotas (written on allocate and free only).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
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

/// Counts shared by every worker's core, and port reservations: a client's RTCP allocation
/// (with RESERVATION-TOKEN) may come from another source port and land on another worker.
#[derive(Debug, Default)]
pub struct SharedState {
    total: AtomicU32,
    per_user: Mutex<HashMap<String, u32>>,
    /// Token → (held port, expiry, the username that reserved it).
    reservations: Mutex<HashMap<[u8; 8], (ReservationId, Instant, String)>>,
}

impl SharedState {
    /// Takes one allocation slot for `user`, or says which quota is full.
    pub fn try_acquire(
        &self,
        user: &str,
        per_user_max: u32,
        total_max: u32,
    ) -> Result<(), QuotaFull> {
        let Ok(mut users) = self.per_user.lock() else {
            return Err(QuotaFull::Total);
        };
        if total_max != 0 && self.total.load(Ordering::Relaxed) >= total_max {
            return Err(QuotaFull::Total);
        }
        let count = users.entry(quota_key(user).to_owned()).or_insert(0);
        if per_user_max != 0 && *count >= per_user_max {
            return Err(QuotaFull::User);
        }
        *count += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Returns a slot taken by `try_acquire`.
    pub fn release(&self, user: &str) {
        let Ok(mut users) = self.per_user.lock() else {
            return;
        };
        let key = quota_key(user);
        if let Some(count) = users.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                users.remove(key);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Takes one slot of a class count `key` (self-test allocations in total and per source)
    /// under `max`, beside the allocation's own slot: it does not count toward the total.
    /// The keys start with the reserved self-test marker, so they never meet a user's.
    pub fn try_acquire_class(&self, key: &str, max: u32) -> bool {
        let Ok(mut users) = self.per_user.lock() else {
            return false;
        };
        if users.get(key).copied().unwrap_or(0) >= max {
            return false;
        }
        *users.entry(key.to_owned()).or_insert(0) += 1;
        true
    }

    /// Returns a slot taken by [`Self::try_acquire_class`].
    pub fn release_class(&self, key: &str) {
        let Ok(mut users) = self.per_user.lock() else {
            return;
        };
        if let Some(count) = users.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                users.remove(key);
            }
        }
    }

    /// Slots taken of a class count (tests and diagnostics).
    pub fn class_count(&self, key: &str) -> u32 {
        self.per_user
            .lock()
            .ok()
            .and_then(|users| users.get(key).copied())
            .unwrap_or(0)
    }

    /// Records a reservation token (RFC 8656 §7.2) made by `user`, whose quota slot it holds.
    pub(crate) fn add_reservation(
        &self,
        token: [u8; 8],
        id: ReservationId,
        expires: Instant,
        user: &str,
    ) {
        if let Ok(mut r) = self.reservations.lock() {
            r.insert(token, (id, expires, user.to_owned()));
        }
    }

    /// Claims a reservation by its token, for the user who made it only: another user's
    /// Allocate finds nothing (and the reservation stays for its owner). The quota slot the
    /// reservation held passes to the claiming allocation. A reservation past its expiry is
    /// gone (RFC 8656 §7.2: held about 30 s) even if its timer, on the worker that made it,
    /// has not run yet; that timer still releases its port and slot.
    pub(crate) fn claim_reservation(
        &self,
        token: &[u8; 8],
        user: &str,
        now: Instant,
    ) -> Option<ReservationId> {
        let mut r = self.reservations.lock().ok()?;
        match r.get(token) {
            Some((id, expires, owner)) if *expires > now && quota_key(owner) == quota_key(user) => {
                let id = *id;
                r.remove(token);
                Some(id)
            }
            _ => None,
        }
    }

    /// Removes a reservation whatever its owner (shutdown); returns the port and the owner,
    /// whose quota slot the caller releases.
    pub(crate) fn take_reservation(&self, token: &[u8; 8]) -> Option<(ReservationId, String)> {
        self.reservations
            .lock()
            .ok()?
            .remove(token)
            .map(|(id, _, owner)| (id, owner))
    }

    /// Removes a reservation whose time has come; returns the port and the owner.
    pub(crate) fn expire_reservation(
        &self,
        token: &[u8; 8],
        now: Instant,
    ) -> Option<(ReservationId, String)> {
        let mut r = self.reservations.lock().ok()?;
        match r.get(token) {
            Some((_, expires, _)) if *expires <= now => {
                r.remove(token).map(|(id, _, owner)| (id, owner))
            }
            _ => None,
        }
    }

    /// Allocations alive across all workers.
    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_of_one_user_share_the_per_user_quota() {
        let shared = SharedState::default();
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
}
