//! Framing of STUN and ChannelData messages interleaved on a TCP/TLS stream (RFC 8656 §12.5,
//! RFC 8489 §6.2.2).

use super::HEADER_LEN;
use super::types::MAGIC_COOKIE;

/// The largest frame accepted on a stream: a full STUN message.
pub const MAX_FRAME: usize = HEADER_LEN + 0xFFFF;

/// The kind of a framed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A STUN message.
    Stun,
    /// A ChannelData message (its padding is included in the frame length).
    ChannelData,
}

/// One complete message at the start of a stream buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame holds.
    pub kind: FrameKind,
    /// Bytes to consume from the stream, padding included.
    pub len: usize,
}

/// Stream data that cannot be framed: the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// The first two bits are 0b10 or 0b11: neither STUN nor ChannelData.
    #[error("stream data is neither STUN nor ChannelData")]
    UnknownKind,
    /// A STUN header without the magic cookie or with a length not a multiple of 4.
    #[error("stream carries an invalid STUN header")]
    BadStunHeader,
}

/// Finds the first complete frame in `buf`: `Ok(None)` means more bytes are needed.
pub fn next_frame(buf: &[u8]) -> Result<Option<Frame>, FramingError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first & 0xC0 {
        0x00 => {
            if buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let body = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            let cookie = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
            if cookie != MAGIC_COOKIE || body % 4 != 0 {
                return Err(FramingError::BadStunHeader);
            }
            complete(buf, FrameKind::Stun, HEADER_LEN + body)
        }
        0x40 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            // RFC 8656 §12.5: over streams ChannelData is padded to a multiple of 4.
            complete(buf, FrameKind::ChannelData, 4 + ((len + 3) & !3))
        }
        _ => Err(FramingError::UnknownKind),
    }
}

fn complete(buf: &[u8], kind: FrameKind, len: usize) -> Result<Option<Frame>, FramingError> {
    Ok((buf.len() >= len).then_some(Frame { kind, len }))
}
