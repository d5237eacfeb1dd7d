//! Self-test credentials: the class of credential the public self-test page hands to anyone
//! who opens it, so that their browser can relay through this server to itself.
//!
//! Such a credential must never be a way to reach anything else (RFC 8656 §21: a TURN
//! server lends its network position to whoever can allocate), so it is a class of its own,
//! recognised by its username and proven by its password:
//!
//! - The username is REST-shaped (draft-uberti-behave-turn-rest-00 §2.2): `EXPIRY:#selftest-ID`,
//!   where `EXPIRY` is in Unix seconds and `ID` the short report ID the page shows. The
//!   `#selftest` marker is reserved: [`super::CredentialStore::lookup`] checks such a name only
//!   against the self-test key, never against the REST secrets or the static users, so a REST
//!   credential minted by a signaling service can neither claim the class nor escape it.
//! - The password is base64(HMAC-SHA1(self-test key, username)), like a REST password but under
//!   a key generated for each server process and never written anywhere: nobody can forge one,
//!   and none survives a restart.
//!
//! What the class may do is decided in the core (`core::settings::SelftestLimits` and the peer
//! policy's own-relays scope); this module only mints and recognises.

use std::fmt;

use super::rest::{HmacSha1, hmac_sha1, parse_rest_expiry, rest_password_with};

/// The reserved marker at the start of a self-test username's user part.
pub const SELFTEST_MARKER: &str = "#selftest";

/// Characters of a report ID: Crockford's base32 alphabet (no I, L, O, U: nothing to misread
/// when a user reads the ID out to an operator).
const ID_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a report ID (40 random bits).
pub const REPORT_ID_LEN: usize = 8;

/// The per-process key that signs self-test credentials. `Debug` hides it.
#[derive(Clone)]
pub struct SelftestKey {
    mac: HmacSha1,
}

impl SelftestKey {
    /// A key from 32 bytes of OS randomness (generated at start, see `Nonces::random_key`).
    pub fn new(bytes: [u8; 32]) -> Self {
        Self {
            mac: hmac_sha1(&bytes),
        }
    }

    /// A self-test credential for report `id` that expires at `expiry` (Unix seconds):
    /// `(username, password)`.
    pub fn mint(&self, id: &ReportId, expiry: u64) -> (String, String) {
        let username = format!("{expiry}:{SELFTEST_MARKER}-{}", id.as_str());
        let password = rest_password_with(&self.mac, &username);
        (username, password)
    }

    /// The password of a self-test `username` (the caller has checked the marker).
    pub(crate) fn password(&self, username: &[u8]) -> Option<[u8; super::rest::REST_PASSWORD_LEN]> {
        super::rest::rest_password_buf(&self.mac, username)
    }

    /// Checks a credential the page presents with its report: the report ID and the expiry
    /// when `password` is this key's password for `username` (compared in constant time).
    /// The caller decides how long after the expiry a report is still taken.
    pub fn verify(&self, username: &str, password: &str) -> Option<(ReportId, u64)> {
        let id = parse_username(username.as_bytes())?;
        let expiry = parse_rest_expiry(username.as_bytes())?;
        let expected = self.password(username.as_bytes())?;
        constant_time_eq(&expected, password.as_bytes()).then_some((id, expiry))
    }
}

impl fmt::Debug for SelftestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SelftestKey(hidden)")
    }
}

/// Whether `username` carries the reserved self-test marker: its user part (after the first
/// ':' of a REST name, or the whole name) starts with [`SELFTEST_MARKER`]. Such a name is
/// never a static user or a REST user.
pub fn is_selftest_username(username: &[u8]) -> bool {
    let marker = SELFTEST_MARKER.as_bytes();
    let user = match username.iter().position(|&b| b == b':') {
        Some(i) => &username[i + 1..],
        None => username,
    };
    user.starts_with(marker) || username.starts_with(marker)
}

/// The report ID of a well-formed self-test username `EXPIRY:#selftest-ID`.
fn parse_username(username: &[u8]) -> Option<ReportId> {
    let colon = username.iter().position(|&b| b == b':')?;
    let rest = username[colon + 1..].strip_prefix(SELFTEST_MARKER.as_bytes())?;
    let id = rest.strip_prefix(b"-")?;
    ReportId::parse(std::str::from_utf8(id).ok()?)
}

/// A short report ID (8 characters of Crockford base32), shown as `ABCD-EFGH`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportId([u8; REPORT_ID_LEN]);

impl ReportId {
    /// An ID from 5 random bytes (40 bits).
    pub fn from_random(bytes: [u8; 5]) -> Self {
        let bits = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        let mut out = [0u8; REPORT_ID_LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (REPORT_ID_LEN - 1 - i);
            *slot = ID_ALPHABET[((bits >> shift) & 31) as usize];
        }
        Self(out)
    }

    /// Parses the 8 characters (no dash), upper case only.
    pub fn parse(s: &str) -> Option<Self> {
        let bytes: [u8; REPORT_ID_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| ID_ALPHABET.contains(b))
            .then_some(Self(bytes))
    }

    /// The 8 characters, as in the username.
    pub fn as_str(&self) -> &str {
        // Invariant: every byte comes from ID_ALPHABET, which is ASCII.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for ReportId {
    /// `ABCD-EFGH`: the form users read out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_str();
        write!(f, "{}-{}", &s[..4], &s[4..])
    }
}

impl fmt::Debug for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportId({self})")
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SelftestKey {
        SelftestKey::new([3; 32])
    }

    #[test]
    fn minted_credentials_verify_and_carry_their_report_id() {
        let id = ReportId::from_random([1, 2, 3, 4, 5]);
        let (username, password) = key().mint(&id, 1_700_000_300);
        assert_eq!(username, format!("1700000300:#selftest-{}", id.as_str()));
        assert!(is_selftest_username(username.as_bytes()));
        assert_eq!(
            key().verify(&username, &password),
            Some((id, 1_700_000_300))
        );
    }

    #[test]
    fn another_key_or_a_changed_name_does_not_verify() {
        let id = ReportId::from_random([9; 5]);
        let (username, password) = key().mint(&id, 1_700_000_300);
        assert_eq!(SelftestKey::new([4; 32]).verify(&username, &password), None);
        let other = username.replace("1700000300", "1700000301");
        assert_eq!(key().verify(&other, &password), None);
        assert_eq!(key().verify(&username, "x"), None);
    }

    #[test]
    fn the_marker_is_reserved_in_every_position_a_user_name_can_take() {
        for name in [
            "#selftest",
            "#selftest-ABCD",
            "1700000000:#selftest-ABCDEFGH",
            "1700000000:#selftestx",
        ] {
            assert!(is_selftest_username(name.as_bytes()), "{name}");
        }
        for name in ["alice", "1700000000:alice", "1700000000:a#selftest", ""] {
            assert!(!is_selftest_username(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn report_ids_use_crockford_base32_and_print_with_a_dash() {
        let id = ReportId::from_random([0xff; 5]);
        assert_eq!(id.as_str(), "ZZZZZZZZ");
        assert_eq!(id.to_string(), "ZZZZ-ZZZZ");
        assert_eq!(ReportId::from_random([0; 5]).as_str(), "00000000");
        assert_eq!(
            ReportId::parse("ABCDEFGH")
                .map(|i| i.to_string())
                .as_deref(),
            Some("ABCD-EFGH")
        );
        for bad in ["ABCDEFG", "ABCDEFGHI", "abcdefgh", "ABCDEFGI", "ABCD-EFG"] {
            assert_eq!(ReportId::parse(bad), None, "{bad}");
        }
    }
}
