//! The core's data plane (RFC 8656 §11–12) after a real authenticated setup: ChannelData from
//! the client forwarded to its peer, and a peer datagram turned into ChannelData or a Data
//! indication for the client. No sockets: relays come from the core's scripted relay side.
//!
//! Run with `cargo bench --bench relay_path`; allocations per iteration must stay at zero.
//! The `*_among` cases rotate through 10 or 10,000 allocations (issue 14: CPU per packet must
//! not grow with the allocation count). The machine's noise hides a few percent, so
//! `RELAY_PATH_CALLGRIND=<allocations> valgrind --tool=callgrind --toggle-collect='*measured*'
//! target/release/deps/relay_path-*` counts instructions of a fixed run instead: 100,000 round
//! trips (ChannelData client → peer and peer → client), so Ir / 200,000 is per packet.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use divan::Bencher;
use divan::counter::BytesCount;
use turnstone::auth::{CredentialStore, PasswordAlgorithm, long_term_key};
use turnstone::core::cidr::Cidr;
use turnstone::core::policy::PeerPolicy;
use turnstone::core::scripted::ScriptedRelays;
use turnstone::core::{
    DropReason, FiveTuple, Handled, Lifetimes, Now, PEER_HEADROOM, PEER_TAILROOM, PeerAddr,
    PeerHandled, RelayFamily, RelayId, Server, Settings, SharedState, Transport,
};
use turnstone::proto::{
    Class, Message, MessageType, MessageWriter, Method, TransactionId, WriteError, attr,
    write_channel_data,
};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    match std::env::var("RELAY_PATH_CALLGRIND").map(|n| n.parse::<usize>()) {
        Ok(Ok(allocations)) => callgrind_run(allocations),
        _ => divan::main(),
    }
}

/// Allocation counts of the `*_among` cases.
const ALLOCATIONS: [usize; 2] = [10, 10_000];

/// A fixed run for callgrind (see the module doc).
fn callgrind_run(allocations: usize) {
    let mut s = Setup::with_allocations(allocations);
    let mut round = Round::new(160);
    let ok = measured(&mut s, &mut round, 100_000);
    assert_eq!(ok, 200_000, "every packet relayed");
    println!("{allocations} allocations: 100000 round trips");
}

#[inline(never)]
fn measured(s: &mut Setup, round: &mut Round, trips: usize) -> usize {
    (0..trips).map(|i| round.trip(s, i)).sum()
}

/// ChannelData buffers for round trips through many allocations.
struct Round {
    pkt: Vec<u8>,
    out: Vec<u8>,
    buf: Vec<u8>,
    len: usize,
}

impl Round {
    fn new(len: usize) -> Self {
        let mut pkt = vec![0xAB; 4 + len];
        write_channel_data(&mut pkt, CHANNEL, len, false).unwrap();
        Self {
            pkt,
            out: vec![0u8; 2048],
            buf: Setup::peer_buffer(len),
            len,
        }
    }

    /// ChannelData client → peer and peer → client on allocation `i` (mod the count); how
    /// many of the two were relayed.
    fn trip(&mut self, s: &mut Setup, i: usize) -> usize {
        let (client, relay) = s.allocations[i % s.allocations.len()];
        let to_peer = s
            .server
            .handle_client(s.now, black_box(client), &self.pkt, &mut self.out);
        let payload = PEER_HEADROOM..PEER_HEADROOM + self.len;
        let to_client = s.server.handle_peer(
            s.now,
            black_box(relay),
            PeerAddr(PEER),
            &mut self.buf,
            payload,
        );
        usize::from(matches!(to_peer, Handled::Forward { .. }))
            + usize::from(matches!(to_client, PeerHandled::ToClient { .. }))
    }
}

/// Typical payloads: an Opus audio frame and a full-size video packet.
const PAYLOADS: [usize; 2] = [160, 1200];

const REALM: &str = "example.org";
const USER: &str = "alice";
const PASSWORD: &str = "alice-pw";
const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478);
const RELAY_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
/// The peer channel 0x4000 is bound to.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
/// Same IP, so permitted, but no channel: traffic goes as Data indications.
const PEER_NO_CHANNEL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9001);
const CHANNEL: u16 = 0x4000;

/// A server with one allocation of `alice` holding a permission for 127.0.0.1 and channel
/// 0x4000 bound to [`PEER`].
struct Setup {
    server: Server,
    relays: ScriptedRelays,
    now: Now,
    client: FiveTuple,
    relay: RelayId,
    key: Vec<u8>,
    nonce: Vec<u8>,
    tid: u8,
    /// Every allocation's client and relay (the first is `client`, `relay`).
    allocations: Vec<(FiveTuple, RelayId)>,
}

impl Setup {
    fn new() -> Self {
        Self::with_allocations(1)
    }

    /// `count` allocations of `alice` from consecutive client ports, each set up like the first.
    fn with_allocations(count: usize) -> Self {
        let allow = vec![Cidr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).unwrap()];
        let settings = Settings {
            realm: REALM.into(),
            software: Some("turnstone-bench".into()),
            relay_v4: Some(RelayFamily {
                bind: RELAY_IP,
                advertised: RELAY_IP,
            }),
            relay_v6: None,
            lifetimes: Lifetimes::default(),
            policy: PeerPolicy::new(allow, vec![], vec![RELAY_IP], vec![LISTENER]),
            max_permissions: 32,
            max_channels: 32,
            max_allocations_per_user: 0,
            max_allocations: 0,
            allocation_bandwidth: None,
            worker_bandwidth: None,
            alternate_server: None,
        };
        let store = CredentialStore::new(REALM, [(USER.into(), PASSWORD.into())], vec![]);
        let shared = Arc::new(SharedState::default());
        let key = long_term_key(
            PasswordAlgorithm::Md5,
            USER.as_bytes(),
            REALM.as_bytes(),
            PASSWORD.as_bytes(),
        );
        let mut s = Setup {
            server: Server::new(settings, Arc::new(store), [7; 32], shared, 42),
            relays: ScriptedRelays::with_ports(1024..=u16::MAX),
            now: Now {
                mono: clock_origin(),
                unix_secs: 1_700_000_000,
            },
            client: FiveTuple {
                client: "127.0.0.1:40000".parse().unwrap(),
                server: LISTENER,
                transport: Transport::Udp,
            },
            relay: RelayId(0),
            key: key.as_bytes().to_vec(),
            nonce: Vec::new(),
            tid: 0,
            allocations: Vec::with_capacity(count),
        };
        for n in 0..count {
            let port = 40000 + n as u16 % 20000;
            let ip = Ipv4Addr::from(0x7F00_0001 + (n / 20000) as u32);
            s.client.client = SocketAddr::new(IpAddr::V4(ip), port);
            s.set_up_one();
        }
        (s.client, s.relay) = s.allocations[0];
        s
    }

    /// Allocates for `self.client`, permits [`PEER`]'s IP and binds [`CHANNEL`] to it.
    fn set_up_one(&mut self) {
        let s = self;
        // RFC 8489 §9.2: the unsigned Allocate is challenged with 401, REALM and NONCE.
        let challenge = s.request(Method::ALLOCATE, false, |w| {
            w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).map(drop)
        });
        let msg = Message::parse(&challenge).unwrap();
        assert_eq!(msg.error_code().unwrap().unwrap().code, 401);
        s.nonce = msg.nonce().unwrap().unwrap().to_vec();
        let ok = s.request(Method::ALLOCATE, true, |w| {
            w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).map(drop)
        });
        assert_eq!(Message::parse(&ok).unwrap().class(), Class::Success);
        let relayed = Message::parse(&ok)
            .unwrap()
            .xor_address(attr::XOR_RELAYED_ADDRESS)
            .unwrap()
            .unwrap();
        s.relay = s.relays.id_of(relayed).unwrap();
        let ok = s.request(Method::CREATE_PERMISSION, true, |w| {
            w.add_xor_address(attr::XOR_PEER_ADDRESS, PEER).map(drop)
        });
        assert_eq!(Message::parse(&ok).unwrap().class(), Class::Success);
        let ok = s.request(Method::CHANNEL_BIND, true, |w| {
            w.add(attr::CHANNEL_NUMBER, &[0x40, 0x00, 0, 0])?;
            w.add_xor_address(attr::XOR_PEER_ADDRESS, PEER).map(drop)
        });
        assert_eq!(Message::parse(&ok).unwrap().class(), Class::Success);
        s.allocations.push((s.client, s.relay));
    }

    /// Sends a request (signed when `sign`) and returns the reply.
    fn request(
        &mut self,
        method: Method,
        sign: bool,
        body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
    ) -> Vec<u8> {
        self.tid = self.tid.wrapping_add(1);
        let mut pkt = vec![0u8; 512];
        let ty = MessageType::new(method, Class::Request);
        let mut w = MessageWriter::new(&mut pkt, ty, TransactionId([self.tid; 12])).unwrap();
        body(&mut w).unwrap();
        if sign {
            w.add(attr::USERNAME, USER.as_bytes()).unwrap();
            w.add(attr::REALM, REALM.as_bytes()).unwrap();
            w.add(attr::NONCE, &self.nonce).unwrap();
            w.add_integrity(&self.key).unwrap();
        }
        w.add_fingerprint().unwrap();
        let n = w.finish();
        let mut out = vec![0u8; 2048];
        let mut handled = self
            .server
            .handle_client(self.now, self.client, &pkt[..n], &mut out);
        if handled == Handled::Drop(DropReason::Pending) {
            // The Allocate is answered when its relay is confirmed: here, at once.
            let mut answer = None;
            let mut buf = vec![0u8; 2048];
            self.relays
                .pump(&mut self.server, self.now, &mut buf, |d, bytes| {
                    answer = Some((d.len, bytes.to_vec()))
                });
            let (len, bytes) = answer.unwrap();
            out[..len].copy_from_slice(&bytes);
            handled = Handled::Reply(len);
        }
        let Handled::Reply(len) = handled else {
            panic!("no reply: {handled:?}");
        };
        out.truncate(len);
        out
    }

    /// A peer datagram laid out as the IO layer does: headroom, payload, tailroom.
    fn peer_buffer(len: usize) -> Vec<u8> {
        vec![0xAB; PEER_HEADROOM + len + PEER_TAILROOM]
    }
}

/// The bench's fixed time: nothing expires while it runs.
#[allow(
    clippy::disallowed_methods,
    reason = "a fixed `Now` needs one real origin"
)]
fn clock_origin() -> Instant {
    Instant::now()
}

#[divan::bench(args = PAYLOADS)]
fn client_channel_data_to_peer(bencher: Bencher, len: usize) {
    let mut s = Setup::new();
    let mut pkt = vec![0xAB; 4 + len];
    write_channel_data(&mut pkt, CHANNEL, len, false).unwrap();
    let mut out = vec![0u8; 2048];
    let handled = s.server.handle_client(s.now, s.client, &pkt, &mut out);
    assert!(
        matches!(
            handled,
            Handled::Forward {
                peer: PeerAddr(PEER),
                ..
            }
        ),
        "{handled:?}"
    );
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        s.server
            .handle_client(s.now, black_box(s.client), black_box(&pkt), &mut out)
    });
}

#[divan::bench(args = PAYLOADS)]
fn peer_to_client_channel_data(bencher: Bencher, len: usize) {
    let mut s = Setup::new();
    let mut buf = Setup::peer_buffer(len);
    let payload = PEER_HEADROOM..PEER_HEADROOM + len;
    let handled = s
        .server
        .handle_peer(s.now, s.relay, PeerAddr(PEER), &mut buf, payload.clone());
    let PeerHandled::ToClient { range, .. } = handled else {
        panic!("{handled:?}");
    };
    assert_eq!(buf[range.start], 0x40, "not ChannelData");
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        s.server.handle_peer(
            s.now,
            black_box(s.relay),
            black_box(PeerAddr(PEER)),
            &mut buf,
            payload.clone(),
        )
    });
}

#[divan::bench(args = PAYLOADS)]
fn peer_to_client_data_indication(bencher: Bencher, len: usize) {
    let mut s = Setup::new();
    let mut buf = Setup::peer_buffer(len);
    let payload = PEER_HEADROOM..PEER_HEADROOM + len;
    let handled = s.server.handle_peer(
        s.now,
        s.relay,
        PeerAddr(PEER_NO_CHANNEL),
        &mut buf,
        payload.clone(),
    );
    let PeerHandled::ToClient { range, .. } = handled else {
        panic!("{handled:?}");
    };
    let msg = Message::parse(&buf[range]).unwrap();
    assert_eq!(msg.method(), Method::DATA);
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        s.server.handle_peer(
            s.now,
            black_box(s.relay),
            black_box(PeerAddr(PEER_NO_CHANNEL)),
            &mut buf,
            payload.clone(),
        )
    });
}

/// ChannelData both ways, rotating through `allocations` allocations: per packet cost must not
/// grow with the count (issue 14).
#[divan::bench(args = ALLOCATIONS)]
fn channel_data_round_trip_among(bencher: Bencher, allocations: usize) {
    let mut s = Setup::with_allocations(allocations);
    let mut round = Round::new(160);
    let mut i = 0;
    assert_eq!(round.trip(&mut s, 0), 2);
    bencher.bench_local(|| {
        i += 1;
        round.trip(&mut s, i)
    });
}
