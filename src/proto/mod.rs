//! The STUN/TURN wire format (RFC 8489, RFC 8656, RFC 6062, RFC 5780, RFC 8016), pure and zero-copy.
//!
//! Parsing borrows the datagram and allocates nothing ([`Message::parse`], [`ChannelData::parse`]);
//! writing goes into a caller buffer ([`MessageWriter`]).

pub mod attr;
mod attrs;
mod bytes;
mod channel;
pub mod error_code;
mod framing;
mod integrity;
mod message;
mod types;
mod writer;

pub use attrs::{
    AddressValue, AttrError, ErrorCodeValue, decode_address, decode_xor_address,
    encode_xor_address_into,
};
pub use channel::{ChannelData, ChannelDataError, MAX_CHANNEL, MIN_CHANNEL, write_channel_data};
pub use framing::{Frame, FrameKind, FramingError, MAX_FRAME, next_frame};
pub use integrity::IntegrityError;
pub use message::{Message, ParseError, UnknownAttributes};
pub use types::{Class, MAGIC_COOKIE, MessageType, Method, TransactionId};
pub use writer::{MessageWriter, WriteError};

/// Size of the STUN header (RFC 8489 §5).
pub const HEADER_LEN: usize = 20;

/// Whether `buf` starts like a STUN message rather than ChannelData (RFC 8656 §12: the first two
/// bits are 0b00 for STUN and 0b01 for ChannelData).
pub fn looks_like_stun(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xC0 == 0)
}

/// Whether `buf` starts like ChannelData (first two bits 0b01).
pub fn looks_like_channel_data(buf: &[u8]) -> bool {
    buf.first().is_some_and(|b| b & 0xC0 == 0x40)
}

#[cfg(test)]
mod tests;
