//! Long-term credential keys (RFC 8489 §9.2.2) and USERHASH (RFC 8489 §14.4).

use std::fmt;

use md5::Md5;
use sha2::Digest;
use sha2::Sha256;

/// RFC 8489 §18.5 PASSWORD-ALGORITHM values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PasswordAlgorithm {
    /// MD5 (0x0001), the RFC 5389 key derivation.
    Md5,
    /// SHA-256 (0x0002).
    Sha256,
}

impl PasswordAlgorithm {
    /// The 16-bit code carried in PASSWORD-ALGORITHM(S) attributes.
    pub const fn code(self) -> u16 {
        match self {
            Self::Md5 => 0x0001,
            Self::Sha256 => 0x0002,
        }
    }

    /// The algorithm for a registered code; `None` for unknown codes.
    pub const fn from_code(code: u16) -> Option<Self> {
        match code {
            0x0001 => Some(Self::Md5),
            0x0002 => Some(Self::Sha256),
            _ => None,
        }
    }

    /// Length in bytes of the key this algorithm derives.
    pub const fn key_len(self) -> usize {
        match self {
            Self::Md5 => 16,
            Self::Sha256 => 32,
        }
    }
}

/// The long-term key (16 bytes MD5 or 32 bytes SHA-256), stack-allocated.
///
/// `Debug` prints only the length, never the key.
#[derive(Clone, Copy)]
pub struct Key {
    bytes: [u8; 32],
    len: u8,
}

impl Key {
    /// A zero-length placeholder, used to fill inline key arrays.
    pub(crate) const EMPTY: Key = Key {
        bytes: [0; 32],
        len: 0,
    };

    /// Copies at most 32 bytes of `digest` into a key.
    fn from_digest(digest: &[u8]) -> Key {
        let mut key = Key::EMPTY;
        let n = digest.len().min(key.bytes.len());
        key.bytes[..n].copy_from_slice(&digest[..n]);
        // n <= 32, so the cast is lossless.
        key.len = n as u8;
        key
    }

    /// The key bytes, used as the HMAC key of MESSAGE-INTEGRITY(-SHA256).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(<{} bytes redacted>)", self.len)
    }
}

/// RFC 8489 §9.2.2: MD5(username ":" realm ":" password), or SHA-256 of the
/// same string for [`PasswordAlgorithm::Sha256`].
///
/// The RFC applies OpaqueString (RFC 8265) to realm and password first; that
/// preparation is not done here, so ASCII credentials are assumed.
pub fn long_term_key(
    alg: PasswordAlgorithm,
    username: &[u8],
    realm: &[u8],
    password: &[u8],
) -> Key {
    match alg {
        PasswordAlgorithm::Md5 => Key::from_digest(&joined::<Md5>(&[username, realm, password])),
        PasswordAlgorithm::Sha256 => {
            Key::from_digest(&joined::<Sha256>(&[username, realm, password]))
        }
    }
}

/// RFC 8489 §14.4 USERHASH = SHA-256(username ":" realm), so a client can
/// authenticate without sending its username in the clear.
pub fn userhash(username: &[u8], realm: &[u8]) -> [u8; 32] {
    joined::<Sha256>(&[username, realm]).into()
}

/// Hashes `parts` joined by ':' without building the joined string.
fn joined<D: Digest>(parts: &[&[u8]]) -> sha2::digest::Output<D> {
    let mut hasher = D::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b":");
        }
        hasher.update(part);
    }
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn password_algorithm_codes_round_trip() {
        for alg in [PasswordAlgorithm::Md5, PasswordAlgorithm::Sha256] {
            assert_eq!(PasswordAlgorithm::from_code(alg.code()), Some(alg));
        }
        assert_eq!(PasswordAlgorithm::Md5.code(), 0x0001);
        assert_eq!(PasswordAlgorithm::Sha256.code(), 0x0002);
        assert_eq!(PasswordAlgorithm::from_code(0x0000), None);
        assert_eq!(PasswordAlgorithm::from_code(0x0003), None);
    }

    #[test]
    fn md5_key_is_md5_of_user_realm_password() {
        let key = long_term_key(PasswordAlgorithm::Md5, b"user", b"example.org", b"pass");
        let expected = Md5::digest(b"user:example.org:pass");
        assert_eq!(key.as_bytes(), expected.as_slice());
        // `printf %s user:example.org:pass | md5sum`
        assert_eq!(hex(key.as_bytes()), "abca35356f4b00fbc33e2d8c2c43b9d6");
    }

    #[test]
    fn sha256_key_is_sha256_of_user_realm_password() {
        let key = long_term_key(PasswordAlgorithm::Sha256, b"user", b"example.org", b"pass");
        assert_eq!(key.as_bytes().len(), 32);
        // `printf %s user:example.org:pass | sha256sum`
        assert_eq!(
            hex(key.as_bytes()),
            "2eab843d62723b5549ca4dde2641a8c07ba67a3c7df8919c8da81ee206a4b907"
        );
    }

    #[test]
    fn rfc8489_b1_key_matches_prepared_credentials() {
        // RFC 8489 Appendix B.1: username U+30DE U+30C8 U+30EA U+30C3 U+30AF U+30B9,
        // password "TheMatrIX" after OpaqueString, realm "example.org".
        let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        let key = long_term_key(
            PasswordAlgorithm::Sha256,
            user.as_bytes(),
            b"example.org",
            b"TheMatrIX",
        );
        let expected = Sha256::digest(format!("{user}:example.org:TheMatrIX"));
        assert_eq!(key.as_bytes(), expected.as_slice());
    }

    #[test]
    fn userhash_matches_rfc8489_b1() {
        let user = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
        assert_eq!(
            hex(&userhash(user.as_bytes(), b"example.org")),
            "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
        );
    }

    #[test]
    fn key_debug_does_not_print_the_key() {
        let key = long_term_key(PasswordAlgorithm::Md5, b"user", b"example.org", b"pass");
        assert_eq!(format!("{key:?}"), "Key(<16 bytes redacted>)");
    }
}
