//! The long-term credential check of a TURN request (RFC 8489 §9.2.4).

use std::net::IpAddr;

use crate::auth::{CredentialStore, Key, Lookup, NonceCheck, Nonces, PasswordAlgorithm};
use crate::proto::{Message, error_code as ec};

use super::Rejection;

/// Our PASSWORD-ALGORITHMS value (RFC 8489 §14.11): SHA-256 preferred, MD5 for older clients.
pub(crate) const PASSWORD_ALGORITHMS: [u8; 8] = [0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];

/// A request that passed the check.
pub(crate) struct Authenticated<'m> {
    /// The USERNAME, or the static user a USERHASH resolved to.
    pub username: &'m [u8],
    pub key: Key,
    pub sha256: bool,
}

/// How the check failed.
pub(crate) enum AuthFailure {
    /// Answer with a fresh challenge (401 or 438 with REALM, NONCE, PASSWORD-ALGORITHMS).
    Challenge(Rejection),
    /// Answer 400 without a challenge.
    BadRequest(Rejection),
}

/// Checks credentials: nonce first, then the user, then MESSAGE-INTEGRITY against every candidate
/// key (several REST secrets may be active during a rotation).
pub(crate) fn authenticate<'m>(
    msg: &Message<'m>,
    store: &'m CredentialStore,
    nonces: &Nonces,
    client_ip: IpAddr,
    unix_now: u64,
) -> Result<Authenticated<'m>, AuthFailure> {
    use AuthFailure::{BadRequest, Challenge};
    if !msg.has_integrity() {
        return Err(Challenge(Rejection::new(
            ec::UNAUTHENTICATED,
            "credentials required",
        )));
    }
    let bad = |reason| BadRequest(Rejection::new(ec::BAD_REQUEST, reason));
    let nonce = match msg.nonce() {
        Some(Ok(n)) => n,
        _ => return Err(bad("NONCE missing or malformed")),
    };
    if !matches!(msg.realm(), Some(Ok(_))) {
        return Err(bad("REALM missing or malformed"));
    }
    let username: &'m [u8] = match (msg.username(), msg.userhash()) {
        (Some(Ok(u)), _) => u,
        (None, Some(Ok(hash))) => match store.username_for_hash(hash) {
            Some(name) => name.as_bytes(),
            None => {
                return Err(Challenge(Rejection::new(
                    ec::UNAUTHENTICATED,
                    "unknown USERHASH",
                )));
            }
        },
        _ => return Err(bad("USERNAME or USERHASH missing or malformed")),
    };
    match nonces.verify(nonce, unix_now, client_ip) {
        NonceCheck::Valid => {}
        NonceCheck::Stale => {
            return Err(Challenge(Rejection::new(ec::STALE_NONCE, "nonce expired")));
        }
        NonceCheck::Invalid => {
            return Err(Challenge(Rejection::new(
                ec::STALE_NONCE,
                "nonce not issued to this client",
            )));
        }
    }
    let alg = password_algorithm(msg, nonce)?;
    let keys = match store.lookup(username, alg, unix_now) {
        Lookup::Keys(keys) => keys,
        Lookup::Expired => {
            return Err(Challenge(Rejection::new(
                ec::UNAUTHENTICATED,
                "time-limited credential expired",
            )));
        }
        Lookup::Unknown => {
            return Err(Challenge(Rejection::new(
                ec::UNAUTHENTICATED,
                "unknown username",
            )));
        }
    };
    let sha256 = msg.has_integrity_sha256();
    for key in keys.iter() {
        if msg.verify_integrity(key.as_bytes()).is_ok() {
            return Ok(Authenticated {
                username,
                key: *key,
                sha256,
            });
        }
    }
    Err(Challenge(Rejection::new(
        ec::UNAUTHENTICATED,
        "message integrity check failed (wrong password)",
    )))
}

/// RFC 8489 §9.2.4 bid-down protection: PASSWORD-ALGORITHMS must echo ours and
/// PASSWORD-ALGORITHM must be one of them; a client that sends neither uses MD5.
fn password_algorithm(msg: &Message<'_>, nonce: &[u8]) -> Result<PasswordAlgorithm, AuthFailure> {
    let bad = |reason| AuthFailure::BadRequest(Rejection::new(ec::BAD_REQUEST, reason));
    match (msg.password_algorithms(), msg.password_algorithm()) {
        (None, None) => Ok(PasswordAlgorithm::Md5),
        (Some(list), Some(Ok(code))) if Nonces::has_security_features(nonce) => {
            if list != PASSWORD_ALGORITHMS {
                return Err(bad("PASSWORD-ALGORITHMS differs from the server's list"));
            }
            PasswordAlgorithm::from_code(code).ok_or_else(|| bad("unsupported PASSWORD-ALGORITHM"))
        }
        _ => Err(bad(
            "PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS must come together",
        )),
    }
}
