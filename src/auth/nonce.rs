//! Stateless nonces (RFC 8489 §9.2): the server keeps no nonce table; a nonce
//! carries its expiry and a MAC binding it to the client's transport address and
//! to the security features it advertises.
//!
//! Format (32 ASCII characters, well under the 128 of RFC 8489 §14.10, all of
//! them quoted-string characters): `"obMatJos2"` + the 24-bit feature set in
//! base64 (4 characters, RFC 8489 §9.2) + unpadded base64 of 14 bytes:
//! expiry (u32 BE, Unix seconds modulo 2^32) ‖ the first 10 bytes of
//! HMAC-SHA256(server key, features ‖ expiry ‖ client IP octets ‖ client port).
//!
//! The nonce is short on purpose: it goes into every 401 an unauthenticated (and
//! possibly spoofed) request gets, and that answer must stay small (no reflection
//! amplifier). 80 bits of MAC are plenty: a forged nonce would only skip a round
//! trip, never the MESSAGE-INTEGRITY check.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::AuthError;

/// RFC 8489 §9.2 "nonce cookie" that starts a nonce carrying a security
/// feature set.
pub const NONCE_COOKIE: &[u8; 9] = b"obMatJos2";

/// Truncated MAC length.
const MAC_LEN: usize = 10;
/// Expiry (4) and MAC: 14 bytes, 19 base64 characters without padding.
const PAYLOAD_LEN: usize = 4 + MAC_LEN;
const PAYLOAD_B64_LEN: usize = 19;
/// Cookie 9 + features 4 + payload 19.
const NONCE_LEN: usize = 9 + 4 + PAYLOAD_B64_LEN;
/// SHA-256 block size; the 32-byte key is zero-padded to it (RFC 2104 §2).
const SHA256_BLOCK: usize = 64;

/// Lifetimes stay below 2^31 s, so expiries compare modulo 2^32 (RFC 1982 style).
fn clamp_lifetime(secs: u64) -> u32 {
    // Clamped below 2^31, so the cast is lossless.
    secs.min(i32::MAX as u64) as u32
}

const _: () = assert!(matches!(
    base64::encoded_len(PAYLOAD_LEN, false),
    Some(PAYLOAD_B64_LEN)
));

/// The RFC 8489 §18.1 STUN Security Features a nonce advertises. Bit 0 (the least
/// significant bit of the 24, per verified erratum 6290; the §18.1 prose says
/// otherwise) is "password algorithms", bit 1 "username anonymity".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecurityFeatures {
    /// The server sends PASSWORD-ALGORITHMS and checks its echo (§9.2.4).
    pub password_algorithms: bool,
    /// The client must send USERHASH instead of USERNAME (§9.2.5).
    pub username_anonymity: bool,
}

impl SecurityFeatures {
    const PASSWORD_ALGORITHMS_BIT: u8 = 0b01;
    const USERNAME_ANONYMITY_BIT: u8 = 0b10;

    /// The 24-bit feature set, most significant byte first.
    pub fn bits(self) -> [u8; 3] {
        let mut last = 0;
        if self.password_algorithms {
            last |= Self::PASSWORD_ALGORITHMS_BIT;
        }
        if self.username_anonymity {
            last |= Self::USERNAME_ANONYMITY_BIT;
        }
        [0, 0, last]
    }

    /// The features a nonce advertises, if it starts with the nonce cookie and a
    /// well-formed feature set (RFC 8489 §9.2). Unknown bits are ignored.
    pub fn of_nonce(nonce: &[u8]) -> Option<Self> {
        let encoded = nonce.strip_prefix(NONCE_COOKIE.as_slice())?.get(..4)?;
        let mut bits = [0u8; 3];
        if !matches!(STANDARD.decode_slice(encoded, &mut bits), Ok(3)) {
            return None;
        }
        Some(Self {
            password_algorithms: bits[2] & Self::PASSWORD_ALGORITHMS_BIT != 0,
            username_anonymity: bits[2] & Self::USERNAME_ANONYMITY_BIT != 0,
        })
    }
}

/// A nonce in a fixed-size inline buffer.
#[derive(Clone, Copy)]
pub struct NonceBuf {
    bytes: [u8; NonceBuf::LEN],
}

impl NonceBuf {
    /// Every nonce has this length.
    pub const LEN: usize = NONCE_LEN;

    /// The nonce as sent in the NONCE attribute.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
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
    /// Ours, for this client, advertising no feature the server has withdrawn, not expired.
    Valid,
    /// Ours and for this client, but expired or advertising features the server
    /// no longer offers (a reload changed the credentials): answer 438 with a
    /// fresh nonce (RFC 8489 §9.2.4 lets a server revoke nonces).
    Stale,
    /// Not a nonce we issued to this client (garbage, other address, other key).
    Invalid,
}

/// Issues and verifies stateless nonces with a server key.
#[derive(Clone)]
pub struct Nonces {
    mac: Hmac<Sha256>,
    lifetime_secs: u32,
}

impl Nonces {
    /// Nonces keyed with `server_key`, each valid for `lifetime_secs` (at most
    /// 2^31 - 1 s, so that expiries compare modulo 2^32, RFC 1982 style).
    pub fn new(server_key: [u8; 32], lifetime_secs: u64) -> Self {
        let mut block = [0u8; SHA256_BLOCK];
        block[..server_key.len()].copy_from_slice(&server_key);
        Self {
            mac: <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into()),
            lifetime_secs: clamp_lifetime(lifetime_secs),
        }
    }

    /// Nonces issued from now on live `lifetime_secs`; issued ones keep their expiry.
    pub fn set_lifetime(&mut self, lifetime_secs: u64) {
        self.lifetime_secs = clamp_lifetime(lifetime_secs);
    }

    /// A fresh random server key from the OS. The only place in this module
    /// that touches OS randomness.
    pub fn random_key() -> Result<[u8; 32], AuthError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(AuthError::Random)?;
        Ok(key)
    }

    /// A nonce for `client` advertising `features`, expiring `lifetime_secs`
    /// after `unix_now`.
    ///
    /// RFC 8489 §9.2.4: the same nonce is never chosen for two requests unless
    /// they come from the same source IP address and port, so the MAC covers
    /// both (two clients behind one NAT get different nonces).
    pub fn issue(&self, unix_now: u64, client: SocketAddr, features: SecurityFeatures) -> NonceBuf {
        // Modulo 2^32 on purpose: expiries compare by serial-number arithmetic.
        let expiry = (unix_now as u32).wrapping_add(self.lifetime_secs);
        let bits = features.bits();
        let tag = self.mac_for(bits, expiry, client).finalize().into_bytes();
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..4].copy_from_slice(&expiry.to_be_bytes());
        payload[4..].copy_from_slice(&tag[..MAC_LEN]);
        let mut bytes = [0u8; NONCE_LEN];
        bytes[..9].copy_from_slice(NONCE_COOKIE);
        // The lengths are fixed and checked at compile time, so encoding cannot fail;
        // a failure would leave zero bytes, which no verification accepts.
        let _ = STANDARD.encode_slice(bits, &mut bytes[9..13]);
        let _ = STANDARD_NO_PAD.encode_slice(payload, &mut bytes[13..]);
        NonceBuf { bytes }
    }

    /// `Valid` when the MAC matches for this client, the features are `current` or a
    /// subset of them, and the expiry has not passed; `Stale` when the MAC matches but it
    /// expired or advertises a feature not in `current`; `Invalid` otherwise. Constant-time MAC compare; does
    /// not allocate.
    pub fn verify(
        &self,
        nonce: &[u8],
        unix_now: u64,
        client: SocketAddr,
        current: SecurityFeatures,
    ) -> NonceCheck {
        let Some((bits, expiry, tag)) = parse(nonce) else {
            return NonceCheck::Invalid;
        };
        if self
            .mac_for(bits, expiry, client)
            .verify_truncated_left(&tag)
            .is_err()
        {
            return NonceCheck::Invalid;
        }
        // Seconds left, modulo 2^32 (RFC 1982 serial-number arithmetic).
        let left = expiry.wrapping_sub(unix_now as u32);
        // Fewer features than the server offers is fine: a challenge with no room for
        // PASSWORD-ALGORITHMS issues a nonce without that bit (so an RFC 8489 §9.2.5 client
        // does not give up), and the bits are under the MAC, so no one else can clear them.
        // A feature the server no longer offers (a reload) makes the nonce stale.
        let withdrawn = bits.iter().zip(current.bits()).any(|(n, c)| n & !c != 0);
        if withdrawn || left > self.lifetime_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Valid
        }
    }

    /// Whether `nonce` starts with the RFC 8489 nonce cookie and a feature set
    /// with the "password algorithms" bit: then PASSWORD-ALGORITHMS must be
    /// echoed, which protects against bid-down (RFC 8489 §9.2.4, §9.2.5).
    pub fn has_security_features(nonce: &[u8]) -> bool {
        SecurityFeatures::of_nonce(nonce).is_some_and(|f| f.password_algorithms)
    }

    /// The MAC state over features ‖ expiry ‖ client IP ‖ client port.
    fn mac_for(&self, bits: [u8; 3], expiry: u32, client: SocketAddr) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(&bits);
        mac.update(&expiry.to_be_bytes());
        // A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d; treat
        // both spellings as the same client.
        match client.ip().to_canonical() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&client.port().to_be_bytes());
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

/// Splits a nonce into its feature bits, expiry and MAC, accepting only the exact
/// form `issue` writes (base64 with canonical trailing bits, so one spelling each).
fn parse(nonce: &[u8]) -> Option<([u8; 3], u32, [u8; MAC_LEN])> {
    if nonce.len() != NONCE_LEN {
        return None;
    }
    let rest = nonce.strip_prefix(NONCE_COOKIE.as_slice())?;
    let mut bits = [0u8; 3];
    if !matches!(STANDARD.decode_slice(&rest[..4], &mut bits), Ok(3)) {
        return None;
    }
    // One spare byte: the decoder may want room for its length estimate.
    let mut payload = [0u8; PAYLOAD_LEN + 1];
    if !matches!(
        STANDARD_NO_PAD.decode_slice(&rest[4..], &mut payload),
        Ok(PAYLOAD_LEN)
    ) {
        return None;
    }
    let expiry = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let mut tag = [0u8; MAC_LEN];
    tag.copy_from_slice(&payload[4..PAYLOAD_LEN]);
    Some((bits, expiry, tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const NOW: u64 = 1_700_000_000;
    const V4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
    const V6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 40000);
    const BOTH: SecurityFeatures = SecurityFeatures {
        password_algorithms: true,
        username_anonymity: true,
    };
    const NO_ANONYMITY: SecurityFeatures = SecurityFeatures {
        password_algorithms: true,
        username_anonymity: false,
    };

    fn nonces() -> Nonces {
        Nonces::new([7; 32], 600)
    }

    fn b64(features: SecurityFeatures) -> String {
        STANDARD.encode(features.bits())
    }

    #[test]
    fn feature_bits_follow_erratum_6290() {
        assert_eq!(b64(BOTH), "AAAD");
        assert_eq!(b64(NO_ANONYMITY), "AAAB");
        let anonymity_only = SecurityFeatures {
            password_algorithms: false,
            username_anonymity: true,
        };
        // RFC 8489 B.1's nonce "obMatJos2AAAC..." advertises username anonymity only.
        assert_eq!(b64(anonymity_only), "AAAC");
        assert_eq!(
            SecurityFeatures::of_nonce(b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"),
            Some(anonymity_only)
        );
    }

    #[test]
    fn nonce_is_32_quoted_string_characters_after_cookie_and_features() {
        for features in [BOTH, NO_ANONYMITY] {
            let n = nonces().issue(NOW, V6, features);
            let bytes = n.as_bytes();
            assert!(bytes.starts_with(b"obMatJos2"));
            assert_eq!(&bytes[9..13], b64(features).as_bytes());
            assert_eq!(bytes.len(), 32);
            // RFC 8489 §14.10: qdtext, no quote or backslash; base64 has neither.
            assert!(
                bytes
                    .iter()
                    .all(|b| b.is_ascii_graphic() && *b != b'"' && *b != b'\\')
            );
            assert_eq!(SecurityFeatures::of_nonce(bytes), Some(features));
        }
    }

    #[test]
    fn fresh_nonce_is_valid_until_expiry() {
        let n = nonces().issue(NOW, V4, BOTH);
        for t in [NOW, NOW + 600] {
            assert_eq!(
                nonces().verify(n.as_bytes(), t, V4, BOTH),
                NonceCheck::Valid
            );
        }
    }

    #[test]
    fn expired_nonce_is_stale() {
        let n = nonces().issue(NOW, V6, BOTH);
        for t in [NOW + 601, NOW + 100_000, NOW + (1 << 31)] {
            assert_eq!(
                nonces().verify(n.as_bytes(), t, V6, BOTH),
                NonceCheck::Stale
            );
        }
    }

    #[test]
    fn expiry_compares_modulo_2_32() {
        let near_wrap = u64::from(u32::MAX) - 10;
        let n = nonces().issue(near_wrap, V4, BOTH);
        assert_eq!(
            nonces().verify(n.as_bytes(), near_wrap + 500, V4, BOTH),
            NonceCheck::Valid
        );
        assert_eq!(
            nonces().verify(n.as_bytes(), near_wrap + 601, V4, BOTH),
            NonceCheck::Stale
        );
    }

    #[test]
    fn nonce_from_other_ip_or_port_is_invalid() {
        let n = nonces().issue(NOW, V4, BOTH);
        let other_ip = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 40000);
        let other_port = SocketAddr::new(V4.ip(), 40001);
        for client in [other_ip, other_port, V6] {
            assert_eq!(
                nonces().verify(n.as_bytes(), NOW, client, BOTH),
                NonceCheck::Invalid,
                "{client}"
            );
        }
    }

    #[test]
    fn two_clients_behind_one_nat_never_get_the_same_nonce() {
        // RFC 8489 §9.2.4: not the same nonce unless same source IP and port.
        let other_port = SocketAddr::new(V4.ip(), 40001);
        assert_ne!(
            nonces().issue(NOW, V4, BOTH).as_bytes(),
            nonces().issue(NOW, other_port, BOTH).as_bytes()
        );
    }

    #[test]
    fn ipv4_mapped_address_is_the_same_client() {
        let n = nonces().issue(NOW, V4, BOTH);
        let mapped = SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 40000);
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW, mapped, BOTH),
            NonceCheck::Valid
        );
    }

    #[test]
    fn nonce_from_other_key_is_invalid() {
        let n = Nonces::new([8; 32], 600).issue(NOW, V4, BOTH);
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW, V4, BOTH),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn nonce_advertising_features_no_longer_offered_is_stale() {
        let n = nonces().issue(NOW, V4, BOTH);
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW, V4, NO_ANONYMITY),
            NonceCheck::Stale
        );
    }

    #[test]
    fn nonce_advertising_a_subset_of_the_current_features_is_valid() {
        let without_algorithms = SecurityFeatures {
            password_algorithms: false,
            username_anonymity: true,
        };
        let none = SecurityFeatures {
            password_algorithms: false,
            username_anonymity: false,
        };
        for issued in [without_algorithms, none, NO_ANONYMITY] {
            let n = nonces().issue(NOW, V4, issued);
            assert_eq!(
                nonces().verify(n.as_bytes(), NOW, V4, BOTH),
                NonceCheck::Valid,
                "{issued:?}"
            );
        }
        let n = nonces().issue(NOW, V4, without_algorithms);
        assert_eq!(
            nonces().verify(n.as_bytes(), NOW, V4, NO_ANONYMITY),
            NonceCheck::Stale
        );
    }

    #[test]
    fn tampered_nonce_is_invalid() {
        let n = nonces().issue(NOW, V4, BOTH);
        for i in 0..n.as_bytes().len() {
            let mut bytes = n.as_bytes().to_vec();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            assert_ne!(
                nonces().verify(&bytes, NOW, V4, BOTH),
                NonceCheck::Valid,
                "byte {i}"
            );
        }
        // Claiming fewer features does not keep the MAC valid.
        let mut fewer = n.as_bytes().to_vec();
        fewer[9..13].copy_from_slice(b"AAAB");
        assert_eq!(
            nonces().verify(&fewer, NOW, V4, NO_ANONYMITY),
            NonceCheck::Invalid
        );
    }

    #[test]
    fn garbage_is_invalid() {
        let ours = nonces().issue(NOW, V4, BOTH);
        let truncated = &ours.as_bytes()[..31];
        let mut longer = ours.as_bytes().to_vec();
        longer.push(b'A');
        for garbage in [
            b"".as_slice(),
            b"obMatJos2",
            b"obMatJos2AAAD",
            b"obMatJos2AAAD===================",
            b"xbMatJos2AAADAAAAAAAAAAAAAAAAAAA",
            truncated,
            &longer,
            &[0xff; 32],
        ] {
            assert_eq!(nonces().verify(garbage, NOW, V4, BOTH), NonceCheck::Invalid);
        }
    }

    #[test]
    fn security_features_need_cookie_and_password_algorithms_bit() {
        assert!(Nonces::has_security_features(
            nonces().issue(NOW, V4, BOTH).as_bytes()
        ));
        assert!(Nonces::has_security_features(b"obMatJos2AAABxyz"));
        assert!(!Nonces::has_security_features(
            b"obMatJos2AAACf//499k954d6OL34oL9FSTvy64sA"
        ));
        assert!(!Nonces::has_security_features(b"obMatJos2AAAA"));
        assert!(!Nonces::has_security_features(b"obMatJos2AA"));
        assert!(!Nonces::has_security_features(b"obMatJos2AA=="));
        assert!(!Nonces::has_security_features(b"xbMatJos2AAAD"));
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(Nonces::random_key().unwrap(), Nonces::random_key().unwrap());
    }
}
