//! TURN REST API time-limited credentials (draft-uberti-behave-turn-rest-00 §2.2,
//! coturn `use-auth-secret`): username "<unix-expiry>" or "<unix-expiry>:<user>",
//! password base64(HMAC-SHA1(secret, username)).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::{Digest, Sha1};

/// HMAC-SHA1 keyed with a REST secret.
pub(crate) type HmacSha1 = Hmac<Sha1>;

/// Length of a REST password: base64 of a 20-byte HMAC-SHA1 with padding.
pub(crate) const REST_PASSWORD_LEN: usize = 28;

// The stack buffer in `rest_password_buf` relies on this length.
const _: () = assert!(matches!(
    base64::encoded_len(20, true),
    Some(REST_PASSWORD_LEN)
));

/// SHA-1 block size; RFC 2104 §2 pads (or first hashes) the key to it.
const SHA1_BLOCK: usize = 64;

/// An HMAC-SHA1 state keyed with `secret`, ready to clone per message.
///
/// RFC 2104 §2: a key longer than the block is replaced by its hash, a shorter
/// one is zero-padded. Done here so that keying is infallible for any length.
pub(crate) fn hmac_sha1(secret: &[u8]) -> HmacSha1 {
    let mut block = [0u8; SHA1_BLOCK];
    if secret.len() > SHA1_BLOCK {
        block[..20].copy_from_slice(&Sha1::digest(secret));
    } else {
        block[..secret.len()].copy_from_slice(secret);
    }
    <HmacSha1 as hmac::digest::KeyInit>::new(&block.into())
}

/// The REST password for `username` into a stack buffer (no heap).
///
/// `None` cannot happen (the buffer has the exact encoded length); callers
/// treat it as "no key", failing closed.
pub(crate) fn rest_password_buf(
    mac: &HmacSha1,
    username: &[u8],
) -> Option<[u8; REST_PASSWORD_LEN]> {
    let tag = mac.clone().chain_update(username).finalize().into_bytes();
    let mut out = [0u8; REST_PASSWORD_LEN];
    let n = STANDARD.encode_slice(tag, &mut out).ok()?;
    (n == REST_PASSWORD_LEN).then_some(out)
}

/// The REST password with an already-keyed MAC.
pub(crate) fn rest_password_with(mac: &HmacSha1, username: &str) -> String {
    STANDARD.encode(mac.clone().chain_update(username).finalize().into_bytes())
}

/// TURN REST API password: base64(HMAC-SHA1(secret, username)), as minted by
/// a web service that shares `secret` with the TURN server.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    rest_password_with(&hmac_sha1(secret), username)
}

/// TURN REST API username: "<expiry>" or "<expiry>:<user>" with the expiry
/// in Unix seconds.
pub fn rest_username(expiry_unix: u64, user: Option<&str>) -> String {
    match user {
        Some(user) => format!("{expiry_unix}:{user}"),
        None => expiry_unix.to_string(),
    }
}

/// The expiry of a REST username: the decimal digits before the first ':' (or
/// the whole username when there is no ':'). Only the expiry-first form is a
/// REST username; coturn's reverse "<user>:<expiry>" is not accepted.
pub fn rest_expiry(username: &str) -> Option<u64> {
    parse_rest_expiry(username.as_bytes())
}

/// [`rest_expiry`] on raw USERNAME bytes.
pub(crate) fn parse_rest_expiry(username: &[u8]) -> Option<u64> {
    let digits = username.split(|&b| b == b':').next()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_openssl() {
        // `printf %s 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64`
        assert_eq!(
            rest_password(b"secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
        // `printf %s 1700000000 | openssl dgst -sha1 -hmac secret -binary | base64`
        assert_eq!(
            rest_password(b"secret", "1700000000"),
            "WGw37+g43pfwVUmrc9tgArn/juE="
        );
    }

    #[test]
    fn stack_password_equals_heap_password() {
        let mac = hmac_sha1(b"secret");
        let buf = rest_password_buf(&mac, b"1700000000:alice").unwrap();
        assert_eq!(&buf[..], b"d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn long_secrets_are_hashed_like_hmac_does() {
        for len in [0, 1, 63, 64, 65, 200] {
            let secret = vec![0x5a; len];
            let ours = hmac_sha1(&secret)
                .chain_update(b"x")
                .finalize()
                .into_bytes();
            let theirs = <HmacSha1 as Mac>::new_from_slice(&secret)
                .unwrap()
                .chain_update(b"x")
                .finalize()
                .into_bytes();
            assert_eq!(ours, theirs, "secret length {len}");
        }
    }

    #[test]
    fn rest_username_puts_expiry_first() {
        assert_eq!(
            rest_username(1_700_000_000, Some("alice")),
            "1700000000:alice"
        );
        assert_eq!(rest_username(1_700_000_000, None), "1700000000");
    }

    #[test]
    fn rest_expiry_reads_digits_before_first_colon() {
        assert_eq!(rest_expiry("1700000000:alice"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:a:b"), Some(1_700_000_000));
        assert_eq!(rest_expiry("1700000000:"), Some(1_700_000_000));
    }

    #[test]
    fn non_rest_usernames_have_no_expiry() {
        for name in [
            "alice",
            "alice:1700000000",
            "",
            ":alice",
            "+17:alice",
            "-1",
            "17 :a",
            "0x10",
            "18446744073709551616", // u64::MAX + 1
        ] {
            assert_eq!(rest_expiry(name), None, "{name:?}");
        }
        assert_eq!(rest_expiry("18446744073709551615"), Some(u64::MAX));
    }
}
