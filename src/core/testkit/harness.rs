//! [`Harness`]: a server, its scripted relays and a virtual clock, with the steps tests take
//! (challenge, allocate, permit, bind, refresh, peer datagrams) as one call each.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Attr, Client, Resp, channel, lifetime, peer, udp};
use super::ledger::TestLedger;
use super::relays::ScriptedRelays;
use super::{LISTENER, REALM, SECRET_NEW, SECRET_OLD, UNIX_START, USERS, clock_origin, settings};
use crate::auth::CredentialStore;
use crate::core::{
    AllocationLedger, ClientAddr, Command, DropReason, FiveTuple, Handled, Now, PEER_HEADROOM,
    PEER_TAILROOM, PeerHandled, Server, Settings, Transport, UsageRecord,
};
use crate::proto::{Class, MessageType, MessageWriter, Method, TransactionId, attr};

/// A server, its scripted relays and a virtual clock.
pub struct Harness {
    /// The server under test.
    pub server: Server,
    /// Its relay side, scriptable by the test.
    pub relays: ScriptedRelays,
    /// Usage records taken out of the command queue while pumping relay commands.
    usage_log: Vec<UsageRecord>,
    /// Answers to waiting Allocates that arrived for another 5-tuple than the input's.
    pub answers: Vec<(FiveTuple, Vec<u8>)>,
    /// The state the server shares with other workers (quota counts, reservations).
    pub shared: Arc<TestLedger>,
    start: Instant,
    elapsed: Duration,
    next_client_port: u16,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A server with [`settings`] and the test users (static and REST).
    pub fn new() -> Self {
        Self::with_settings(settings())
    }

    /// A server with `settings` and the test users (static and REST).
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

    /// A server with `settings` and `store`, relays on even ports from 50000, the clock at
    /// its start.
    pub fn with_store(settings: Settings, store: CredentialStore) -> Self {
        let shared = Arc::new(TestLedger::default());
        let ledger: Arc<dyn AllocationLedger> = Arc::clone(&shared) as _;
        let server = Server::new(settings, Arc::new(store), [7; 32], ledger, 42);
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

    /// The virtual time.
    pub fn now(&self) -> Now {
        Now {
            mono: self.start + self.elapsed,
            unix_secs: UNIX_START + self.elapsed.as_secs(),
        }
    }

    /// Moves the virtual clock (timers run at the next [`Harness::tick`]).
    pub fn advance(&mut self, by: Duration) {
        self.elapsed += by;
    }

    /// Runs the server's timers at the current time, then plays IO for their commands.
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
            client: ClientAddr(SocketAddr::new(ip, self.next_client_port)),
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

    /// Feeds a request that must be answered, over UDP from any of the server's addresses to
    /// any port: the answer, the local address it leaves from and its destination (RFC 5780
    /// CHANGE-REQUEST and RESPONSE-PORT; a plain reply leaves on `ft`).
    #[track_caller]
    pub fn exchange_routed(&mut self, ft: FiveTuple, pkt: &[u8]) -> (Resp, SocketAddr, SocketAddr) {
        match self.input(ft, pkt) {
            (Handled::Reply(n), out) => (Resp(out[..n].to_vec()), ft.server, ft.client.addr()),
            (Handled::ReplyFrom { len, local, to }, out) => (Resp(out[..len].to_vec()), local, to),
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

    /// CreatePermission for `peers`, challenged and resent as needed.
    #[track_caller]
    pub fn permit(&mut self, c: &mut Client, peers: &[SocketAddr]) -> Resp {
        let attrs: Vec<Attr> = peers.iter().map(|p| peer(*p)).collect();
        self.request(c, Method::CREATE_PERMISSION, &attrs)
    }

    /// ChannelBind of `number` to `to`, challenged and resent as needed.
    #[track_caller]
    pub fn bind(&mut self, c: &mut Client, number: u16, to: SocketAddr) -> Resp {
        self.request(c, Method::CHANNEL_BIND, &[channel(number), peer(to)])
    }

    /// Refresh with LIFETIME `secs` (0 deletes), challenged and resent as needed.
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
