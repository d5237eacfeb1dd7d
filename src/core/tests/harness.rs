//! The level-2 test harness (DESIGN.md §7): a scripted TURN client speaking the long-term
//! credential mechanism, the scripted relay side (`core::scripted`: every OpenRelay confirmed
//! at once from a port list unless a test scripts otherwise), and a virtual clock.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::auth::{CredentialStore, PasswordAlgorithm, long_term_key, userhash};
use crate::core::cidr::Cidr;
use crate::core::policy::PeerPolicy;
use crate::core::scripted::ScriptedRelays;
use crate::core::{
    Command, DropReason, FiveTuple, Handled, Lifetimes, Now, PEER_HEADROOM, PEER_TAILROOM,
    PeerHandled, RelayFamily, Server, Settings, SharedState, Transport, UsageRecord,
};
use crate::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId, attr};

pub(super) const REALM: &str = "example.org";
pub(super) const SOFTWARE: &str = "turnstone-test";
/// The listener every test client reaches.
pub(super) const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478);
/// Relay addresses (never bound: the relay side is scripted).
pub(super) const RELAY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
pub(super) const RELAY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
pub(super) const SECRET_NEW: &[u8] = b"new-secret";
pub(super) const SECRET_OLD: &[u8] = b"old-secret";
/// Unix time at the start of every test.
pub(super) const UNIX_START: u64 = 1_700_000_000;
/// The server's PASSWORD-ALGORITHMS: SHA-256, then MD5.
pub(super) const ALGORITHMS: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];
const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];

pub(super) fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The peer policy of every test: built-in deny list, `allow` on top, our relay IPs and listener.
pub(super) fn policy(allow: &[&str]) -> PeerPolicy {
    let allow = allow.iter().map(|c| c.parse::<Cidr>().unwrap()).collect();
    PeerPolicy::new(allow, vec![], vec![RELAY_V4, RELAY_V6], vec![LISTENER])
        .with_relay_ports(49152..=65535)
}

/// Dual-stack settings with RFC default lifetimes and no quotas.
pub(super) fn settings() -> Settings {
    Settings {
        realm: REALM.into(),
        software: Some(SOFTWARE.into()),
        relay_v4: Some(RelayFamily {
            bind: RELAY_V4,
            advertised: RELAY_V4,
        }),
        relay_v6: Some(RelayFamily {
            bind: RELAY_V6,
            advertised: RELAY_V6,
        }),
        lifetimes: Lifetimes::default(),
        policy: policy(&[]),
        max_permissions: 32,
        max_channels: 32,
        max_allocations_per_user: 0,
        max_allocations: 0,
        allocation_bandwidth: None,
        worker_bandwidth: None,
        alternate_server: None,
    }
}

/// One attribute a test adds to a request.
#[derive(Clone)]
pub(super) enum Attr {
    Raw(u16, Vec<u8>),
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

pub(super) fn transport(protocol: u8) -> Attr {
    Attr::Raw(attr::REQUESTED_TRANSPORT, vec![protocol, 0, 0, 0])
}
pub(super) fn udp() -> Attr {
    transport(17)
}
pub(super) fn lifetime(secs: u32) -> Attr {
    Attr::Raw(attr::LIFETIME, secs.to_be_bytes().to_vec())
}
pub(super) fn peer(addr: SocketAddr) -> Attr {
    Attr::Xor(attr::XOR_PEER_ADDRESS, addr)
}
pub(super) fn channel(number: u16) -> Attr {
    let [a, b] = number.to_be_bytes();
    Attr::Raw(attr::CHANNEL_NUMBER, vec![a, b, 0, 0])
}
pub(super) fn family(ty: u16, family: u8) -> Attr {
    Attr::Raw(ty, vec![family, 0, 0, 0])
}
pub(super) fn even_port(reserve_next: bool) -> Attr {
    Attr::Raw(attr::EVEN_PORT, vec![if reserve_next { 0x80 } else { 0 }])
}

/// A TURN client on one 5-tuple using the long-term credential mechanism (RFC 8489 §9.2).
pub(super) struct Client {
    pub ft: FiveTuple,
    pub username: String,
    pub password: String,
    pub alg: PasswordAlgorithm,
    /// Sign with MESSAGE-INTEGRITY-SHA256 instead of MESSAGE-INTEGRITY.
    pub mi_sha256: bool,
    /// Send USERHASH instead of USERNAME.
    pub userhash: bool,
    pub realm: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
    /// PASSWORD-ALGORITHMS as received, echoed in signed requests.
    pub algorithms: Option<Vec<u8>>,
}

impl Client {
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
        if let (Some(realm), Some(nonce)) = (&self.realm, &self.nonce) {
            if self.userhash {
                w.add(attr::USERHASH, &userhash(self.username.as_bytes(), realm))
                    .unwrap();
            } else {
                w.add(attr::USERNAME, self.username.as_bytes()).unwrap();
            }
            w.add(attr::REALM, realm).unwrap();
            w.add(attr::NONCE, nonce).unwrap();
            // RFC 8489 §9.2.4: an MD5 client may send neither algorithm attribute.
            if self.alg == PasswordAlgorithm::Sha256 {
                let [a, b] = self.alg.code().to_be_bytes();
                w.add(attr::PASSWORD_ALGORITHM, &[a, b, 0, 0]).unwrap();
                w.add(
                    attr::PASSWORD_ALGORITHMS,
                    self.algorithms.as_deref().unwrap_or(&[]),
                )
                .unwrap();
            }
            let key = self.key();
            if self.mi_sha256 {
                w.add_integrity_sha256(&key).unwrap();
            } else {
                w.add_integrity(&key).unwrap();
            }
        }
        w.add_fingerprint().unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
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
pub(super) struct Resp(pub Vec<u8>);

impl Resp {
    pub fn msg(&self) -> Message<'_> {
        Message::parse(&self.0).unwrap()
    }
    pub fn class(&self) -> Class {
        self.msg().class()
    }
    pub fn code(&self) -> Option<u16> {
        self.msg().error_code().map(|e| e.unwrap().code)
    }
    pub fn reason(&self) -> String {
        self.msg().error_code().unwrap().unwrap().reason.to_owned()
    }
    pub fn get(&self, ty: u16) -> Option<Vec<u8>> {
        self.msg().get(ty).map(<[u8]>::to_vec)
    }
    pub fn u32(&self, ty: u16) -> Option<u32> {
        self.msg().u32_attr(ty).map(Result::unwrap)
    }
    pub fn xor(&self, ty: u16) -> Option<SocketAddr> {
        self.msg().xor_address(ty).map(Result::unwrap)
    }
    /// Every XOR address of type `ty`, in order.
    pub fn xors(&self, ty: u16) -> Vec<SocketAddr> {
        let msg = self.msg();
        let tid = msg.transaction_id();
        msg.get_all(ty)
            .map(|v| crate::proto::decode_xor_address(ty, v, &tid).unwrap())
            .collect()
    }
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

/// The virtual clock's origin: the one clock read of these tests; after it time only advances.
#[allow(
    clippy::disallowed_methods,
    reason = "a virtual clock needs one real origin"
)]
fn clock_origin() -> Instant {
    Instant::now()
}

/// A server, its scripted relays and a virtual clock.
pub(super) struct Harness {
    pub server: Server,
    pub relays: ScriptedRelays,
    /// Usage records taken out of the command queue while pumping relay commands.
    usage_log: Vec<UsageRecord>,
    /// Answers to waiting Allocates that arrived for another 5-tuple than the input's.
    pub answers: Vec<(FiveTuple, Vec<u8>)>,
    pub shared: Arc<SharedState>,
    start: Instant,
    elapsed: Duration,
    next_client_port: u16,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_settings(settings())
    }

    pub fn with_settings(settings: Settings) -> Self {
        Self::with_store(settings, Self::store(REALM, true))
    }

    /// The test users, with the two REST secrets when `rest`.
    pub fn store(realm: &str, rest: bool) -> CredentialStore {
        let users = USERS.iter().map(|(u, p)| (u.to_string(), p.to_string()));
        let secrets = if rest {
            vec![SECRET_NEW.to_vec(), SECRET_OLD.to_vec()]
        } else {
            Vec::new()
        };
        CredentialStore::new(realm, users, secrets)
    }

    pub fn with_store(settings: Settings, store: CredentialStore) -> Self {
        let shared = Arc::new(SharedState::default());
        let server = Server::new(settings, Arc::new(store), [7; 32], Arc::clone(&shared), 42);
        Self {
            server,
            relays: ScriptedRelays::with_ports((50000..51000).step_by(2)),
            usage_log: Vec::new(),
            answers: Vec::new(),
            shared,
            start: clock_origin(),
            elapsed: Duration::ZERO,
            next_client_port: 40000,
        }
    }

    pub fn now(&self) -> Now {
        Now {
            mono: self.start + self.elapsed,
            unix_secs: UNIX_START + self.elapsed.as_secs(),
        }
    }

    pub fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    pub fn tick(&mut self) {
        let now = self.now();
        self.server.handle_timeout(now);
        self.pump();
    }

    /// A TCP/TLS connection closed.
    pub fn connection_closed(&mut self, ft: FiveTuple) {
        let now = self.now();
        self.server.handle_connection_closed(now, ft);
        self.pump();
    }

    /// Plays IO: carries out the server's relay commands (see [`ScriptedRelays::pump`]);
    /// returns the answers they produced.
    pub fn pump(&mut self) -> Vec<(FiveTuple, Vec<u8>)> {
        let now = self.now();
        let mut out = vec![0u8; 2048];
        let mut answers = Vec::new();
        let usage = self
            .relays
            .pump(&mut self.server, now, &mut out, |d, bytes| {
                answers.push((d.to, bytes.to_vec()));
            });
        self.keep_usage(usage);
        answers
    }

    /// Confirms the relays held back with `relays.delay`; returns the answers.
    pub fn confirm_held(&mut self) -> Vec<(FiveTuple, Vec<u8>)> {
        let now = self.now();
        let mut out = vec![0u8; 2048];
        let mut answers = Vec::new();
        let usage = self
            .relays
            .confirm_held(&mut self.server, now, &mut out, |d, bytes| {
                answers.push((d.to, bytes.to_vec()));
            });
        self.keep_usage(usage);
        answers
    }

    fn keep_usage(&mut self, commands: Vec<Command>) {
        for command in commands {
            if let Command::Usage(record) = command {
                self.usage_log.push(record);
            }
        }
    }

    /// A fresh 5-tuple from `ip`.
    pub fn five_tuple(&mut self, ip: IpAddr, transport: Transport) -> FiveTuple {
        self.next_client_port += 1;
        FiveTuple {
            client: SocketAddr::new(ip, self.next_client_port),
            server: LISTENER,
            transport,
        }
    }

    /// A UDP client of a static user on a fresh 5-tuple from 127.0.0.1.
    pub fn client(&mut self, user: &str) -> Client {
        let ft = self.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Udp);
        Self::user_on(ft, user)
    }

    /// A client of a static user on a given 5-tuple.
    pub fn user_on(ft: FiveTuple, user: &str) -> Client {
        let (_, password) = USERS.iter().find(|(u, _)| *u == user).unwrap();
        Client::new(ft, user, password)
    }

    /// Feeds client bytes, then plays IO for the relay commands; returns the outcome and the
    /// output buffer. An Allocate answered by its relay's confirmation comes back as a reply,
    /// as if the server had answered at once.
    pub fn input(&mut self, ft: FiveTuple, pkt: &[u8]) -> (Handled, Vec<u8>) {
        let now = self.now();
        let mut out = vec![0u8; 2048];
        let handled = self.server.handle_client(now, ft, pkt, &mut out);
        let mut handled = handled;
        for (to, answer) in self.pump() {
            if to == ft && handled == Handled::Drop(DropReason::Pending) {
                out[..answer.len()].copy_from_slice(&answer);
                handled = Handled::Reply(answer.len());
            } else {
                self.answers.push((to, answer));
            }
        }
        (handled, out)
    }

    /// Feeds a request that must be answered.
    #[track_caller]
    pub fn exchange(&mut self, ft: FiveTuple, pkt: &[u8]) -> Resp {
        match self.input(ft, pkt) {
            (Handled::Reply(n), out) => Resp(out[..n].to_vec()),
            (other, _) => panic!("expected a reply, got {other:?}"),
        }
    }

    /// One request as the client currently stands (no retry).
    #[track_caller]
    pub fn send(&mut self, c: &mut Client, method: Method, attrs: &[Attr]) -> Resp {
        let pkt = c.build(method, attrs);
        self.exchange(c.ft, &pkt)
    }

    /// An unsigned Allocate, answered 401: the client learns realm, nonce and algorithms.
    #[track_caller]
    pub fn challenge(&mut self, c: &mut Client) {
        let resp = self.send(c, Method::ALLOCATE, &[udp()]);
        resp.err(401);
        assert!(c.learn(&resp));
    }

    /// A request the way a real client makes it: answered with a challenge, learn and resend once.
    #[track_caller]
    pub fn request(&mut self, c: &mut Client, method: Method, attrs: &[Attr]) -> Resp {
        let resp = self.send(c, method, attrs);
        if c.learn(&resp) {
            self.send(c, method, attrs)
        } else {
            resp
        }
    }

    /// A UDP Allocate (plus `extra`) that must succeed; returns the first relayed address.
    #[track_caller]
    pub fn allocate(&mut self, c: &mut Client, extra: &[Attr]) -> SocketAddr {
        let mut attrs = vec![udp()];
        attrs.extend_from_slice(extra);
        self.request(c, Method::ALLOCATE, &attrs).ok().relayed()
    }

    #[track_caller]
    pub fn permit(&mut self, c: &mut Client, peers: &[SocketAddr]) -> Resp {
        let attrs: Vec<Attr> = peers.iter().map(|p| peer(*p)).collect();
        self.request(c, Method::CREATE_PERMISSION, &attrs)
    }

    #[track_caller]
    pub fn bind(&mut self, c: &mut Client, number: u16, to: SocketAddr) -> Resp {
        self.request(c, Method::CHANNEL_BIND, &[channel(number), peer(to)])
    }

    #[track_caller]
    pub fn refresh(&mut self, c: &mut Client, secs: u32) -> Resp {
        self.request(c, Method::REFRESH, &[lifetime(secs)])
    }

    /// A datagram from `from` to relay address `relay`, laid out with the IO layer's head/tailroom.
    pub fn peer_sends(
        &mut self,
        relay: SocketAddr,
        from: SocketAddr,
        payload: &[u8],
    ) -> (PeerHandled, Vec<u8>) {
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
        let now = self.now();
        let id = self.relays.id_of(relay).unwrap();
        let handled = self.server.handle_peer(
            now,
            id,
            crate::core::PeerAddr(from),
            &mut buf,
            PEER_HEADROOM..PEER_HEADROOM + payload.len(),
        );
        (handled, buf)
    }

    /// The bytes the server sends to the client for a peer datagram; panics on a drop.
    #[track_caller]
    pub fn delivered(&mut self, relay: SocketAddr, from: SocketAddr, payload: &[u8]) -> Vec<u8> {
        match self.peer_sends(relay, from, payload) {
            (PeerHandled::ToClient { range, .. }, buf) => buf[range].to_vec(),
            (other, _) => panic!("expected delivery to the client, got {other:?}"),
        }
    }

    /// The forward the server should answer with: from the relay socket at `relayed` to `to`.
    pub fn forward(
        &self,
        relayed: SocketAddr,
        to: SocketAddr,
        payload: std::ops::Range<usize>,
    ) -> Handled {
        Handled::Forward {
            relay: self.relays.id_of(relayed).unwrap(),
            peer: crate::core::PeerAddr(to),
            payload,
        }
    }

    /// A Send indication (RFC 8656 §11.1) from `ft`; returns the outcome and the packet.
    pub fn send_indication(
        &mut self,
        ft: FiveTuple,
        to: SocketAddr,
        data: &[u8],
    ) -> (Handled, Vec<u8>) {
        let mut buf = vec![0u8; 2048];
        let tid = TransactionId([9; 12]);
        let mut w = MessageWriter::new(
            &mut buf,
            MessageType::new(Method::SEND, Class::Indication),
            tid,
        )
        .unwrap();
        w.add_xor_address(attr::XOR_PEER_ADDRESS, to).unwrap();
        w.add(attr::DATA, data).unwrap();
        let n = w.finish();
        buf.truncate(n);
        (self.input(ft, &buf).0, buf)
    }

    /// ChannelData from `ft` (padded to 4 on streams, RFC 8656 §12.5).
    pub fn channel_data(&mut self, ft: FiveTuple, number: u16, data: &[u8]) -> (Handled, Vec<u8>) {
        let mut pkt = number.to_be_bytes().to_vec();
        pkt.extend((data.len() as u16).to_be_bytes());
        pkt.extend(data);
        if ft.transport.is_stream() {
            pkt.resize(pkt.len().div_ceil(4) * 4, 0);
        }
        (self.input(ft, &pkt).0, pkt)
    }

    /// Usage records emitted so far.
    pub fn usage(&mut self) -> Vec<UsageRecord> {
        self.pump();
        std::mem::take(&mut self.usage_log)
    }
}
