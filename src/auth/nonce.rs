//! Stateless nonces (RFC 8489 §9.2): the server keeps no nonce table; a nonce
//! carries its expiry and a MAC binding it to the client's IP.
//!
//! Format (ASCII, at most [`NonceBuf::CAPACITY`] bytes, well under the 128
//! characters of RFC 8489 §14.10):
//! `"obMatJos2"` + `"AAAD"` + expiry (lowercase hex Unix seconds, no leading
//! zeros) + `"."` + hex of the first 16 bytes of
//! HMAC-SHA256(server key, features ‖ expiry (u64 BE) ‖ client IP octets).

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuthError;

/// RFC 8489 §9.2 "nonce cookie" that starts a nonce carrying a security
/// feature set.
pub const NONCE_COOKIE: &[u8; 9] = b"obMatJos2";

/// RFC 8489 §18.1 security feature set, 24 bits: bit 0 "password algorithms",
/// bit 1 "username anonymity". Bit 0 is the least significant bit (verified
/// erratum 6290; the §18.1 prose says otherwise). We support both.
const FEATURES: [u8; 3] = [0x00, 0x00, 0b11];
/// `FEATURES` in base64 (checked by a test).
const FEATURES_B64: &[u8; 4] = b"AAAD";
/// "Password algorithms" in the last byte of the feature set.
const PASSWORD_ALGORITHMS_BIT: u8 = 0b01;

/// Truncated MAC length; 128 bits are plenty against forgery.
const MAC_LEN: usize = 16;
/// SHA-256 block size; the 32-byte key is zero-padded to it (RFC 2104 §2).
const SHA256_BLOCK: usize = 64;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A nonce in a fixed-size inline buffer.
#[derive(Clone, Copy)]
pub struct NonceBuf {
    bytes: [u8; NonceBuf::CAPACITY],
    len: u8,
}

impl NonceBuf {
    /// Longest nonce: cookie 9 + features 4 + expiry 16 + "." 1 + MAC 32.
    pub const CAPACITY: usize = 62;

    fn new() -> Self {
        Self {
            bytes: [0; Self::CAPACITY],
            len: 0,
        }
    }

    /// Appends `data`; the format never exceeds the capacity.
    fn push(&mut self, data: &[u8]) {
        let start = usize::from(self.len);
        let end = (start + data.len()).min(Self::CAPACITY);
        self.bytes[start..end].copy_from_slice(&data[..end - start]);
        // end <= 62, so the cast is lossless.
        self.len = end as u8;
    }

    /// The nonce as sent in the NONCE attribute.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for NonceBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NonceBuf({})", self.as_bytes().escape_ascii())
    }
}

/// Result of checking a nonce a client echoed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, for this client IP, not expired.
    Valid,
    /// Ours and for this client IP, but expired: answer 438 (RFC 8489 §9.2.4).
    Stale,
    /// Not a nonce we issued to this client IP (garbage, other IP, other key).
    Invalid,
}

/// Issues and verifies stateless nonces with a server key.
#[derive(Clone)]
pub struct Nonces {
    mac: Hmac<Sha256>,
    lifetime_secs: u64,
}

impl Nonces {
    /// Nonces keyed with `server_key`, each valid for `lifetime_secs`.
    pub fn new(server_key: [u8; 32], lifetime_secs: u64) -> Self {
        let mut block = [0u8; SHA256_BLOCK];
        block[..server_key.len()].copy_from_slice(&server_key);
        Self {
            mac: <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into()),
            lifetime_secs,
        }
    }

    /// Nonces issued from now on live `lifetime_secs`; issued ones keep their expiry.
    pub fn set_lifetime(&mut self, lifetime_secs: u64) {
        self.lifetime_secs = lifetime_secs;
    }

    /// A fresh random server key from the OS. The only place in this module
    /// that touches OS randomness.
    pub fn random_key() -> Result<[u8; 32], AuthError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(AuthError::Random)?;
        Ok(key)
    }

    /// A nonce for `client_ip`, expiring `lifetime_secs` after `unix_now`.
    pub fn issue(&self, unix_now: u64, client_ip: IpAddr) -> NonceBuf {
        let expiry = unix_now.saturating_add(self.lifetime_secs);
        let tag = self.mac_for(expiry, client_ip).finalize().into_bytes();
        let mut buf = NonceBuf::new();
        buf.push(NONCE_COOKIE);
        buf.push(FEATURES_B64);
        push_hex_u64(&mut buf, expiry);
        buf.push(b".");
        for byte in &tag[..MAC_LEN] {
            buf.push(&[HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0x0f)]]);
        }
        buf
    }

    /// `Valid` when the MAC matches for this client IP and expiry >= now;
    /// `Stale` when the MAC matches but it expired; `Invalid` otherwise.
    /// Constant-time MAC compare; does not allocate.
    pub fn verify(&self, nonce: &[u8], unix_now: u64, client_ip: IpAddr) -> NonceCheck {
        let Some((expiry, tag)) = parse(nonce) else {
            return NonceCheck::Invalid;
        };
        if self
            .mac_for(expiry, client_ip)
            .verify_truncated_left(&tag)
            .is_err()
        {
            return NonceCheck::Invalid;
        }
        if expiry >= unix_now {
            NonceCheck::Valid
        } else {
            NonceCheck::Stale
        }
    }

    /// Whether `nonce` starts with the RFC 8489 nonce cookie and a feature set
    /// with the "password algorithms" bit: then PASSWORD-ALGORITHMS must be
    /// echoed, which protects against bid-down (RFC 8489 §9.2.4, §9.2.5).
    pub fn has_security_features(nonce: &[u8]) -> bool {
        let Some(rest) = nonce.strip_prefix(NONCE_COOKIE.as_slice()) else {
            return false;
        };
        let Some(encoded) = rest.get(..4) else {
            return false;
        };
        let mut features = [0u8; 3];
        matches!(STANDARD.decode_slice(encoded, &mut features), Ok(3))
            && features[2] & PASSWORD_ALGORITHMS_BIT != 0
    }

    /// The MAC state over features ‖ expiry ‖ client IP.
    fn mac_for(&self, expiry: u64, client_ip: IpAddr) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&FEATURES);
        mac.update(&expiry.to_be_bytes());
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; treat
        // both spellings as the same client.
        match client_ip.to_canonical() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac
    }
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Nonces")
            .field("key", &"<redacted>")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

/// Appends `value` as lowercase hex without leading zeros ("0" for zero).
fn push_hex_u64(buf: &mut NonceBuf, value: u64) {
    let digits = (16 - value.leading_zeros() as usize / 4).max(1);
    for i in (0..digits).rev() {
        // The mask keeps the index below 16.
        let nibble = ((value >> (i * 4)) & 0x0f) as usize;
        buf.push(&[HEX[nibble]]);
    }
}

/// Splits a nonce into its expiry and MAC, accepting only the exact form
/// `issue` writes (so each (expiry, MAC) has one spelling).
fn parse(nonce: &[u8]) -> Option<(u64, [u8; MAC_LEN])> {
    let rest = nonce
        .strip_prefix(NONCE_COOKIE.as_slice())?
        .strip_prefix(FEATURES_B64.as_slice())?;
    let dot = rest.iter().position(|&b| b == b'.')?;
    let (expiry_hex, tag_hex) = (&rest[..dot], &rest[dot + 1..]);
    if expiry_hex.is_empty()
        || expiry_hex.len() > 16
        || (expiry_hex.len() > 1 && expiry_hex[0] == b'0')
    {
        return None;
    }
    let expiry = expiry_hex
        .iter()
        .try_fold(0u64, |acc, &c| Some(acc << 4 | u64::from(hex_value(c)?)))?;
    if tag_hex.len() != 2 * MAC_LEN {
        return None;
    }
    let mut tag = [0u8; MAC_LEN];
    for (byte, pair) in tag.iter_mut().zip(tag_hex.chunks_exact(2)) {
        *byte = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some((expiry, tag))
}

/// Value of a lowercase hex digit.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const NOW: u64 = 1_700_000_000;
    const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

    fn nonces() -> Nonces {
        Nonces::new([7; 32], 600)
    }

    #[test]
    fn features_encode_to_aaad() {
        assert_eq!(STANDARD.encode(FEATURES).as_bytes(), FEATURES_B64);
    }

    #[test]
    fn nonce_starts_with_cookie_and_features_and_is_short() {
        let n = nonces().issue(NOW, V4);
        let bytes = n.as_bytes();
        assert!(bytes.starts_with(b"obMatJos2AAAD"));
        assert!(bytes.len() < 128 && bytes.len() <= 763);
        assert!(bytes.iter().all(u8::is_ascii_graphic));
        // 1700000600 = 0x6553f358
        assert_eq!(&bytes[13..22], b"6553f358.");
        assert_eq!(bytes.len(), 9 + 4 + 8 + 1 + 32);
        let max = nonces().issue(u64::MAX, V6);
        assert_eq!(max.as_bytes().len(), NonceBuf::CAPACITY);
        assert_eq!(
            nonces().verify(max.as_bytes(), u64::MAX, V6),
            NonceCheck::Valid
        );
    }

    #[test]
    fn fresh_nonce_is_valid_until_expiry() {
        let n = nonces().issue(NOW, V4);
        assert_eq!(nonces().verify(n.as_bytes(), NOW, V4), NonceCheck::Valid);
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW + 600, V4),
            NonceCheck::Valid
        );
    }

    #[test]
    fn expired_nonce_is_stale() {
        let n = nonces().issue(NOW, V6);
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW + 601, V6),
            NonceCheck::Stale
        );
    }

    #[test]
    fn nonce_from_other_ip_is_invalid() {
        let n = nonces().issue(NOW, V4);
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW, other),
            NonceCheck::Invalid
        );
        assert_eq!(nonces().verify(n.as_bytes(), NOW, V6), NonceCheck::Invalid);
    }

    #[test]
    fn ipv4_mapped_address_is_the_same_client() {
        let n = nonces().issue(NOW, V4);
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW, mapped),
            NonceCheck::Valid
        );
    }

    #[test]
    fn nonce_from_other_key_is_invalid() {
        let n = Nonces::new([8; 32], 600).issue(NOW, V4);
        assert_eq!(nonces().verify(n.as_bytes(), NOW, V4), NonceCheck::Invalid);
    }

    #[test]
    fn tampered_nonce_is_invalid() {
        let n = nonces().issue(NOW, V4);
        for i in 0..n.as_bytes().len() {
            let mut bytes = n.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'1' { b'2' } else { b'1' };
            assert_eq!(
                nonces().verify(&bytes, NOW, V4),
                NonceCheck::Invalid,
                "byte {i}"
            );
        }
        // A later expiry with the old MAC does not extend the nonce.
        let text = String::from_utf8(n.as_bytes().to_vec()).unwrap();
        let extended = text.replace("6553f358.", "7553f358.");
        assert_eq!(
            nonces().verify(extended.as_bytes(), NOW, V4),
            NonceCheck::Invalid
        );
        let upper = text.to_uppercase().replace("OBMATJOS2", "obMatJos2");
        assert_eq!(
            nonces().verify(upper.as_bytes(), NOW, V4),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let ours = nonces().issue(NOW, V4);
        let truncated = &ours.as_bytes()[..ours.as_bytes().len() - 1];
        for garbage in [
            b"".as_slice(),
            b"obMatJos2",
            b"obMatJos2AAAD",
            b"obMatJos2AAAD.",
            b"obMatJos2AAAD6553f358",
            b"obMatJos2AAAD06553f358.00000000000000000000000000000000",
            b"obMatJos2AAAD11111111111111111.00000000000000000000000000000000",
            truncated,
            &[0xff; 62],
        ] {
            assert_eq!(nonces().verify(garbage, NOW, V4), NonceCheck::Invalid);
        }
    }

    #[test]
    fn security_features_need_cookie_and_password_algorithms_bit() {
        assert!(Nonces::has_security_features(
            nonces().issue(NOW, V4).as_bytes()
        ));
        assert!(Nonces::has_security_features(b"obMatJos2AAABxyz"));
        // RFC 8489 B.1's nonce sets only bit 1 (username anonymity).
        assert!(!Nonces::has_security_features(
            b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
        ));
        assert!(!Nonces::has_security_features(b"obMatJos2AAAA"));
        assert!(!Nonces::has_security_features(b"obMatJos2AA"));
        assert!(!Nonces::has_security_features(b"obMatJos2AA=="));
        assert!(!Nonces::has_security_features(b"xbMatJos2AAAD"));
        assert!(!Nonces::has_security_features(
            b"f//499k954d6OL34oL9FSTvy64sA"
        ));
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(Nonces::random_key().unwrap(), Nonces::random_key().unwrap());
    }
}
