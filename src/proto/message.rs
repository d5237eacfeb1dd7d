//! The borrowed message view: validates the framing once, then hands out attribute slices.

use super::HEADER_LEN;
use super::attr;
use super::bytes::{be16, be32, padded};
use super::integrity::{self, IntegrityError};
use super::types::{Class, MAGIC_COOKIE, MessageType, Method, TransactionId};

/// Why bytes are not a STUN message. Callers drop such input silently (RFC 8489 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than 20 bytes.
    #[error("shorter than a STUN header")]
    TooShort,
    /// The two top bits of the type are not zero.
    #[error("not a STUN message (top bits set)")]
    NotStun,
    /// The magic cookie is missing (RFC 3489 clients are not served).
    #[error("no magic cookie")]
    BadMagicCookie,
    /// The length field is not a multiple of 4 or does not match the datagram.
    #[error("length field does not match the message")]
    BadLength,
    /// An attribute runs past the end of the message.
    #[error("attribute runs past the end of the message")]
    TruncatedAttribute,
    /// An attribute follows FINGERPRINT, or FINGERPRINT has the wrong size.
    #[error("FINGERPRINT is not the last attribute")]
    MisplacedFingerprint,
    /// FINGERPRINT does not match the message.
    #[error("FINGERPRINT mismatch")]
    BadFingerprint,
    /// MESSAGE-INTEGRITY(-SHA256) has an impossible length.
    #[error("MESSAGE-INTEGRITY has a bad length")]
    BadIntegrityLength,
}

/// Up to 8 unknown comprehension-required attribute types, inline (RFC 8489 §14.9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnknownAttributes {
    types: [u16; 8],
    len: u8,
}

impl UnknownAttributes {
    fn push(&mut self, ty: u16) {
        let len = usize::from(self.len);
        if len < self.types.len() && !self.as_slice().contains(&ty) {
            self.types[len] = ty;
            self.len += 1;
        }
    }

    /// The collected types.
    pub fn as_slice(&self) -> &[u16] {
        &self.types[..usize::from(self.len)]
    }

    /// Whether none was found.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A parsed STUN message borrowing its datagram.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    raw: &'a [u8],
    ty: MessageType,
    /// End of the attributes that count: attributes after MESSAGE-INTEGRITY other than
    /// MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored (RFC 8489 §14.5).
    attrs_end: u16,
    integrity: Option<u16>,
    integrity_sha256: Option<u16>,
    unknown: UnknownAttributes,
}

impl<'a> Message<'a> {
    /// Parses a whole datagram (or one framed message of a stream). Allocates nothing.
    pub fn parse(buf: &'a [u8]) -> Result<Self, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort);
        }
        let ty = MessageType::from_u16(be16(buf, 0)).ok_or(ParseError::NotStun)?;
        if be32(buf, 4) != MAGIC_COOKIE {
            return Err(ParseError::BadMagicCookie);
        }
        let body_len = usize::from(be16(buf, 2));
        if body_len % 4 != 0 || HEADER_LEN + body_len != buf.len() {
            return Err(ParseError::BadLength);
        }
        let mut msg = Message {
            raw: buf,
            ty,
            attrs_end: buf.len() as u16,
            integrity: None,
            integrity_sha256: None,
            unknown: UnknownAttributes::default(),
        };
        msg.scan_attributes()?;
        Ok(msg)
    }

    fn scan_attributes(&mut self) -> Result<(), ParseError> {
        let buf = self.raw;
        let mut pos = HEADER_LEN;
        let mut counting = true;
        while pos < buf.len() {
            if pos + 4 > buf.len() {
                return Err(ParseError::TruncatedAttribute);
            }
            let ty = be16(buf, pos);
            let len = usize::from(be16(buf, pos + 2));
            let next = pos + 4 + padded(len);
            if next > buf.len() {
                return Err(ParseError::TruncatedAttribute);
            }
            match ty {
                attr::FINGERPRINT => {
                    if len != 4 || next != buf.len() {
                        return Err(ParseError::MisplacedFingerprint);
                    }
                    if integrity::fingerprint_of(&buf[..pos]) != be32(buf, pos + 4) {
                        return Err(ParseError::BadFingerprint);
                    }
                    if counting {
                        self.attrs_end = pos as u16;
                    }
                }
                attr::MESSAGE_INTEGRITY if self.integrity.is_none() && counting => {
                    if len != 20 {
                        return Err(ParseError::BadIntegrityLength);
                    }
                    self.integrity = Some(pos as u16);
                    self.attrs_end = pos as u16;
                    counting = false;
                }
                attr::MESSAGE_INTEGRITY_SHA256 if self.integrity_sha256.is_none() => {
                    // RFC 8489 §14.6: 16 to 32 bytes, a multiple of 4.
                    if !(16..=32).contains(&len) || len % 4 != 0 {
                        return Err(ParseError::BadIntegrityLength);
                    }
                    self.integrity_sha256 = Some(pos as u16);
                    if counting {
                        self.attrs_end = pos as u16;
                        counting = false;
                    }
                }
                _ if counting
                    && attr::is_comprehension_required(ty)
                    && !attr::is_known_required(ty) =>
                {
                    self.unknown.push(ty);
                }
                _ => {}
            }
            pos = next;
        }
        Ok(())
    }

    /// The whole message.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Method and class.
    pub fn message_type(&self) -> MessageType {
        self.ty
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.ty.method
    }

    /// The class.
    pub fn class(&self) -> Class {
        self.ty.class
    }

    /// The transaction id.
    pub fn transaction_id(&self) -> TransactionId {
        let mut id = [0u8; 12];
        id.copy_from_slice(&self.raw[8..20]);
        TransactionId(id)
    }

    /// Comprehension-required attributes we do not understand (answer 420 to a request).
    pub fn unknown_required(&self) -> &UnknownAttributes {
        &self.unknown
    }

    /// The value of the first attribute of type `ty` (RFC 8489 §14: later duplicates are ignored).
    pub fn get(&self, ty: u16) -> Option<&'a [u8]> {
        self.attributes().find(|&(t, _)| t == ty).map(|(_, v)| v)
    }

    /// Whether an attribute of type `ty` is present.
    pub fn has(&self, ty: u16) -> bool {
        self.get(ty).is_some()
    }

    /// The values of every attribute of type `ty` (XOR-PEER-ADDRESS may repeat, RFC 8656 §10.1).
    pub fn get_all(&self, ty: u16) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.attributes()
            .filter(move |&(t, _)| t == ty)
            .map(|(_, v)| v)
    }

    /// Every counted attribute as (type, value), in order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes {
            buf: &self.raw[..usize::from(self.attrs_end)],
            pos: HEADER_LEN,
        }
    }

    /// Whether the message carries MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity(&self) -> bool {
        self.integrity.is_some() || self.integrity_sha256.is_some()
    }

    /// Whether it carries MESSAGE-INTEGRITY (HMAC-SHA1).
    pub fn has_message_integrity(&self) -> bool {
        self.integrity.is_some()
    }

    /// Verifies MESSAGE-INTEGRITY only (RFC 8489 §14.5), whether or not
    /// MESSAGE-INTEGRITY-SHA256 follows: what a client that signed with it checks.
    pub fn verify_message_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        match self.integrity {
            Some(pos) => integrity::verify_sha1(self.raw, usize::from(pos), key),
            None => Err(IntegrityError::Missing),
        }
    }

    /// Whether it carries MESSAGE-INTEGRITY-SHA256.
    pub fn has_integrity_sha256(&self) -> bool {
        self.integrity_sha256.is_some()
    }

    /// Verifies MESSAGE-INTEGRITY-SHA256 when present, else MESSAGE-INTEGRITY (RFC 8489 §14.5–14.6),
    /// with the long-term or short-term `key`.
    pub fn verify_integrity(&self, key: &[u8]) -> Result<(), IntegrityError> {
        if let Some(pos) = self.integrity_sha256 {
            integrity::verify_sha256(self.raw, usize::from(pos), key)
        } else if let Some(pos) = self.integrity {
            integrity::verify_sha1(self.raw, usize::from(pos), key)
        } else {
            Err(IntegrityError::Missing)
        }
    }
}

/// Iterator over (type, value) pairs of a message.
#[derive(Clone, Debug)]
pub struct Attributes<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        // Bounds were validated by `Message::parse`; `get` keeps this panic-free regardless.
        let head = self.buf.get(self.pos..self.pos + 4)?;
        let ty = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = self.buf.get(self.pos + 4..self.pos + 4 + len)?;
        self.pos += 4 + padded(len);
        Some((ty, value))
    }
}
