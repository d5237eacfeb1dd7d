//! Header-level types: methods, classes, message types and transaction ids (RFC 8489 §5).

use std::fmt;

/// The magic cookie that marks RFC 5389/8489 STUN (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_A442;

/// A STUN method (12 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Method(pub u16);

impl Method {
    /// RFC 8489 §18.1.
    pub const BINDING: Method = Method(0x001);
    /// RFC 8656 §17.
    pub const ALLOCATE: Method = Method(0x003);
    /// RFC 8656 §17.
    pub const REFRESH: Method = Method(0x004);
    /// RFC 8656 §17 (indication only).
    pub const SEND: Method = Method(0x006);
    /// RFC 8656 §17 (indication only).
    pub const DATA: Method = Method(0x007);
    /// RFC 8656 §17.
    pub const CREATE_PERMISSION: Method = Method(0x008);
    /// RFC 8656 §17.
    pub const CHANNEL_BIND: Method = Method(0x009);
    /// RFC 6062 §6.1.
    pub const CONNECT: Method = Method(0x00A);
    /// RFC 6062 §6.1.
    pub const CONNECTION_BIND: Method = Method(0x00B);
    /// RFC 6062 §6.1.
    pub const CONNECTION_ATTEMPT: Method = Method(0x00C);

    /// A short lowercase name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Self::BINDING => "binding",
            Self::ALLOCATE => "allocate",
            Self::REFRESH => "refresh",
            Self::SEND => "send",
            Self::DATA => "data",
            Self::CREATE_PERMISSION => "create_permission",
            Self::CHANNEL_BIND => "channel_bind",
            Self::CONNECT => "connect",
            Self::CONNECTION_BIND => "connection_bind",
            Self::CONNECTION_ATTEMPT => "connection_attempt",
            _ => "unknown",
        }
    }
}

/// The class of a STUN message (RFC 8489 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A request, answered by a success or error response.
    Request,
    /// An indication: never answered.
    Indication,
    /// A success response.
    Success,
    /// An error response.
    Error,
}

/// Method and class, encoded together in the 14-bit message type field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageType {
    /// The method.
    pub method: Method,
    /// The class.
    pub class: Class,
}

impl MessageType {
    /// A message type from its parts.
    pub const fn new(method: Method, class: Class) -> Self {
        Self { method, class }
    }

    /// Decodes the type field; `None` when the two top bits are set (not STUN).
    // RFC 8489 §5: M11..M7 C1 M6..M4 C0 M3..M0.
    pub fn from_u16(v: u16) -> Option<Self> {
        if v & 0xC000 != 0 {
            return None;
        }
        let class = match ((v >> 7) & 0b10) | ((v >> 4) & 0b01) {
            0b00 => Class::Request,
            0b01 => Class::Indication,
            0b10 => Class::Success,
            _ => Class::Error,
        };
        let method = (v & 0x000F) | ((v & 0x00E0) >> 1) | ((v & 0x3E00) >> 2);
        Some(Self {
            method: Method(method),
            class,
        })
    }

    /// Encodes the type field.
    pub fn to_u16(self) -> u16 {
        let m = self.method.0 & 0x0FFF;
        let c: u16 = match self.class {
            Class::Request => 0b00,
            Class::Indication => 0b01,
            Class::Success => 0b10,
            Class::Error => 0b11,
        };
        (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 0b01) << 4)
            | ((c & 0b10) << 7)
    }
}

/// The 96-bit transaction id (RFC 8489 §5).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TransactionId(pub [u8; 12]);

impl fmt::Debug for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_round_trip_and_match_known_values() {
        let cases = [
            (Method::BINDING, Class::Request, 0x0001),
            (Method::BINDING, Class::Success, 0x0101),
            (Method::BINDING, Class::Error, 0x0111),
            (Method::ALLOCATE, Class::Request, 0x0003),
            (Method::ALLOCATE, Class::Error, 0x0113),
            (Method::SEND, Class::Indication, 0x0016),
            (Method::DATA, Class::Indication, 0x0017),
            (Method::CONNECTION_ATTEMPT, Class::Request, 0x000C),
        ];
        for (m, c, v) in cases {
            let t = MessageType::new(m, c);
            assert_eq!(t.to_u16(), v, "{m:?} {c:?}");
            assert_eq!(MessageType::from_u16(v), Some(t));
        }
        for v in 0..0x4000u16 {
            let t = MessageType::from_u16(v).unwrap();
            assert_eq!(t.to_u16(), v);
        }
        assert_eq!(MessageType::from_u16(0x4001), None);
    }
}
