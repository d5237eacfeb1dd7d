//! Credentials for TURN: RFC 8489 §9.2 long-term credentials, the TURN REST API
//! time-limited credentials (draft-uberti-behave-turn-rest-00, coturn's
//! `use-auth-secret`), stateless nonces and USERHASH.
//!
//! Pure logic: no sockets, no clock (time comes in as `unix_now` seconds), no
//! runtime. `lookup` and `verify` run per request and do not allocate.
//!
//! Usernames, realms and passwords are used as raw bytes: OpaqueString
//! (RFC 8265) / SASLprep preparation is not applied, so credentials are assumed
//! to be ASCII (for which the preparation is the identity).

mod key;
mod nonce;
mod rest;
mod selftest;
mod store;

pub use key::{Key, PasswordAlgorithm, long_term_key, userhash};
pub use nonce::{NONCE_COOKIE, NonceBuf, NonceCheck, Nonces, SecurityFeatures};
pub use rest::{rest_expiry, rest_password, rest_username};
pub use selftest::{REPORT_ID_LEN, ReportId, SELFTEST_MARKER, SelftestKey, is_selftest_username};
pub use store::{CredentialStore, KeyList, Lookup, MAX_SECRETS};

/// Errors of the credential module.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The operating system's random number generator failed.
    #[error("could not read OS randomness for the nonce key: {0}")]
    Random(getrandom::Error),
}
