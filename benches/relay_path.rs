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

use divan::Bencher;
use divan::counter::BytesCount;
use turnstone::core::testkit::{self, Harness, ScriptedRelays};
use turnstone::core::{
    FiveTuple, Handled, Now, PEER_HEADROOM, PEER_TAILROOM, PeerAddr, PeerHandled, RelayId, Settings,
};
use turnstone::proto::{Message, Method, write_channel_data};

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
        let to_peer =
            s.h.server
                .handle_client(s.now, black_box(client), &self.pkt, &mut self.out);
        let payload = PEER_HEADROOM..PEER_HEADROOM + self.len;
        let to_client = s.h.server.handle_peer(
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

/// The peer channel 0x4000 is bound to.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
/// Same IP, so permitted, but no channel: traffic goes as Data indications.
const PEER_NO_CHANNEL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9001);
const CHANNEL: u16 = 0x4000;

/// A server with allocations of `alice`, each holding a permission for 127.0.0.1 and channel
/// 0x4000 bound to [`PEER`], set up through the core's test kit (scripted client and relays).
struct Setup {
    h: Harness,
    now: Now,
    client: FiveTuple,
    relay: RelayId,
    /// Every allocation's client and relay (the first is `client`, `relay`).
    allocations: Vec<(FiveTuple, RelayId)>,
}

impl Setup {
    fn new() -> Self {
        Self::with_allocations(1)
    }

    /// `count` allocations of `alice` from consecutive client ports, each set up like the first.
    fn with_allocations(count: usize) -> Self {
        let mut h = Harness::with_settings(Settings {
            relay_v6: None,
            policy: testkit::policy(&["127.0.0.0/8"]),
            max_allocations_per_user: 0,
            ..testkit::settings()
        });
        // Room for 10,000 relays (the kit's default list is a thousand ports).
        h.relays = ScriptedRelays::with_ports(1024..=u16::MAX);
        let mut allocations = Vec::with_capacity(count);
        for _ in 0..count {
            let mut alice = h.client("alice");
            let relayed = h.allocate(&mut alice, &[]);
            h.permit(&mut alice, &[PEER]).ok();
            h.bind(&mut alice, CHANNEL, PEER).ok();
            allocations.push((alice.ft, h.relays.id_of(relayed).unwrap()));
        }
        // The bench's fixed time: nothing expires while it runs.
        let now = h.now();
        let (client, relay) = allocations[0];
        Setup {
            h,
            now,
            client,
            relay,
            allocations,
        }
    }

    /// A peer datagram laid out as the IO layer does: headroom, payload, tailroom.
    fn peer_buffer(len: usize) -> Vec<u8> {
        vec![0xAB; PEER_HEADROOM + len + PEER_TAILROOM]
    }
}

#[divan::bench(args = PAYLOADS)]
fn client_channel_data_to_peer(bencher: Bencher, len: usize) {
    let mut s = Setup::new();
    let mut pkt = vec![0xAB; 4 + len];
    write_channel_data(&mut pkt, CHANNEL, len, false).unwrap();
    let mut out = vec![0u8; 2048];
    let handled = s.h.server.handle_client(s.now, s.client, &pkt, &mut out);
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
        s.h.server
            .handle_client(s.now, black_box(s.client), black_box(&pkt), &mut out)
    });
}

#[divan::bench(args = PAYLOADS)]
fn peer_to_client_channel_data(bencher: Bencher, len: usize) {
    let mut s = Setup::new();
    let mut buf = Setup::peer_buffer(len);
    let payload = PEER_HEADROOM..PEER_HEADROOM + len;
    let handled =
        s.h.server
            .handle_peer(s.now, s.relay, PeerAddr(PEER), &mut buf, payload.clone());
    let PeerHandled::ToClient { range, .. } = handled else {
        panic!("{handled:?}");
    };
    assert_eq!(buf[range.start], 0x40, "not ChannelData");
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        s.h.server.handle_peer(
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
    let handled = s.h.server.handle_peer(
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
        s.h.server.handle_peer(
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
