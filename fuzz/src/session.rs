//! The server under test for `server_unauthed` and `server_authed`: a `core::Server` with one
//! static user, driven through the core's test kit (`core::testkit`: the scripted relay side
//! confirming every relay at once, the virtual clock, the scripted client's signing), and
//! checks on every output: replies parse as STUN, ChannelData and Data indications carry the
//! payload, forwards stay inside the packet and reach only peers the policy allows, RFC 5780
//! answers leave from one of the server's discovery sockets to the client's own IP, and at
//! shutdown no relay socket, reservation or quota slot outlives the allocations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use turnstone::auth::{CredentialStore, PasswordAlgorithm, long_term_key};
use turnstone::core::cidr::Cidr;
use turnstone::core::policy::PeerPolicy;
use turnstone::core::testkit::{Client, Harness, Resp};
use turnstone::core::{
    ClientAddr, ConnectError, ConnectionId, DropReason, FiveTuple, Handled, Lifetimes,
    NatDiscovery, PEER_HEADROOM, PEER_TAILROOM, PeerHandled, RelayFamily, RelayId, Settings,
    Transport,
};
use turnstone::proto::{
    ChannelData, Class, Message, MessageType, MessageWriter, Method, TransactionId, attr,
    looks_like_channel_data,
};

use super::relays::relays;

/// The realm, user and password of the only static user.
pub const REALM: &str = "fuzz.example";
/// The static user.
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "alice-pw";
/// The listener clients reach.
pub const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478);
/// The RFC 5780 alternate address (IP and port) beside [`LISTENER`], so that Binding input
/// also runs NAT behaviour discovery.
pub const ALTERNATE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 3479);
/// The IPv4 relay address (never bound: the relay side is scripted).
pub const RELAY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
/// The IPv6 relay address.
pub const RELAY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
/// The peer the authenticated session binds channel 0x4000 to.
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
/// The channel bound to [`PEER`].
pub const CHANNEL: u16 = 0x4000;
/// The output buffer size of the IO layer's stream reader (the kit's as well).
const OUT: usize = 2048;

/// Settings by hand: dual stack, RFC lifetimes, peers in 127.0.0.0/8 allowed.
pub fn settings() -> Settings {
    let allow = vec![Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("cidr")];
    let policy = PeerPolicy::new(allow, vec![], vec![RELAY_V4, RELAY_V6], vec![LISTENER])
        .with_relay_ports(49152..=65535)
        .with_tcp_listeners(vec![LISTENER]);
    Settings {
        software: Some("turnstone-fuzz".into()),
        relay_v4: Some(RelayFamily {
            bind: RELAY_V4,
            advertised: RELAY_V4,
        }),
        relay_v6: Some(RelayFamily {
            bind: RELAY_V6,
            advertised: RELAY_V6,
        }),
        lifetimes: Lifetimes::default(),
        policy,
        max_permissions: 8,
        max_channels: 8,
        tcp_relay: true,
        max_tcp_connections: 4,
        max_allocations_per_user: 2,
        max_allocations: 4,
        allocation_bandwidth: None,
        worker_bandwidth: None,
        alternate_server: None,
        nat_discovery: NatDiscovery::new(LISTENER, ALTERNATE),
        selftest: None,
    }
}

/// A server, its relays, a virtual clock and an authenticated client.
pub struct Session {
    /// The server under test, its scripted relays and the virtual clock.
    pub h: Harness,
    /// The client that authenticates: the kit's scripted client, signing with MD5 keys.
    client: Client,
    policy: PeerPolicy,
    /// The client's 5-tuple.
    pub ft: FiveTuple,
    /// Its long-term key (MD5).
    pub key: Vec<u8>,
    /// Transaction ids count from 1 in every session, so an input replays the same way
    /// whatever ran before it in the process (the kit's client numbers them process-wide).
    next_tid: u64,
    /// The allocation's IPv4 relay socket.
    pub relay: RelayId,
    /// RFC 6062 peer connections seen (Connect answers, ConnectionAttempts), live or not.
    pub connections: Vec<ConnectionId>,
}

impl Session {
    /// A fresh server with no allocation.
    pub fn new() -> Self {
        let store = CredentialStore::new(REALM, [(USER.into(), PASSWORD.into())], vec![]);
        let settings = settings();
        let policy = settings.policy.clone();
        let mut h = Harness::with_store(settings, store);
        h.relays = relays();
        let ft = five_tuple(40000, Transport::Udp);
        let key = long_term_key(
            PasswordAlgorithm::Md5,
            USER.as_bytes(),
            REALM.as_bytes(),
            PASSWORD.as_bytes(),
        );
        Self {
            h,
            client: Client::new(ft, USER, PASSWORD),
            policy,
            ft,
            key: key.as_bytes().to_vec(),
            next_tid: 0,
            relay: RelayId(0),
            connections: Vec::new(),
        }
    }

    /// The full exchange: 401 challenge, Allocate, CreatePermission and ChannelBind to [`PEER`].
    pub fn authenticated() -> Self {
        let mut s = Self::new();
        let tid = s.tid();
        let mut buf = [0u8; 64];
        let mut w = MessageWriter::new(&mut buf, request(Method::ALLOCATE), tid).expect("room");
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
            .expect("room");
        let n = w.finish();
        let challenge = s.client(s.ft, &buf[..n]);
        assert!(s.learn(&challenge), "no 401 challenge");
        let ok = s.signed(Method::ALLOCATE, false, |w| {
            w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).map(drop)
        });
        let relayed = success(&ok).xor_address(attr::XOR_RELAYED_ADDRESS);
        let relayed = relayed.expect("relayed address").expect("well-formed");
        s.relay = s.h.relays.id_of(relayed).expect("relay");
        let ok = s.signed(Method::CREATE_PERMISSION, false, |w| {
            w.add_xor_address(attr::XOR_PEER_ADDRESS, PEER).map(drop)
        });
        success(&ok);
        let ok = s.signed(Method::CHANNEL_BIND, false, |w| {
            w.add(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])?;
            w.add_xor_address(attr::XOR_PEER_ADDRESS, PEER).map(drop)
        });
        success(&ok);
        s
    }

    pub(crate) fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut id = [0u8; 12];
        id[4..].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId(id)
    }

    /// Feeds client bytes, checks the outcome; returns the reply, if any.
    pub fn client(&mut self, ft: FiveTuple, pkt: &[u8]) -> Vec<u8> {
        // The kit plays IO: an Allocate is answered when its relay is confirmed, here at once;
        // so is an RFC 6062 Connect (`confirm_connects`).
        let (mut handled, mut out) = self.h.input(ft, pkt);
        self.h.answers.clear();
        if handled == Handled::Drop(DropReason::Pending)
            && let Some(answer) = self.confirm_connects(ft)
        {
            out[..answer.len()].copy_from_slice(&answer);
            handled = Handled::Reply(answer.len());
        }
        self.check_relays();
        assert_ne!(
            handled,
            Handled::Drop(DropReason::Pending),
            "a confirmed Allocate is answered"
        );
        match handled {
            Handled::Drop(_) => Vec::new(),
            Handled::ReplyFrom { len, local, to } => {
                // RFC 5780: a Binding answer from one of the four sockets, to the client's IP.
                assert_eq!(ft.transport, Transport::Udp, "redirected stream answer");
                let nat = NatDiscovery::new(LISTENER, ALTERNATE).expect("two corners");
                assert!(
                    nat.contains(local),
                    "sent from {local}, not a discovery socket"
                );
                assert_eq!(to.ip(), ft.client.addr().ip(), "sent to another host");
                assert!(len <= OUT, "reply of {len} past the buffer");
                let reply = Message::parse(&out[..len])
                    .unwrap_or_else(|e| panic!("reply does not parse: {e:?}"));
                assert_eq!(reply.method(), Method::BINDING);
                assert_eq!(reply.class(), Class::Success);
                if let Ok(req) = Message::parse(pkt) {
                    assert_eq!(reply.transaction_id(), req.transaction_id());
                    // Unauthenticated: within 4x the request (no reflection amplifier).
                    assert!(
                        len <= 4 * pkt.len(),
                        "{} bytes answered with {len}",
                        pkt.len()
                    );
                }
                out[..len].to_vec()
            }
            Handled::Reply(n) => {
                assert!(n <= OUT, "reply of {n} past the buffer");
                let reply = Message::parse(&out[..n])
                    .unwrap_or_else(|e| panic!("reply does not parse: {e:?}"));
                assert!(matches!(reply.class(), Class::Success | Class::Error));
                if let Ok(req) = Message::parse(pkt) {
                    assert_eq!(reply.transaction_id(), req.transaction_id());
                }
                // A success to an authenticated request is signed with the user's key.
                if reply.class() == Class::Success && reply.method() != Method::BINDING {
                    assert!(
                        reply.verify_integrity(&self.key).is_ok(),
                        "unsigned success"
                    );
                }
                out[..n].to_vec()
            }
            Handled::Forward {
                relay,
                peer,
                payload,
            } => {
                assert!(
                    payload.start <= payload.end && payload.end <= pkt.len(),
                    "{payload:?}"
                );
                assert!(
                    self.h.relays.open.contains_key(&relay),
                    "forward from closed {relay:?}"
                );
                assert!(
                    self.policy.check(peer.0).is_ok(),
                    "forward to refused peer {peer}"
                );
                if looks_like_channel_data(pkt) {
                    let cd = ChannelData::parse(pkt).expect("forwarded ChannelData parses");
                    assert_eq!(&pkt[payload], cd.data());
                }
                Vec::new()
            }
        }
    }

    /// Plays IO for the Connects waiting (RFC 6062 §5.2): a peer at an even port accepts, one
    /// at an odd port fails (447). Returns the answer to `ft`, if one was waiting.
    fn confirm_connects(&mut self, ft: FiveTuple) -> Option<Vec<u8>> {
        let mut mine = None;
        for (connection, _, peer) in std::mem::take(&mut self.h.relays.connects) {
            let result = if peer.0.port() % 2 == 0 {
                Ok(())
            } else {
                Err(ConnectError::Failed)
            };
            let now = self.h.now();
            let mut out = vec![0u8; OUT];
            let answer = self
                .h
                .server
                .peer_connected(now, connection, result, &mut out);
            if result.is_ok() {
                self.h.relays.connections.push(connection);
            }
            self.h.pump();
            let Some(answer) = answer else { continue };
            let reply = Message::parse(&out[..answer.len]).expect("a Connect answer parses");
            assert_eq!(reply.method(), Method::CONNECT);
            assert!(
                reply.verify_integrity(&self.key).is_ok(),
                "unsigned Connect answer"
            );
            match result {
                Ok(()) => assert_eq!(reply.class(), Class::Success),
                Err(_) => assert_eq!(reply.class(), Class::Error),
            }
            if answer.to == ft {
                mine = Some(out[..answer.len].to_vec());
            }
        }
        mine
    }

    /// After the kit played IO: nothing closed or released twice, or never opened.
    fn check_relays(&self) {
        assert_eq!(
            self.h.relays.strays, 0,
            "closed or released twice, or never opened"
        );
    }

    /// Feeds a datagram from `peer` to relay socket `relay`; checks what reaches the client.
    pub fn peer(&mut self, relay: RelayId, peer: SocketAddr, payload: &[u8]) {
        let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
        let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
        buf[range.clone()].copy_from_slice(payload);
        let now = self.h.now();
        let PeerHandled::ToClient { client, range } =
            self.h
                .server
                .handle_peer(now, relay, turnstone::core::PeerAddr(peer), &mut buf, range)
        else {
            return;
        };
        assert!(
            range.start <= range.end && range.end <= buf.len(),
            "{range:?}"
        );
        let msg = &buf[range];
        if looks_like_channel_data(msg) {
            let cd = ChannelData::parse(msg).expect("ChannelData to the client parses");
            assert_eq!(cd.data(), payload);
            let padded = if client.transport.is_stream() {
                payload.len().div_ceil(4) * 4
            } else {
                payload.len()
            };
            assert_eq!(msg.len(), 4 + padded);
        } else {
            let ind = Message::parse(msg).unwrap_or_else(|e| panic!("Data indication: {e:?}"));
            assert_eq!(
                ind.message_type(),
                MessageType::new(Method::DATA, Class::Indication)
            );
            assert_eq!(ind.get(attr::DATA), Some(payload));
            assert!(matches!(
                ind.xor_address(attr::XOR_PEER_ADDRESS),
                Some(Ok(_))
            ));
        }
    }

    /// A request signed as the client (USERNAME, REALM, NONCE, MESSAGE-INTEGRITY, FINGERPRINT);
    /// empty when the attributes leave no room for the signature.
    pub fn signed_request(
        &mut self,
        ty: MessageType,
        sha256: bool,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), turnstone::proto::WriteError>,
    ) -> Vec<u8> {
        let tid = self.tid();
        let mut buf = vec![0u8; 4096];
        let Ok(mut w) = MessageWriter::new(&mut buf, ty, tid) else {
            return Vec::new();
        };
        self.client.mi_sha256 = sha256;
        if body(&mut w)
            .and_then(|()| self.client.seal(&mut w))
            .is_err()
        {
            return Vec::new();
        }
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    /// Sends a signed request on the client's 5-tuple; learns a fresh nonce from 401/438.
    pub fn signed(
        &mut self,
        method: Method,
        sha256: bool,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), turnstone::proto::WriteError>,
    ) -> Vec<u8> {
        let pkt = self.signed_request(request(method), sha256, body);
        let reply = self.client(self.ft, &pkt);
        self.learn(&reply);
        reply
    }

    /// Takes REALM and NONCE from a 401 or 438 reply (anything else, or nothing, is ignored).
    pub(crate) fn learn(&mut self, reply: &[u8]) -> bool {
        Message::parse(reply).is_ok() && self.client.learn(&Resp(reply.to_vec()))
    }

    /// Moves the clock and runs the timers.
    pub fn advance(&mut self, secs: u64) {
        self.h.advance(Duration::from_secs(secs));
        self.h.tick();
        self.check_relays();
    }

    /// A TCP/TLS client connection closed.
    pub fn close_connection(&mut self, ft: FiveTuple) {
        self.h.connection_closed(ft);
        self.check_relays();
    }

    /// Shuts down: nothing may be left open, reserved or counted.
    pub fn finish(mut self) {
        let h = &mut self.h;
        assert!(h.server.allocation_count() <= 2);
        let now = h.now();
        h.server.close_all(now);
        h.pump();
        self.check_relays();
        let h = &self.h;
        assert_eq!(h.server.allocation_count(), 0);
        assert!(
            h.relays.open.is_empty(),
            "relays left open: {:?}",
            h.relays.open
        );
        assert!(
            h.relays.reserved.is_empty(),
            "reservations left: {:?}",
            h.relays.reserved
        );
        assert_eq!(h.shared.total(), 0, "quota slots left taken");
        assert_eq!(
            h.server.peer_connection_count(),
            0,
            "RFC 6062 connections left"
        );
        assert!(
            h.relays.connections.is_empty() && h.relays.connects.is_empty(),
            "peer connections left open: {:?} {:?}",
            h.relays.connections,
            h.relays.connects
        );
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

/// A client 5-tuple from 127.0.0.1:`port` to [`LISTENER`].
pub fn five_tuple(port: u16, transport: Transport) -> FiveTuple {
    FiveTuple {
        client: ClientAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)),
        server: LISTENER,
        transport,
    }
}

pub(crate) fn request(method: Method) -> MessageType {
    MessageType::new(method, Class::Request)
}

#[track_caller]
fn success(reply: &[u8]) -> Message<'_> {
    let msg = Message::parse(reply).expect("a reply");
    assert_eq!(
        msg.class(),
        Class::Success,
        "setup step failed: {:?}",
        msg.error_code()
    );
    msg
}
