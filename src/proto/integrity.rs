//! MESSAGE-INTEGRITY (HMAC-SHA1), MESSAGE-INTEGRITY-SHA256 and FINGERPRINT (RFC 8489 §14.5–14.7).

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use super::HEADER_LEN;
use super::bytes::be16;

/// Why a message failed its integrity check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    /// The message carries no integrity attribute.
    #[error("no MESSAGE-INTEGRITY attribute")]
    Missing,
    /// The HMAC does not match: wrong key or altered message.
    #[error("MESSAGE-INTEGRITY does not match")]
    Mismatch,
}

const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// CRC-32 of `prefix` XOR 0x5354554e (RFC 8489 §14.7). `prefix` is the message up to the
/// FINGERPRINT attribute, with its length field already counting the FINGERPRINT.
pub(crate) fn fingerprint_of(prefix: &[u8]) -> u32 {
    crc32fast::hash(prefix) ^ FINGERPRINT_XOR
}

/// A copy of the header with the length field set to end just after an attribute of
/// `attr_total` bytes placed at `attr_pos` (RFC 8489 §14.5: the length covers the MAC itself).
fn adjusted_header(raw: &[u8], attr_pos: usize, attr_total: usize) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&raw[..HEADER_LEN]);
    let len = (attr_pos + attr_total - HEADER_LEN) as u16;
    header[2..4].copy_from_slice(&len.to_be_bytes());
    header
}

pub(crate) fn verify_sha1(raw: &[u8], pos: usize, key: &[u8]) -> Result<(), IntegrityError> {
    let header = adjusted_header(raw, pos, 24);
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(key).map_err(|_| IntegrityError::Mismatch)?;
    mac.update(&header);
    mac.update(&raw[HEADER_LEN..pos]);
    mac.verify_slice(&raw[pos + 4..pos + 24])
        .map_err(|_| IntegrityError::Mismatch)
}

pub(crate) fn verify_sha256(raw: &[u8], pos: usize, key: &[u8]) -> Result<(), IntegrityError> {
    let len = usize::from(be16(raw, pos + 2));
    let header = adjusted_header(raw, pos, 4 + len);
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).map_err(|_| IntegrityError::Mismatch)?;
    mac.update(&header);
    mac.update(&raw[HEADER_LEN..pos]);
    // RFC 8489 §14.6: the value may be truncated to its leftmost 16..32 bytes.
    mac.verify_truncated_left(&raw[pos + 4..pos + 4 + len])
        .map_err(|_| IntegrityError::Mismatch)
}

/// HMAC-SHA1 over `msg` (whose length field already counts the MESSAGE-INTEGRITY attribute).
pub(crate) fn hmac_sha1(key: &[u8], msg: &[u8]) -> [u8; 20] {
    // HMAC accepts keys of any length; the error branch is unreachable but handled.
    let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key) else {
        return [0; 20];
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// HMAC-SHA256 over `msg`.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(msg);
    mac.finalize().into_bytes().into()
}
