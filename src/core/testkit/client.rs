//! The scripted client: requests with chosen attributes, signed with the long-term
//! credential mechanism once a challenge was learnt, and the responses it reads back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::REALM;
use crate::auth::{PasswordAlgorithm, long_term_key, userhash};
use crate::core::FiveTuple;
use crate::proto::{
    Class, Message, MessageType, MessageWriter, Method, TransactionId, WriteError, attr,
};

/// One attribute a test adds to a request.
#[derive(Clone)]
pub enum Attr {
    /// A type and its value as given.
    Raw(u16, Vec<u8>),
    /// An XOR-mapped address of this type (RFC 8489 §14.2).
    Xor(u16, SocketAddr),
}

impl Attr {
    fn write(&self, w: &mut MessageWriter<'_>) {
        match self {
            Attr::Raw(ty, v) => w.add(*ty, v).map(|_| ()),
            Attr::Xor(ty, a) => w.add_xor_address(*ty, *a).map(|_| ()),
        }
        .unwrap();
    }
}

/// REQUESTED-TRANSPORT with this IP protocol number (RFC 8656 §18.7).
pub fn transport(protocol: u8) -> Attr {
    Attr::Raw(attr::REQUESTED_TRANSPORT, vec![protocol, 0, 0, 0])
}
/// REQUESTED-TRANSPORT UDP, the only one TURN relays (RFC 8656 §7.2).
pub fn udp() -> Attr {
    transport(17)
}
/// LIFETIME in seconds (RFC 8656 §18.2).
pub fn lifetime(secs: u32) -> Attr {
    Attr::Raw(attr::LIFETIME, secs.to_be_bytes().to_vec())
}
/// XOR-PEER-ADDRESS (RFC 8656 §18.3).
pub fn peer(addr: SocketAddr) -> Attr {
    Attr::Xor(attr::XOR_PEER_ADDRESS, addr)
}
/// CHANNEL-NUMBER, then 16 bits RFFU (RFC 8656 §18.1).
pub fn channel(number: u16) -> Attr {
    let [a, b] = number.to_be_bytes();
    Attr::Raw(attr::CHANNEL_NUMBER, vec![a, b, 0, 0])
}
/// An address-family attribute (REQUESTED-ADDRESS-FAMILY, ADDITIONAL-ADDRESS-FAMILY): 1 is
/// IPv4, 2 IPv6 (RFC 8656 §18.8, §18.11).
pub fn family(ty: u16, family: u8) -> Attr {
    Attr::Raw(ty, vec![family, 0, 0, 0])
}
/// EVEN-PORT, with the R bit when `reserve_next` (RFC 8656 §18.6).
pub fn even_port(reserve_next: bool) -> Attr {
    Attr::Raw(attr::EVEN_PORT, vec![if reserve_next { 0x80 } else { 0 }])
}

/// A TURN client on one 5-tuple using the long-term credential mechanism (RFC 8489 §9.2).
pub struct Client {
    /// The 5-tuple it sends on.
    pub ft: FiveTuple,
    /// USERNAME (or the name hashed into USERHASH).
    pub username: String,
    /// The password its key is derived from.
    pub password: String,
    /// The key derivation (RFC 8489 §18.5: MD5 unless SHA-256 is chosen).
    pub alg: PasswordAlgorithm,
    /// Sign with MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
    pub mi_sha256: bool,
    /// Send USERHASH instead of USERNAME.
    pub userhash: bool,
    /// REALM as learnt from a challenge.
    pub realm: Option<Vec<u8>>,
    /// NONCE as learnt from a challenge; requests are signed once it is known.
    pub nonce: Option<Vec<u8>>,
    /// PASSWORD-ALGORITHMS as received, echoed in signed requests.
    pub algorithms: Option<Vec<u8>>,
}

impl Client {
    /// A client that has not been challenged yet, with MD5 keys.
    pub fn new(ft: FiveTuple, username: &str, password: &str) -> Self {
        Self {
            ft,
            username: username.into(),
            password: password.into(),
            alg: PasswordAlgorithm::Md5,
            mi_sha256: false,
            userhash: false,
            realm: None,
            nonce: None,
            algorithms: None,
        }
    }

    /// The long-term key for the learned realm.
    pub fn key(&self) -> Vec<u8> {
        let realm = self.realm.as_deref().unwrap_or(REALM.as_bytes());
        let key = long_term_key(
            self.alg,
            self.username.as_bytes(),
            realm,
            self.password.as_bytes(),
        );
        key.as_bytes().to_vec()
    }

    /// A transaction id never used before in this process (RFC 8489 §5: unique per request).
    pub fn tid(&mut self) -> TransactionId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let mut id = [0u8; 12];
        id[4..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        TransactionId(id)
    }

    /// A request with a fresh transaction id, signed once a nonce is known.
    pub fn build(&mut self, method: Method, attrs: &[Attr]) -> Vec<u8> {
        let tid = self.tid();
        let mut buf = vec![0u8; 2048];
        let mut w =
            MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
        for a in attrs {
            a.write(&mut w);
        }
        self.seal(&mut w).unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    /// Ends a request: the credentials (USERNAME or USERHASH, REALM, NONCE, the algorithm
    /// attributes), MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256 once a challenge was learnt,
    /// then FINGERPRINT. Fails only when `w` has no room, so a caller writing arbitrary
    /// attributes (the fuzz targets) can drop such a request instead of panicking.
    pub fn seal(&self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            if self.userhash {
                w.add(attr::USERHASH, &userhash(self.username.as_bytes(), realm))?;
            } else {
                w.add(attr::USERNAME, self.username.as_bytes())?;
            }
            w.add(attr::REALM, realm)?;
            w.add(attr::NONCE, nonce)?;
            // RFC 8489 §9.2.4: an MD5 client may send neither algorithm attribute.
            if self.alg == PasswordAlgorithm::Sha256 {
                let [a, b] = self.alg.code().to_be_bytes();
                w.add(attr::PASSWORD_ALGORITHM, &[a, b, 0, 0])?;
                w.add(
                    attr::PASSWORD_ALGORITHMS,
                    self.algorithms.as_deref().unwrap_or(&[]),
                )?;
            }
            let key = self.key();
            if self.mi_sha256 {
                w.add_integrity_sha256(&key)?;
            } else {
                w.add_integrity(&key)?;
            }
        }
        w.add_fingerprint()?;
        Ok(())
    }

    /// Takes REALM, NONCE and PASSWORD-ALGORITHMS from a 401/438; false if it is no challenge.
    pub fn learn(&mut self, resp: &Resp) -> bool {
        if !matches!(resp.code(), Some(401 | 438)) {
            return false;
        }
        let Some(nonce) = resp.get(attr::NONCE) else {
            return false;
        };
        self.nonce = Some(nonce);
        self.realm = resp.get(attr::REALM);
        self.algorithms = resp.get(attr::PASSWORD_ALGORITHMS);
        true
    }
}

/// A STUN message the server sent back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resp(pub Vec<u8>);

impl Resp {
    /// The parsed message (the server only sends well-formed ones).
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).unwrap()
    }
    /// Success, error or indication.
    pub fn class(&self) -> Class {
        self.msg().class()
    }
    /// The error code, if an error response.
    pub fn code(&self) -> Option<u16> {
        self.msg().error_code().map(|e| e.unwrap().code)
    }
    /// The error reason phrase (panics on a success).
    pub fn reason(&self) -> String {
        self.msg().error_code().unwrap().unwrap().reason.to_owned()
    }
    /// The first attribute of type `ty`.
    pub fn get(&self, ty: u16) -> Option<Vec<u8>> {
        self.msg().get(ty).map(<[u8]>::to_vec)
    }
    /// A 32-bit attribute (LIFETIME).
    pub fn u32(&self, ty: u16) -> Option<u32> {
        self.msg().u32_attr(ty).map(Result::unwrap)
    }
    /// The first XOR address of type `ty`.
    pub fn xor(&self, ty: u16) -> Option<SocketAddr> {
        self.msg().xor_address(ty).map(Result::unwrap)
    }
    /// The first plain address of type `ty` (OTHER-ADDRESS, RESPONSE-ORIGIN, ALTERNATE-SERVER).
    pub fn address(&self, ty: u16) -> Option<SocketAddr> {
        self.msg().address(ty).map(Result::unwrap)
    }
    /// Every XOR address of type `ty`, in order.
    pub fn xors(&self, ty: u16) -> Vec<SocketAddr> {
        let msg = self.msg();
        let tid = msg.transaction_id();
        msg.get_all(ty)
            .map(|v| crate::proto::decode_xor_address(ty, v, &tid).unwrap())
            .collect()
    }
    /// XOR-RELAYED-ADDRESS (panics when absent).
    pub fn relayed(&self) -> SocketAddr {
        self.xor(attr::XOR_RELAYED_ADDRESS).unwrap()
    }
    /// Every attribute type on the wire, including those after MESSAGE-INTEGRITY.
    pub fn attr_types(&self) -> Vec<u16> {
        let (mut pos, mut types) = (20, Vec::new());
        while pos + 4 <= self.0.len() {
            types.push(u16::from_be_bytes([self.0[pos], self.0[pos + 1]]));
            let len = usize::from(u16::from_be_bytes([self.0[pos + 2], self.0[pos + 3]]));
            pos += 4 + len.div_ceil(4) * 4;
        }
        types
    }
    /// Asserts a success response and hands it on.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.class(),
            Class::Success,
            "expected success, got {:?} {:?}",
            self.code(),
            self.reason()
        );
        self
    }
    /// Asserts an error response with `code`.
    #[track_caller]
    pub fn err(&self, code: u16) {
        assert_eq!(
            self.class(),
            Class::Error,
            "expected error {code}, got success"
        );
        assert_eq!(self.code(), Some(code), "reason: {}", self.reason());
    }
}
