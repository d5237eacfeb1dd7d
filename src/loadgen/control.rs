//! The TURN control client of the load generator: Allocate with the long-term credential
//! mechanism, ChannelBind or CreatePermission, Refresh. Setup and teardown run blocking
//! transactions over any [`Exchange`] (a UDP socket, a lane's link); refreshes during the run
//! are written here and sent by the traffic loop.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use super::{Credentials, LoadError, mono_now};
use crate::auth::{Key, PasswordAlgorithm, long_term_key};
use crate::proto::{
    Class, Message, MessageType, MessageWriter, Method, TransactionId, WriteError, attr,
    error_code as ec,
};

/// The first retransmission timeout (RFC 8489 §6.2.1: RTO 500 ms, doubled each time).
const RTO: Duration = Duration::from_millis(500);
/// The longest retransmission timeout used.
const MAX_RTO: Duration = Duration::from_secs(2);
/// Transmissions of one request before giving up (RFC 8489 §6.2.1 Rc = 7; 6 keeps it ~10 s).
const ATTEMPTS: u32 = 6;
/// Socket buffers asked for on every generator socket (the kernel caps them at rmem_max).
pub(super) const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// Lifetime asked for in Allocate and Refresh (the RFC 8656 default, 10 minutes).
pub(super) const LIFETIME_SECS: u32 = 600;
/// The channel every allocation binds (RFC 8656 §12: 0x4000 is the first valid one).
pub(super) const CHANNEL: u16 = 0x4000;
/// REQUESTED-TRANSPORT for UDP: protocol 17 (RFC 8656 §7.1), over TCP and TLS too: the relay
/// to the peers is UDP whatever carries the client's side.
const UDP: [u8; 4] = [17, 0, 0, 0];

/// One TURN request of the generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// Allocate a UDP relay for `lifetime` seconds.
    Allocate { lifetime: u32 },
    /// Refresh the allocation; a lifetime of 0 deletes it (RFC 8656 §8).
    Refresh { lifetime: u32 },
    /// Bind `channel` to `peer`, which also installs the permission (RFC 8656 §12).
    ChannelBind { channel: u16, peer: SocketAddr },
    /// Install a permission for `peer`'s IP (RFC 8656 §10).
    CreatePermission { peer: SocketAddr },
}

impl Request {
    fn method(self) -> Method {
        match self {
            Self::Allocate { .. } => Method::ALLOCATE,
            Self::Refresh { .. } => Method::REFRESH,
            Self::ChannelBind { .. } => Method::CHANNEL_BIND,
            Self::CreatePermission { .. } => Method::CREATE_PERMISSION,
        }
    }

    /// The request's name in error messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Allocate { .. } => "Allocate",
            Self::Refresh { lifetime: 0 } => "Refresh (delete)",
            Self::Refresh { .. } => "Refresh",
            Self::ChannelBind { .. } => "ChannelBind",
            Self::CreatePermission { .. } => "CreatePermission",
        }
    }
}

/// What a response means to the requester.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A success response.
    Done,
    /// 401 or 438 with a new REALM/NONCE: send the request again with a fresh transaction.
    Retry,
    /// Any other error response.
    Rejected(u16),
}

/// Long-term credential state of one allocation (RFC 8489 §9.2).
#[derive(Debug)]
pub(super) struct Auth {
    username: String,
    password: String,
    realm: Vec<u8>,
    nonce: Vec<u8>,
    key: Option<Key>,
}

impl Auth {
    /// Credentials before the first challenge.
    pub(super) fn new(credentials: &Credentials, unix_now: u64, valid_for: Duration) -> Self {
        let (username, password) = credentials.username_password(unix_now, valid_for);
        Self {
            username,
            password,
            realm: Vec::new(),
            nonce: Vec::new(),
            key: None,
        }
    }

    /// Writes `req` with transaction `tid` into `buf`, authenticated once a challenge was seen.
    pub(super) fn write(
        &self,
        buf: &mut [u8],
        req: Request,
        tid: TransactionId,
    ) -> Result<usize, WriteError> {
        let ty = MessageType::new(req.method(), Class::Request);
        let mut w = MessageWriter::new(buf, ty, tid)?;
        match req {
            Request::Allocate { lifetime } => {
                w.add(attr::REQUESTED_TRANSPORT, &UDP)?;
                w.add_u32(attr::LIFETIME, lifetime)?;
            }
            Request::Refresh { lifetime } => {
                w.add_u32(attr::LIFETIME, lifetime)?;
            }
            Request::ChannelBind { channel, peer } => {
                // RFC 8656 §18.1: the channel number, then 16 bits RFFU.
                w.add(
                    attr::CHANNEL_NUMBER,
                    &(u32::from(channel) << 16).to_be_bytes(),
                )?;
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer)?;
            }
            Request::CreatePermission { peer } => {
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer)?;
            }
        }
        if let Some(key) = &self.key {
            w.add(attr::USERNAME, self.username.as_bytes())?;
            w.add(attr::REALM, &self.realm)?;
            w.add(attr::NONCE, &self.nonce)?;
            w.add_integrity(key.as_bytes())?;
        }
        Ok(w.finish())
    }

    /// Judges a response: a challenge (401, or 438 Stale Nonce) updates REALM and NONCE.
    pub(super) fn judge(
        &mut self,
        msg: &Message<'_>,
        what: &'static str,
    ) -> Result<Outcome, LoadError> {
        if msg.class() == Class::Success {
            let forged = self.key.as_ref().is_some_and(|key| {
                msg.has_integrity() && msg.verify_integrity(key.as_bytes()).is_err()
            });
            if forged {
                return Err(LoadError::BadResponse {
                    what,
                    why: "MESSAGE-INTEGRITY does not verify",
                });
            }
            return Ok(Outcome::Done);
        }
        let code = match msg.error_code() {
            Some(Ok(e)) => e.code,
            _ => {
                return Err(LoadError::BadResponse {
                    what,
                    why: "error response without ERROR-CODE",
                });
            }
        };
        // RFC 8489 §9.2.5: a 401 to an unauthenticated request, or 438, carries REALM and NONCE.
        let first_challenge = code == ec::UNAUTHENTICATED && self.key.is_none();
        if !(first_challenge || code == ec::STALE_NONCE) {
            return Ok(Outcome::Rejected(code));
        }
        let nonce = match msg.nonce() {
            Some(Ok(n)) => n,
            _ => {
                return Err(LoadError::BadResponse {
                    what,
                    why: "challenge without NONCE",
                });
            }
        };
        if let Some(Ok(realm)) = msg.realm() {
            self.realm = realm.to_vec();
        }
        if self.realm.is_empty() {
            return Err(LoadError::BadResponse {
                what,
                why: "challenge without REALM",
            });
        }
        self.nonce = nonce.to_vec();
        // RFC 8489 §9.2.2: MD5 key; no PASSWORD-ALGORITHM sent, so the server uses MD5 too.
        self.key = Some(long_term_key(
            PasswordAlgorithm::Md5,
            self.username.as_bytes(),
            &self.realm,
            self.password.as_bytes(),
        ));
        Ok(Outcome::Retry)
    }
}

/// A transport that carries one request and brings back its response.
pub(super) trait Exchange {
    /// Sends `out` (transaction `tid`) and waits for the response, skipping anything else
    /// (data packets still in flight); returns the response's length in `buf`.
    fn exchange(
        &mut self,
        out: &[u8],
        tid: TransactionId,
        buf: &mut [u8],
        req: Request,
    ) -> Result<usize, LoadError>;
}

/// Runs one request to completion on a blocking link: challenge rounds (and, over UDP,
/// retransmissions), data packets still in flight skipped. Returns the success response's
/// length in `buf`.
pub(super) fn transact(
    link: &mut impl Exchange,
    auth: &mut Auth,
    req: Request,
    buf: &mut [u8],
) -> Result<usize, LoadError> {
    // An unauthenticated first try, then at most two challenges (401, then a 438).
    for _ in 0..3 {
        let tid = random_tid()?;
        let mut out = [0u8; 512];
        let len = auth.write(&mut out, req, tid)?;
        let n = link.exchange(&out[..len], tid, buf, req)?;
        let msg = Message::parse(&buf[..n]).map_err(|_| bad(req, "unparsable response"))?;
        match auth.judge(&msg, req.name())? {
            Outcome::Done => return Ok(n),
            Outcome::Retry => {}
            Outcome::Rejected(code) => {
                let reason = match msg.error_code() {
                    Some(Ok(e)) => e.reason.to_owned(),
                    _ => String::new(),
                };
                return Err(LoadError::Rejected {
                    what: req.name(),
                    code,
                    reason,
                });
            }
        }
    }
    Err(bad(
        req,
        "the server keeps challenging (wrong credentials?)",
    ))
}

impl Exchange for UdpSocket {
    /// Retransmits with a doubling timeout (RFC 8489 §6.2.1) on a blocking, connected socket.
    fn exchange(
        &mut self,
        out: &[u8],
        tid: TransactionId,
        buf: &mut [u8],
        req: Request,
    ) -> Result<usize, LoadError> {
        let mut rto = RTO;
        for _ in 0..ATTEMPTS {
            self.send(out)?;
            let deadline = mono_now() + rto;
            loop {
                let left = deadline.saturating_duration_since(mono_now());
                if left.is_zero() {
                    break;
                }
                self.set_read_timeout(Some(left))?;
                let n = match self.recv(buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        break;
                    }
                    Err(e) => return Err(LoadError::Io(e)),
                };
                let matches = Message::parse(&buf[..n])
                    .is_ok_and(|m| m.transaction_id() == tid && m.class() != Class::Indication);
                if matches {
                    return Ok(n);
                }
            }
            rto = (rto * 2).min(MAX_RTO);
        }
        Err(LoadError::Timeout {
            what: req.name(),
            server: self.peer_addr()?,
            attempts: ATTEMPTS,
        })
    }
}

/// A random transaction id (RFC 8489 §6: uniformly random, 96 bits).
pub(super) fn random_tid() -> Result<TransactionId, LoadError> {
    let mut tid = [0u8; 12];
    getrandom::fill(&mut tid).map_err(|_| LoadError::Random)?;
    Ok(TransactionId(tid))
}

pub(super) fn bad(req: Request, why: &'static str) -> LoadError {
    LoadError::BadResponse {
        what: req.name(),
        why,
    }
}
