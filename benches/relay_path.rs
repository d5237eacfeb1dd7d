//! The core's data plane (RFC 8656 §11–12) after a real authenticated setup: ChannelData from
//! the client forwarded to its peer, and a peer datagram turned into ChannelData or a Data
//! indication for the client. No sockets: relays come from the core's scripted relay side.
//!
//! Run with `cargo bench --bench relay_path`; allocations per iteration must stay at zero.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use divan::Bencher;
use divan::counter::BytesCount;
use turnstone::core::testkit::{self, Harness};
use turnstone::core::{
    FiveTuple, Handled, Now, PEER_HEADROOM, PEER_TAILROOM, PeerHandled, RelayId, Settings,
};
use turnstone::proto::{Message, Method, write_channel_data};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

/// Typical payloads: an Opus audio frame and a full-size video packet.
const PAYLOADS: [usize; 2] = [160, 1200];

/// The peer channel 0x4000 is bound to.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000);
/// Same IP, so permitted, but no channel: traffic goes as Data indications.
const PEER_NO_CHANNEL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9001);
const CHANNEL: u16 = 0x4000;

/// A server with one allocation of `alice` holding a permission for 127.0.0.1 and channel
/// 0x4000 bound to [`PEER`], set up through the core's test kit (scripted client and relays).
struct Setup {
    h: Harness,
    now: Now,
    client: FiveTuple,
    relay: RelayId,
}

impl Setup {
    fn new() -> Self {
        let mut h = Harness::with_settings(Settings {
            relay_v6: None,
            policy: testkit::policy(&["127.0.0.0/8"]),
            ..testkit::settings()
        });
        let mut alice = h.client("alice");
        let relayed = h.allocate(&mut alice, &[]);
        h.permit(&mut alice, &[PEER]).ok();
        h.bind(&mut alice, CHANNEL, PEER).ok();
        let relay = h.relays.id_of(relayed).unwrap();
        // The bench's fixed time: nothing expires while it runs.
        let now = h.now();
        Setup {
            h,
            now,
            client: alice.ft,
            relay,
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
        matches!(handled, Handled::Forward { peer: PEER, .. }),
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
            .handle_peer(s.now, s.relay, PEER, &mut buf, payload.clone());
    let PeerHandled::ToClient { range, .. } = handled else {
        panic!("{handled:?}");
    };
    assert_eq!(buf[range.start], 0x40, "not ChannelData");
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        s.h.server.handle_peer(
            s.now,
            black_box(s.relay),
            black_box(PEER),
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
    let handled =
        s.h.server
            .handle_peer(s.now, s.relay, PEER_NO_CHANNEL, &mut buf, payload.clone());
    let PeerHandled::ToClient { range, .. } = handled else {
        panic!("{handled:?}");
    };
    let msg = Message::parse(&buf[range]).unwrap();
    assert_eq!(msg.method(), Method::DATA);
    bencher.counter(BytesCount::new(len)).bench_local(|| {
        s.h.server.handle_peer(
            s.now,
            black_box(s.relay),
            black_box(PEER_NO_CHANNEL),
            &mut buf,
            payload.clone(),
        )
    });
}
