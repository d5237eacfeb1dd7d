//! The probe's messages: requests written with the long-term credential mechanism, and
//! responses read into an owned summary. Pure: no sockets, no clock.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::auth::{Key, PasswordAlgorithm, long_term_key};
use crate::proto::{
    ChannelData, Class, Message, MessageType, MessageWriter, Method, TransactionId, WriteError,
    attr, looks_like_stun, write_channel_data,
};

/// The channel the probe binds (RFC 8656 §12: 0x4000 is the first client channel).
pub(crate) const CHANNEL: u16 = 0x4000;
/// REQUESTED-TRANSPORT for UDP: protocol 17, then 24 bits RFFU (RFC 8656 §18.7).
const UDP: [u8; 4] = [17, 0, 0, 0];
/// SOFTWARE sent with every request (RFC 8489 §14.14), so operators can spot the probe in logs.
const SOFTWARE: &str = concat!("turnstone-probe/", env!("CARGO_PKG_VERSION"));
/// Room for any request the probe writes.
const MAX_REQUEST: usize = 512;

/// A request of the probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Req {
    /// Binding, with CHANGE-REQUEST flags (RFC 5780 §7.2) when either is set.
    Binding { change_ip: bool, change_port: bool },
    /// Allocate a UDP relay.
    Allocate,
    /// Refresh; LIFETIME 0 deletes the allocation (RFC 8656 §7.3).
    Refresh { lifetime: u32 },
    /// Install a permission for `peer`'s IP (RFC 8656 §9).
    CreatePermission { peer: SocketAddr },
    /// Bind `channel` to `peer` (RFC 8656 §12.1).
    ChannelBind { channel: u16, peer: SocketAddr },
}

impl Req {
    /// A plain Binding request.
    pub(crate) const BINDING: Req = Req::Binding {
        change_ip: false,
        change_port: false,
    };

    fn method(self) -> Method {
        match self {
            Self::Binding { .. } => Method::BINDING,
            Self::Allocate => Method::ALLOCATE,
            Self::Refresh { .. } => Method::REFRESH,
            Self::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Self::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

/// Long-term credentials after a challenge (RFC 8489 §9.2): MD5 key, MESSAGE-INTEGRITY.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    pub(crate) username: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: Key,
}

impl Auth {
    /// Credentials for `realm`, answering with `nonce`.
    pub(crate) fn new(username: &str, password: &str, realm: &[u8], nonce: &[u8]) -> Self {
        // RFC 8489 §9.2.4: without PASSWORD-ALGORITHM(S) both sides use MD5, which every
        // TURN server supports.
        let key = long_term_key(
            PasswordAlgorithm::Md5,
            username.as_bytes(),
            realm,
            password.as_bytes(),
        );
        Self {
            username: username.to_owned(),
            realm: realm.to_vec(),
            nonce: nonce.to_vec(),
            key,
        }
    }

    /// Adopts the fresh nonce of a 438 (RFC 8489 §9.2.5).
    pub(crate) fn set_nonce(&mut self, nonce: &[u8]) {
        self.nonce = nonce.to_vec();
    }

    /// The MESSAGE-INTEGRITY key.
    pub(crate) fn key(&self) -> &[u8] {
        self.key.as_bytes()
    }
}

/// Writes `req` with transaction `tid`, authenticated when `auth` is given.
pub(crate) fn request(
    req: Req,
    auth: Option<&Auth>,
    tid: TransactionId,
) -> Result<Vec<u8>, WriteError> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let ty = MessageType::new(req.method(), Class::Request);
    let mut w = MessageWriter::new(&mut buf, ty, tid)?;
    w.add(attr::SOFTWARE, SOFTWARE.as_bytes())?;
    match req {
        Req::Binding {
            change_ip,
            change_port,
        } => {
            if change_ip || change_port {
                let flags = u32::from(change_ip) << 2 | u32::from(change_port) << 1;
                w.add_u32(attr::CHANGE_REQUEST, flags)?;
            }
        }
        Req::Allocate => {
            w.add(attr::REQUESTED_TRANSPORT, &UDP)?;
        }
        Req::Refresh { lifetime } => {
            w.add_u32(attr::LIFETIME, lifetime)?;
        }
        Req::CreatePermission { peer } => {
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer)?;
        }
        Req::ChannelBind { channel, peer } => {
            // RFC 8656 §18.1: the channel number, then 16 bits RFFU.
            w.add_u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)?;
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer)?;
        }
    }
    if let Some(auth) = auth {
        w.add(attr::USERNAME, auth.username.as_bytes())?;
        w.add(attr::REALM, &auth.realm)?;
        w.add(attr::NONCE, &auth.nonce)?;
        w.add_integrity(auth.key())?;
    }
    w.add_fingerprint()?;
    let len = w.finish();
    buf.truncate(len);
    Ok(buf)
}

/// Whether a response's MESSAGE-INTEGRITY checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Integrity {
    /// The response carries none (or no key was given).
    Absent,
    /// It matches the key.
    Valid,
    /// It does not: wrong key, or the message was altered on the way.
    Invalid,
}

/// What a response says, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) success: bool,
    /// The error code (0 for a success).
    pub(crate) code: u16,
    pub(crate) reason: String,
    pub(crate) realm: Option<Vec<u8>>,
    pub(crate) nonce: Option<Vec<u8>>,
    /// XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an old server.
    pub(crate) mapped: Option<SocketAddr>,
    pub(crate) relayed: Option<SocketAddr>,
    pub(crate) lifetime: Option<u32>,
    /// RFC 5780 §7.4 OTHER-ADDRESS.
    pub(crate) other: Option<SocketAddr>,
    pub(crate) alternate: Option<SocketAddr>,
    pub(crate) software: Option<String>,
    pub(crate) integrity: Integrity,
}

/// Reads a response to transaction `tid`; `None` for anything else (other transactions,
/// requests, indications, ChannelData, garbage).
pub(crate) fn read_reply(raw: &[u8], tid: TransactionId, key: Option<&[u8]>) -> Option<Reply> {
    if !looks_like_stun(raw) {
        return None;
    }
    let msg = Message::parse(raw).ok()?;
    if msg.transaction_id() != tid {
        return None;
    }
    let success = match msg.class() {
        Class::Success => true,
        Class::Error => false,
        Class::Request | Class::Indication => return None,
    };
    let (code, reason) = match msg.error_code() {
        Some(Ok(e)) => (e.code, e.reason.to_owned()),
        _ if success => (0, String::new()),
        // An error response without a readable ERROR-CODE: report it as a server error.
        _ => (500, String::new()),
    };
    let integrity = match key {
        Some(key) if msg.has_integrity() => match msg.verify_integrity(key) {
            Ok(()) => Integrity::Valid,
            Err(_) => Integrity::Invalid,
        },
        _ => Integrity::Absent,
    };
    let mapped = msg
        .xor_address(attr::XOR_MAPPED_ADDRESS)
        .or_else(|| msg.address(attr::MAPPED_ADDRESS))
        .and_then(Result::ok);
    Some(Reply {
        success,
        code,
        reason,
        realm: msg.realm().and_then(Result::ok).map(<[u8]>::to_vec),
        nonce: msg.nonce().and_then(Result::ok).map(<[u8]>::to_vec),
        mapped,
        relayed: msg
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .and_then(Result::ok),
        lifetime: msg.u32_attr(attr::LIFETIME).and_then(Result::ok),
        other: msg.address(attr::OTHER_ADDRESS).and_then(Result::ok),
        alternate: msg.address(attr::ALTERNATE_SERVER).and_then(Result::ok),
        software: msg.software().map(str::to_owned),
        integrity,
    })
}

/// The peer and data of a Data indication (RFC 8656 §11.4).
pub(crate) fn data_indication(raw: &[u8]) -> Option<(SocketAddr, &[u8])> {
    if !looks_like_stun(raw) {
        return None;
    }
    let msg = Message::parse(raw).ok()?;
    if msg.message_type() != MessageType::new(Method::DATA, Class::Indication) {
        return None;
    }
    let peer = msg.xor_address(attr::XOR_PEER_ADDRESS)?.ok()?;
    Some((peer, msg.get(attr::DATA)?))
}

/// The channel and data of a ChannelData message (RFC 8656 §12.4).
pub(crate) fn channel_data(raw: &[u8]) -> Option<(u16, &[u8])> {
    let cd = ChannelData::parse(raw).ok()?;
    Some((cd.channel(), cd.data()))
}

/// A ChannelData message carrying `payload`, padded for streams (RFC 8656 §12.5).
pub(crate) fn channel_data_frame(channel: u16, payload: &[u8], pad: bool) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; payload.len() + 8];
    buf.get_mut(4..4 + payload.len())?.copy_from_slice(payload);
    let len = write_channel_data(&mut buf, channel, payload.len(), pad)?;
    buf.truncate(len);
    Some(buf)
}

/// A fresh transaction id (RFC 8489 §5: uniformly random). A counter stands in if the OS has
/// no randomness: the probe only needs ids that differ.
pub(crate) fn random_tid() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let mut id = [0u8; 12];
    if getrandom::fill(&mut id).is_err() {
        id[..4].copy_from_slice(&std::process::id().to_be_bytes());
        id[4..].copy_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    }
    TransactionId(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(tid: TransactionId, build: impl FnOnce(&mut MessageWriter<'_>)) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let ty = MessageType::new(Method::ALLOCATE, Class::Error);
        let mut w = MessageWriter::new(&mut buf, ty, tid).unwrap();
        build(&mut w);
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    #[test]
    fn an_authenticated_request_verifies_with_the_long_term_key() {
        let auth = Auth::new("alice", "secret", b"example.org", b"nonce-1");
        let tid = random_tid();
        let raw = request(Req::Allocate, Some(&auth), tid).unwrap();
        let msg = Message::parse(&raw).unwrap();
        assert_eq!(msg.method(), Method::ALLOCATE);
        assert_eq!(msg.requested_transport(), Some(Ok(17)));
        assert_eq!(msg.username(), Some(Ok(&b"alice"[..])));
        assert_eq!(msg.nonce(), Some(Ok(&b"nonce-1"[..])));
        let key = long_term_key(PasswordAlgorithm::Md5, b"alice", b"example.org", b"secret");
        assert!(msg.verify_integrity(key.as_bytes()).is_ok());
    }

    #[test]
    fn change_request_flags_are_written_per_rfc_5780() {
        let req = Req::Binding {
            change_ip: true,
            change_port: true,
        };
        let raw = request(req, None, random_tid()).unwrap();
        let msg = Message::parse(&raw).unwrap();
        assert_eq!(msg.change_request(), Some(Ok((true, true))));
        let raw = request(Req::BINDING, None, random_tid()).unwrap();
        assert!(!Message::parse(&raw).unwrap().has(attr::CHANGE_REQUEST));
    }

    #[test]
    fn a_challenge_is_read_with_realm_nonce_and_code() {
        let tid = random_tid();
        let raw = response(tid, |w| {
            w.add_error_code(401).unwrap();
            w.add(attr::REALM, b"example.org").unwrap();
            w.add(attr::NONCE, b"n0").unwrap();
        });
        let r = read_reply(&raw, tid, None).unwrap();
        assert!(!r.success);
        assert_eq!((r.code, r.reason.as_str()), (401, "Unauthenticated"));
        assert_eq!(r.realm.as_deref(), Some(&b"example.org"[..]));
        assert_eq!(r.nonce.as_deref(), Some(&b"n0"[..]));
        assert_eq!(
            read_reply(&raw, random_tid(), None),
            None,
            "other transaction"
        );
    }

    #[test]
    fn response_integrity_is_checked_against_the_key() {
        let tid = random_tid();
        let raw = response(tid, |w| {
            w.add_error_code(437).unwrap();
            w.add_integrity(b"right").unwrap();
        });
        assert_eq!(
            read_reply(&raw, tid, Some(b"right")).unwrap().integrity,
            Integrity::Valid
        );
        assert_eq!(
            read_reply(&raw, tid, Some(b"wrong")).unwrap().integrity,
            Integrity::Invalid
        );
        assert_eq!(
            read_reply(&raw, tid, None).unwrap().integrity,
            Integrity::Absent
        );
    }

    #[test]
    fn channel_data_round_trips_with_and_without_padding() {
        let frame = channel_data_frame(CHANNEL, b"hello", true).unwrap();
        assert_eq!(frame.len(), 12);
        assert_eq!(channel_data(&frame), Some((CHANNEL, &b"hello"[..])));
        let frame = channel_data_frame(CHANNEL, b"hello", false).unwrap();
        assert_eq!(frame.len(), 9);
        assert_eq!(data_indication(&frame), None);
    }

    #[test]
    fn a_data_indication_yields_peer_and_data() {
        let peer: SocketAddr = "198.51.100.4:5000".parse().unwrap();
        let mut buf = vec![0u8; 128];
        let ty = MessageType::new(Method::DATA, Class::Indication);
        let mut w = MessageWriter::new(&mut buf, ty, random_tid()).unwrap();
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        w.add(attr::DATA, b"ping").unwrap();
        let n = w.finish();
        assert_eq!(data_indication(&buf[..n]), Some((peer, &b"ping"[..])));
        assert_eq!(channel_data(&buf[..n]), None);
    }
}
