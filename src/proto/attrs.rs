//! Typed decoding of attribute values, and typed getters on [`Message`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::attr;
use super::message::Message;
use super::types::{MAGIC_COOKIE, TransactionId};

/// Why an attribute value is malformed: the request gets a 400 (RFC 8489 §7.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttrError {
    /// Wrong length for this attribute.
    #[error("attribute {0:#06x} has a bad length")]
    BadLength(u16),
    /// Unknown address family.
    #[error("attribute {0:#06x} has an unknown address family")]
    BadFamily(u16),
    /// A value out of its allowed range.
    #[error("attribute {0:#06x} has an invalid value")]
    BadValue(u16),
}

/// A decoded ERROR-CODE (RFC 8489 §14.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorCodeValue<'a> {
    /// 300..=699.
    pub code: u16,
    /// UTF-8 reason phrase (lossy: invalid UTF-8 yields an empty string).
    pub reason: &'a str,
}

/// Decodes MAPPED-ADDRESS-style values (RFC 8489 §14.1), also used for ALTERNATE-SERVER,
/// OTHER-ADDRESS and RESPONSE-ORIGIN.
pub fn decode_address(ty: u16, v: &[u8]) -> Result<SocketAddr, AttrError> {
    decode(ty, v, None)
}

/// Decodes XOR-MAPPED-ADDRESS-style values (RFC 8489 §14.2): XOR-PEER-ADDRESS and
/// XOR-RELAYED-ADDRESS use the same encoding.
pub fn decode_xor_address(ty: u16, v: &[u8], tid: &TransactionId) -> Result<SocketAddr, AttrError> {
    decode(ty, v, Some(tid))
}

fn decode(ty: u16, v: &[u8], xor: Option<&TransactionId>) -> Result<SocketAddr, AttrError> {
    if v.len() < 4 {
        return Err(AttrError::BadLength(ty));
    }
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = u16::from_be_bytes([v[2], v[3]]);
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    match v[1] {
        0x01 => {
            let bytes: [u8; 4] = v[4..].try_into().map_err(|_| AttrError::BadLength(ty))?;
            let mut ip = bytes;
            if xor.is_some() {
                for (b, k) in ip.iter_mut().zip(cookie) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        0x02 => {
            let bytes: [u8; 16] = v[4..].try_into().map_err(|_| AttrError::BadLength(ty))?;
            let mut ip = bytes;
            if let Some(tid) = xor {
                let key = cookie.iter().chain(tid.0.iter());
                for (b, k) in ip.iter_mut().zip(key) {
                    *b ^= k;
                }
            }
            Ok(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => Err(AttrError::BadFamily(ty)),
    }
}

/// Encodes an address value into `out` (8 or 20 bytes); returns the length.
pub(crate) fn encode_address(
    addr: SocketAddr,
    xor: Option<&TransactionId>,
    out: &mut [u8; 20],
) -> usize {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut port = addr.port();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    out[0] = 0;
    out[2..4].copy_from_slice(&port.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out[1] = 0x01;
            let mut b = ip.octets();
            if xor.is_some() {
                for (x, k) in b.iter_mut().zip(cookie) {
                    *x ^= k;
                }
            }
            out[4..8].copy_from_slice(&b);
            8
        }
        IpAddr::V6(ip) => {
            out[1] = 0x02;
            let mut b = ip.octets();
            if let Some(tid) = xor {
                for (x, k) in b.iter_mut().zip(cookie.iter().chain(tid.0.iter())) {
                    *x ^= k;
                }
            }
            out[4..20].copy_from_slice(&b);
            20
        }
    }
}

/// Writes an XOR-encoded address value (8 or 20 bytes) into `out`, which must have that length.
pub fn encode_xor_address_into(addr: SocketAddr, tid: &TransactionId, out: &mut [u8]) {
    let mut v = [0u8; 20];
    let n = encode_address(addr, Some(tid), &mut v);
    out.copy_from_slice(&v[..n]);
}

/// A plain address value (RFC 8489 §14.1: 8 bytes for IPv4, 20 for IPv6), encoded ahead of
/// writing, for responses that size their attributes before writing them (OTHER-ADDRESS and
/// RESPONSE-ORIGIN, RFC 5780 §7.3, §7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressValue {
    buf: [u8; 20],
    len: usize,
}

impl AddressValue {
    /// The encoding of `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let mut buf = [0u8; 20];
        let len = encode_address(addr, None, &mut buf);
        Self { buf, len }
    }

    /// The attribute value.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn fixed<const N: usize>(ty: u16, v: &[u8]) -> Result<[u8; N], AttrError> {
    v.try_into().map_err(|_| AttrError::BadLength(ty))
}

impl<'a> Message<'a> {
    /// An XOR-encoded address attribute (XOR-MAPPED/PEER/RELAYED-ADDRESS).
    pub fn xor_address(&self, ty: u16) -> Option<Result<SocketAddr, AttrError>> {
        let tid = self.transaction_id();
        self.get(ty).map(|v| decode_xor_address(ty, v, &tid))
    }

    /// Every XOR-PEER-ADDRESS (RFC 8656 §10.1: CreatePermission may carry several).
    pub fn peer_addresses(&self) -> impl Iterator<Item = Result<SocketAddr, AttrError>> + 'a {
        let tid = self.transaction_id();
        self.get_all(attr::XOR_PEER_ADDRESS)
            .map(move |v| decode_xor_address(attr::XOR_PEER_ADDRESS, v, &tid))
    }

    /// A plain address attribute (MAPPED-ADDRESS, ALTERNATE-SERVER, OTHER-ADDRESS, RESPONSE-ORIGIN).
    pub fn address(&self, ty: u16) -> Option<Result<SocketAddr, AttrError>> {
        self.get(ty).map(|v| decode_address(ty, v))
    }

    /// A 32-bit attribute (LIFETIME, CONNECTION-ID, CHANGE-REQUEST…).
    pub fn u32_attr(&self, ty: u16) -> Option<Result<u32, AttrError>> {
        self.get(ty)
            .map(|v| fixed::<4>(ty, v).map(u32::from_be_bytes))
    }

    /// USERNAME (RFC 8489 §14.3: at most 513 bytes).
    pub fn username(&self) -> Option<Result<&'a [u8], AttrError>> {
        self.bounded(attr::USERNAME, 513)
    }

    /// REALM (RFC 8489 §14.9: fewer than 128 characters, up to 763 bytes).
    pub fn realm(&self) -> Option<Result<&'a [u8], AttrError>> {
        self.bounded(attr::REALM, 763)
    }

    /// NONCE (RFC 8489 §14.10: up to 763 bytes).
    pub fn nonce(&self) -> Option<Result<&'a [u8], AttrError>> {
        self.bounded(attr::NONCE, 763)
    }

    /// USERHASH (RFC 8489 §14.4: 32 bytes).
    pub fn userhash(&self) -> Option<Result<&'a [u8; 32], AttrError>> {
        self.get(attr::USERHASH).map(|v| {
            v.try_into()
                .map_err(|_| AttrError::BadLength(attr::USERHASH))
        })
    }

    fn bounded(&self, ty: u16, max: usize) -> Option<Result<&'a [u8], AttrError>> {
        self.get(ty).map(|v| {
            if v.len() > max {
                Err(AttrError::BadLength(ty))
            } else {
                Ok(v)
            }
        })
    }

    /// ERROR-CODE (RFC 8489 §14.8).
    pub fn error_code(&self) -> Option<Result<ErrorCodeValue<'a>, AttrError>> {
        let ty = attr::ERROR_CODE;
        self.get(ty).map(|v| {
            if v.len() < 4 {
                return Err(AttrError::BadLength(ty));
            }
            let class = u16::from(v[2] & 0x07);
            let number = u16::from(v[3]);
            if !(3..=6).contains(&class) || number > 99 {
                return Err(AttrError::BadValue(ty));
            }
            let reason = std::str::from_utf8(&v[4..]).unwrap_or("");
            Ok(ErrorCodeValue {
                code: class * 100 + number,
                reason,
            })
        })
    }

    /// REQUESTED-TRANSPORT's protocol number (RFC 8656 §18.8: 17 = UDP, 6 = TCP).
    pub fn requested_transport(&self) -> Option<Result<u8, AttrError>> {
        let ty = attr::REQUESTED_TRANSPORT;
        self.get(ty).map(|v| fixed::<4>(ty, v).map(|b| b[0]))
    }

    /// REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY family byte (0x01 IPv4, 0x02 IPv6).
    pub fn address_family(&self, ty: u16) -> Option<Result<u8, AttrError>> {
        self.get(ty).map(|v| fixed::<4>(ty, v).map(|b| b[0]))
    }

    /// EVEN-PORT's R bit (RFC 8656 §18.7): whether the next port must be reserved too.
    pub fn even_port(&self) -> Option<Result<bool, AttrError>> {
        let ty = attr::EVEN_PORT;
        self.get(ty).map(|v| match v {
            [b] => Ok(b & 0x80 != 0),
            _ => Err(AttrError::BadLength(ty)),
        })
    }

    /// RESERVATION-TOKEN (RFC 8656 §18.10: 8 bytes).
    pub fn reservation_token(&self) -> Option<Result<[u8; 8], AttrError>> {
        let ty = attr::RESERVATION_TOKEN;
        self.get(ty).map(|v| fixed::<8>(ty, v))
    }

    /// CHANNEL-NUMBER (RFC 8656 §18.1); the range is checked by the caller.
    pub fn channel_number(&self) -> Option<Result<u16, AttrError>> {
        let ty = attr::CHANNEL_NUMBER;
        self.get(ty)
            .map(|v| fixed::<4>(ty, v).map(|b| u16::from_be_bytes([b[0], b[1]])))
    }

    /// PASSWORD-ALGORITHM's algorithm number (RFC 8489 §14.12).
    pub fn password_algorithm(&self) -> Option<Result<u16, AttrError>> {
        let ty = attr::PASSWORD_ALGORITHM;
        self.get(ty).map(|v| {
            if v.len() < 4 || usize::from(u16::from_be_bytes([v[2], v[3]])) + 4 > v.len() {
                return Err(AttrError::BadLength(ty));
            }
            Ok(u16::from_be_bytes([v[0], v[1]]))
        })
    }

    /// The raw PASSWORD-ALGORITHMS value (RFC 8489 §14.11), compared byte for byte with ours.
    pub fn password_algorithms(&self) -> Option<&'a [u8]> {
        self.get(attr::PASSWORD_ALGORITHMS)
    }

    /// CHANGE-REQUEST flags (RFC 5780 §7.2): (change IP, change port).
    pub fn change_request(&self) -> Option<Result<(bool, bool), AttrError>> {
        self.u32_attr(attr::CHANGE_REQUEST)
            .map(|r| r.map(|v| (v & 0x4 != 0, v & 0x2 != 0)))
    }

    /// RESPONSE-PORT (RFC 5780 §7.5).
    pub fn response_port(&self) -> Option<Result<u16, AttrError>> {
        let ty = attr::RESPONSE_PORT;
        self.get(ty)
            .map(|v| fixed::<4>(ty, v).map(|b| u16::from_be_bytes([b[0], b[1]])))
    }

    /// SOFTWARE text, if valid UTF-8.
    pub fn software(&self) -> Option<&'a str> {
        self.get(attr::SOFTWARE)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// UNKNOWN-ATTRIBUTES types (RFC 8489 §14.9).
    pub fn unknown_attributes(&self) -> impl Iterator<Item = u16> + 'a {
        self.get(attr::UNKNOWN_ATTRIBUTES)
            .unwrap_or(&[])
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
    }
}
