//! ChannelData messages (RFC 8656 §12.4).

/// Lowest channel number a client may bind (RFC 8656 §12).
pub const MIN_CHANNEL: u16 = 0x4000;
/// Highest channel number a client may bind. RFC 8656 §12 narrowed the range to 0x4FFF, but
/// RFC 5766 §11 allowed up to 0x7FFE and RFC 5766 clients (coturn's tools among them) still pick
/// from the wider range; ChannelData framing is identical, so they are accepted.
pub const MAX_CHANNEL: u16 = 0x7FFE;

/// Why bytes are not ChannelData. Such input is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Fewer than 4 bytes.
    #[error("shorter than a ChannelData header")]
    TooShort,
    /// The first two bits are not 0b01.
    #[error("not a ChannelData message")]
    NotChannelData,
    /// The length field exceeds the bytes present.
    #[error("ChannelData length exceeds the datagram")]
    BadLength,
}

/// A borrowed ChannelData message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelData<'a> {
    channel: u16,
    data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parses ChannelData; padding beyond the length is ignored (RFC 8656 §12.5).
    pub fn parse(buf: &'a [u8]) -> Result<Self, ChannelDataError> {
        if buf.len() < 4 {
            return Err(ChannelDataError::TooShort);
        }
        if buf[0] & 0xC0 != 0x40 {
            return Err(ChannelDataError::NotChannelData);
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf.get(4..4 + len).ok_or(ChannelDataError::BadLength)?;
        Ok(Self { channel, data })
    }

    /// The channel number (0x4000..=0x7FFF on the wire; only 0x4000..=0x4FFF can be bound).
    pub fn channel(&self) -> u16 {
        self.channel
    }

    /// The application data.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

/// Writes the 4-byte ChannelData header in front of `len` payload bytes already at `buf[4..]`,
/// plus zero padding to a multiple of 4 when `pad` (required on TCP/TLS, RFC 8656 §12.5).
/// Returns the total length, or `None` if `buf` is too small or `len` exceeds 65535.
pub fn write_channel_data(buf: &mut [u8], channel: u16, len: usize, pad: bool) -> Option<usize> {
    let wire_len = u16::try_from(len).ok()?;
    let total = if pad { 4 + ((len + 3) & !3) } else { 4 + len };
    let out = buf.get_mut(..total)?;
    out[0..2].copy_from_slice(&channel.to_be_bytes());
    out[2..4].copy_from_slice(&wire_len.to_be_bytes());
    out[4 + len..].fill(0);
    Some(total)
}
