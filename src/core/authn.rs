//! The long-term credential check of a TURN request (RFC 8489 §9.2.4).
//!
//! Decisions against the RFC text, each with its section:
//! - Order (§9.2.4): the nonce is checked before the username. The RFC lists the
//!   username check (401) first; we answer 438 to a stale or foreign nonce whatever
//!   the username, so a request with an old nonce cannot tell whether a user exists.
//!   With a fresh nonce an unknown user and a wrong password get the same 401 and the
//!   same reason phrase ([`UNAUTHORIZED`]); logs and metrics keep the detail.
//! - Which MAC signs the response (§9.2.4, last paragraph): MESSAGE-INTEGRITY-SHA256
//!   when the request negotiated a password algorithm (PASSWORD-ALGORITHM present, MD5
//!   or SHA-256: the key is the negotiated one either way); MESSAGE-INTEGRITY when it was
//!   processed as though PASSWORD-ALGORITHM were MD5 (neither attribute: an RFC 5389
//!   client, which may not know the SHA-256 MAC). A negotiating request signed with
//!   MESSAGE-INTEGRITY gets MESSAGE-INTEGRITY as well, before MESSAGE-INTEGRITY-SHA256
//!   (§14.5 allows both): the §9.2.4 MUST is met and the client can check the MAC it
//!   used itself, whether or not it knows the other (a client choosing MD5 may well not).
//! - Nonce features (§9.2.5): a nonce advertises "password algorithms" only when its
//!   challenge carried PASSWORD-ALGORITHMS (a challenge kept small may not have room, see
//!   `request`); [`password_algorithm`] reads the bit from the nonce, so a request must
//!   echo PASSWORD-ALGORITHMS exactly when it is set (bid-down protection).
//! - Nonce scope (§9.2.4): one nonce per client source IP address and port; see
//!   [`crate::auth::Nonces::issue`].
//! - Advertised features (§9.2.5): only those every accepted credential can use; see
//!   [`crate::auth::CredentialStore::security_features`].

use crate::auth::{CredentialStore, Key, Lookup, NonceCheck, Nonces, PasswordAlgorithm};
use crate::proto::{Message, error_code as ec};

use super::reply::Macs;
use super::{ClientAddr, Rejection};

/// Our PASSWORD-ALGORITHMS value (RFC 8489 §14.11): SHA-256 preferred, MD5 for older clients.
pub(crate) const PASSWORD_ALGORITHMS: [u8; 8] = [0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];

/// The reason phrase of every 401 on the wire: the challenge, an unknown user, a wrong
/// password and an expired credential all read alike (RFC 5389's phrase, 12 bytes, so
/// the challenge stays small).
pub(crate) const UNAUTHORIZED: &str = "Unauthorized";
/// The reason phrase of every 438 on the wire (RFC 8489 §19.3 registry name).
pub(crate) const STALE_NONCE: &str = "Stale Nonce";

/// A request that passed the check.
pub(crate) struct Authenticated<'m> {
    /// The USERNAME, or the static user a USERHASH resolved to.
    pub username: &'m [u8],
    pub key: Key,
    /// The integrity attributes responses carry (see the module note).
    pub macs: Macs,
    /// Which class of credential it was.
    pub class: CredentialClass,
}

/// The class of a credential, which decides what its allocations may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CredentialClass {
    /// A static user or a TURN REST credential.
    Normal,
    /// A self-test credential (`auth::selftest`): its allocations reach only our own relays,
    /// within `Settings::selftest`.
    SelfTest,
}

/// How the check failed. A challenge's `reason` is the detail for logs and the
/// `auth_failures_total{reason}` metric; the wire carries [`wire_reason`] instead.
pub(crate) enum AuthFailure {
    /// Answer with a fresh challenge (401 or 438 with REALM, NONCE, PASSWORD-ALGORITHMS).
    Challenge(Rejection),
    /// Answer 400 without a challenge.
    BadRequest(Rejection),
}

/// The reason phrase a challenge carries on the wire.
pub(crate) fn wire_reason(code: u16) -> &'static str {
    if code == ec::STALE_NONCE {
        STALE_NONCE
    } else {
        UNAUTHORIZED
    }
}

/// Checks credentials in RFC 8489 §9.2.4 order (but the nonce before the user, see the
/// module note), then MESSAGE-INTEGRITY against every candidate key (several REST secrets
/// may be active during a rotation).
pub(crate) fn authenticate<'m>(
    msg: &Message<'m>,
    store: &'m CredentialStore,
    nonces: &Nonces,
    client: ClientAddr,
    unix_now: u64,
) -> Result<Authenticated<'m>, AuthFailure> {
    use AuthFailure::{BadRequest, Challenge};
    let unauthorized = |detail| Challenge(Rejection::new(ec::UNAUTHENTICATED, detail));
    if !msg.has_integrity() {
        return Err(unauthorized("credentials required"));
    }
    let bad = |reason| BadRequest(Rejection::new(ec::BAD_REQUEST, reason));
    let nonce = match msg.nonce() {
        Some(Ok(n)) => n,
        _ => return Err(bad("NONCE missing or malformed")),
    };
    if !matches!(msg.realm(), Some(Ok(_))) {
        return Err(bad("REALM missing or malformed"));
    }
    let user = match (msg.username(), msg.userhash()) {
        (Some(Ok(u)), _) => User::Name(u),
        (None, Some(Ok(hash))) => User::Hash(hash),
        _ => return Err(bad("USERNAME or USERHASH missing or malformed")),
    };
    let (alg, negotiated) = password_algorithm(msg, nonce)?;
    match nonces.verify(nonce, unix_now, client.addr(), store.security_features()) {
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
    // An unknown user still costs one MAC check, so the answer's timing tells it from a wrong
    // password less readily than it would without (the phrase already does not).
    let refuse = |detail| {
        let _ = msg.verify_integrity(&[0; 16]);
        Err(unauthorized(detail))
    };
    let username: &'m [u8] = match user {
        User::Name(name) => name,
        User::Hash(hash) => match store.username_for_hash(hash) {
            Some(name) => name.as_bytes(),
            None => return refuse("unknown USERHASH"),
        },
    };
    let (keys, class) = match store.lookup(username, alg, unix_now) {
        Lookup::Keys(keys) => (keys, CredentialClass::Normal),
        Lookup::SelfTest(keys) => (keys, CredentialClass::SelfTest),
        Lookup::Expired => return refuse("time-limited credential expired"),
        Lookup::Unknown => return refuse("unknown username"),
    };
    for key in keys.iter() {
        if msg.verify_integrity(key.as_bytes()).is_ok() {
            return Ok(Authenticated {
                username,
                key: *key,
                macs: response_macs(msg, negotiated),
                class,
            });
        }
    }
    Err(unauthorized(
        "message integrity check failed (wrong password)",
    ))
}

/// A short, stable label for an authentication failure's reason (the `reason` label of
/// `turnstone_auth_failures_total`); logs keep the sentence.
pub(crate) fn failure_label(reason: &str) -> &'static str {
    match reason {
        "credentials required" => "no_credentials",
        "NONCE missing or malformed" => "bad_nonce",
        "REALM missing or malformed" => "bad_realm",
        "USERNAME or USERHASH missing or malformed" => "bad_username",
        "nonce expired" => "stale_nonce",
        "nonce not issued to this client" => "foreign_nonce",
        "unknown USERHASH" => "unknown_userhash",
        "time-limited credential expired" => "expired_credential",
        "unknown username" => "unknown_user",
        "message integrity check failed (wrong password)" => "wrong_password",
        "PASSWORD-ALGORITHMS differs from the server's list" => "algorithms_mismatch",
        "unsupported PASSWORD-ALGORITHM" => "unsupported_algorithm",
        "PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS must come together" => "algorithm_incomplete",
        _ => "other",
    }
}

/// RFC 8489 §9.2.4: MESSAGE-INTEGRITY-SHA256 when an algorithm was negotiated, else
/// MESSAGE-INTEGRITY; plus MESSAGE-INTEGRITY when the request was signed with it, so the
/// client can check the attribute it used (see the module note).
fn response_macs(msg: &Message<'_>, negotiated: bool) -> Macs {
    Macs {
        sha1: !negotiated || msg.has_message_integrity(),
        sha256: negotiated,
    }
}

/// Who the request claims to be.
enum User<'m> {
    Name(&'m [u8]),
    Hash(&'m [u8]),
}

/// RFC 8489 §9.2.4 bid-down protection: PASSWORD-ALGORITHMS must echo ours and
/// PASSWORD-ALGORITHM must be one of them; a client that sends neither is processed as
/// though it had chosen MD5. Returns the algorithm and whether it was negotiated.
fn password_algorithm(
    msg: &Message<'_>,
    nonce: &[u8],
) -> Result<(PasswordAlgorithm, bool), AuthFailure> {
    let bad = |reason| AuthFailure::BadRequest(Rejection::new(ec::BAD_REQUEST, reason));
    match (msg.password_algorithms(), msg.password_algorithm()) {
        (None, None) => Ok((PasswordAlgorithm::Md5, false)),
        (Some(list), Some(Ok(code))) if Nonces::has_security_features(nonce) => {
            if list != PASSWORD_ALGORITHMS {
                return Err(bad("PASSWORD-ALGORITHMS differs from the server's list"));
            }
            PasswordAlgorithm::from_code(code)
                .map(|alg| (alg, true))
                .ok_or_else(|| bad("unsupported PASSWORD-ALGORITHM"))
        }
        _ => Err(bad(
            "PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS must come together",
        )),
    }
}
