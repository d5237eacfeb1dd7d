//! Writing STUN messages in place into a caller buffer (no allocation).

use std::net::SocketAddr;

use super::HEADER_LEN;
use super::attr;
use super::attrs::encode_address;
use super::bytes::padded;
use super::error_code::reason_phrase;
use super::integrity::{fingerprint_of, hmac_sha1, hmac_sha256};
use super::types::{MAGIC_COOKIE, MessageType, TransactionId};

/// Why a message could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The caller's buffer is too small.
    #[error("buffer too small for the message")]
    BufferTooSmall,
    /// An attribute value longer than 65535 bytes.
    #[error("attribute value too long")]
    ValueTooLong,
}

/// Builds a message attribute by attribute into a borrowed buffer.
pub struct MessageWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
    tid: TransactionId,
}

impl<'b> MessageWriter<'b> {
    /// Starts a message with its header.
    pub fn new(buf: &'b mut [u8], ty: MessageType, tid: TransactionId) -> Result<Self, WriteError> {
        let header = buf
            .get_mut(..HEADER_LEN)
            .ok_or(WriteError::BufferTooSmall)?;
        header[0..2].copy_from_slice(&ty.to_u16().to_be_bytes());
        header[2..4].copy_from_slice(&[0, 0]);
        header[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        header[8..20].copy_from_slice(&tid.0);
        Ok(Self {
            buf,
            len: HEADER_LEN,
            tid,
        })
    }

    /// The transaction id being written.
    pub fn transaction_id(&self) -> TransactionId {
        self.tid
    }

    /// Appends an attribute with a raw value (zero padding added).
    pub fn add(&mut self, ty: u16, value: &[u8]) -> Result<&mut Self, WriteError> {
        let vlen = u16::try_from(value.len()).map_err(|_| WriteError::ValueTooLong)?;
        let total = 4 + padded(value.len());
        let out = self
            .buf
            .get_mut(self.len..self.len + total)
            .ok_or(WriteError::BufferTooSmall)?;
        out[0..2].copy_from_slice(&ty.to_be_bytes());
        out[2..4].copy_from_slice(&vlen.to_be_bytes());
        out[4..4 + value.len()].copy_from_slice(value);
        out[4 + value.len()..].fill(0);
        self.len += total;
        self.set_length(self.len);
        Ok(self)
    }

    /// Appends a 32-bit attribute.
    pub fn add_u32(&mut self, ty: u16, v: u32) -> Result<&mut Self, WriteError> {
        self.add(ty, &v.to_be_bytes())
    }

    /// Appends an XOR-encoded address (XOR-MAPPED/PEER/RELAYED-ADDRESS, RFC 8489 §14.2).
    pub fn add_xor_address(&mut self, ty: u16, addr: SocketAddr) -> Result<&mut Self, WriteError> {
        let mut v = [0u8; 20];
        let n = encode_address(addr, Some(&self.tid), &mut v);
        self.add(ty, &v[..n])
    }

    /// Appends a plain address (MAPPED-ADDRESS, ALTERNATE-SERVER, OTHER-ADDRESS, RESPONSE-ORIGIN).
    pub fn add_address(&mut self, ty: u16, addr: SocketAddr) -> Result<&mut Self, WriteError> {
        let mut v = [0u8; 20];
        let n = encode_address(addr, None, &mut v);
        self.add(ty, &v[..n])
    }

    /// Appends ERROR-CODE with the RFC's reason phrase (RFC 8489 §14.8).
    pub fn add_error_code(&mut self, code: u16) -> Result<&mut Self, WriteError> {
        self.add_error_code_with(code, reason_phrase(code))
    }

    /// Appends ERROR-CODE with a custom reason phrase (at most 763 bytes are kept).
    pub fn add_error_code_with(
        &mut self,
        code: u16,
        reason: &str,
    ) -> Result<&mut Self, WriteError> {
        let mut v = [0u8; 4 + 763];
        let reason = truncate_utf8(reason, 763);
        v[2] = (code / 100) as u8;
        v[3] = (code % 100) as u8;
        v[4..4 + reason.len()].copy_from_slice(reason.as_bytes());
        self.add(attr::ERROR_CODE, &v[..4 + reason.len()])
    }

    /// Appends UNKNOWN-ATTRIBUTES (RFC 8489 §14.13).
    pub fn add_unknown_attributes(&mut self, types: &[u16]) -> Result<&mut Self, WriteError> {
        let mut v = [0u8; 16];
        let n = types.len().min(8);
        for (chunk, ty) in v.chunks_exact_mut(2).zip(&types[..n]) {
            chunk.copy_from_slice(&ty.to_be_bytes());
        }
        self.add(attr::UNKNOWN_ATTRIBUTES, &v[..2 * n])
    }

    /// Appends MESSAGE-INTEGRITY computed with `key` (RFC 8489 §14.5).
    pub fn add_integrity(&mut self, key: &[u8]) -> Result<&mut Self, WriteError> {
        self.reserve(24)?;
        self.set_length(self.len + 24);
        let mac = hmac_sha1(key, &self.buf[..self.len]);
        self.add(attr::MESSAGE_INTEGRITY, &mac)
    }

    /// Appends MESSAGE-INTEGRITY-SHA256 computed with `key` (RFC 8489 §14.6).
    pub fn add_integrity_sha256(&mut self, key: &[u8]) -> Result<&mut Self, WriteError> {
        self.reserve(36)?;
        self.set_length(self.len + 36);
        let mac = hmac_sha256(key, &self.buf[..self.len]);
        self.add(attr::MESSAGE_INTEGRITY_SHA256, &mac)
    }

    /// Appends FINGERPRINT (RFC 8489 §14.7); must be the last attribute.
    pub fn add_fingerprint(&mut self) -> Result<&mut Self, WriteError> {
        self.reserve(8)?;
        self.set_length(self.len + 8);
        let crc = fingerprint_of(&self.buf[..self.len]);
        self.add(attr::FINGERPRINT, &crc.to_be_bytes())
    }

    /// Finishes; returns the message length.
    pub fn finish(self) -> usize {
        self.len
    }

    /// The bytes written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn reserve(&self, n: usize) -> Result<(), WriteError> {
        if self.len + n > self.buf.len() {
            Err(WriteError::BufferTooSmall)
        } else {
            Ok(())
        }
    }

    fn set_length(&mut self, total: usize) {
        let body = (total - HEADER_LEN) as u16;
        self.buf[2..4].copy_from_slice(&body.to_be_bytes());
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
