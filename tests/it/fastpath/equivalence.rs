//! Byte-exact equivalence of the kernel and the userspace path (a seeded property test): the
//! same scripted exchange of ChannelData against a server with the fast path on and one with
//! it off, over IPv4 and IPv6, in both directions, over payload sizes, channel numbers and
//! padding. Each side must receive exactly what the RFC says, the same bytes from both
//! servers, and the on-server's program must have relayed every packet it is meant to.
//!
//! `TURNSTONE_FP_SEED=<u64>` replays one seed (failures print theirs).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{
    Cfg, Events, SILENCE, Server, allocate, bind, channel_data, client, loopback, on_private_lo,
    recv_within, settle,
};
use crate::client::TurnClient;
use crate::common::REPLY_TIMEOUT;

/// Largest client datagram userspace takes whole (`MAX_DATAGRAM` in src/io/udp.rs): the
/// userspace path drops longer ones, so the equivalence below stays within it.
const CLIENT_DATAGRAM_MAX: usize = 4096;
/// Largest peer datagram userspace relays (`PEER_MAX` in src/io/datapath.rs: the datagram
/// buffer less the room for a ChannelData or Data indication header).
const PEER_DATAGRAM_MAX: usize = 4096 - 48 - 4;

/// Channels bound per allocation (each to a peer of its own: RFC 8656 §12 allows one
/// channel per peer address).
const CHANNELS: usize = 3;

/// splitmix64: small, seedable, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// One step of a script.
#[derive(Clone, Debug)]
enum Step {
    /// The client sends ChannelData on channel `chan` (an index) with `pad` after the data.
    ToPeer {
        chan: usize,
        data: Vec<u8>,
        pad: Vec<u8>,
    },
    /// Peer `chan` sends `data` to the relayed address.
    ToClient { chan: usize, data: Vec<u8> },
}

impl Step {
    /// A short description for failure messages (payloads can be 4 KiB).
    fn describe(&self) -> String {
        match self {
            Step::ToPeer { chan, data, pad } => {
                format!(
                    "client→peer chan#{chan} {} bytes + {} pad",
                    data.len(),
                    pad.len()
                )
            }
            Step::ToClient { chan, data } => {
                format!("peer→client chan#{chan} {} bytes", data.len())
            }
        }
    }
}

/// A script: the channel numbers and the steps.
#[derive(Clone, Debug)]
struct Script {
    channels: [u16; CHANNELS],
    steps: Vec<Step>,
}

/// Sizes that catch off-by-ones: 0–17 (every residue mod 4, around the 4-byte ChannelData
/// header and the program's 4-byte minimum), powers of two ± 1, a typical media MTU.
const EDGES: &[usize] = &[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256,
    257, 1023, 1024, 1025, 1199, 1200, 1399, 1400,
];

fn size(rng: &mut Rng, max: usize) -> usize {
    match rng.below(16) {
        0..=6 => EDGES[rng.below(EDGES.len())],
        7..=14 => rng.between(0, 1400),
        _ => rng.between(1401, max),
    }
}

/// Channel numbers: RFC 8656 §12 binds 0x4000–0x4FFF; the first script takes both ends.
fn channels(rng: &mut Rng, first: bool) -> [u16; CHANNELS] {
    let mut out = [0u16; CHANNELS];
    let mut i = 0;
    if first {
        out = [0x4000, 0x4FFF, 0];
        i = 2;
    }
    while i < CHANNELS {
        let c = 0x4000 + rng.below(0x1000) as u16;
        if !out[..i].contains(&c) {
            out[i] = c;
            i += 1;
        }
    }
    out
}

fn script(seed: u64, first: bool, steps: usize) -> Script {
    let mut rng = Rng::new(seed);
    let channels = channels(&mut rng, first);
    let mut out = Vec::new();
    if first {
        // The boundaries, deterministically: tiny payloads both ways with every padding, and
        // the largest datagrams userspace relays.
        for len in 0..=4 {
            for pad in 0..=3 {
                out.push(Step::ToPeer {
                    chan: len % CHANNELS,
                    data: rng.bytes(len),
                    pad: vec![0xa5; pad],
                });
            }
            out.push(Step::ToClient {
                chan: len % CHANNELS,
                data: rng.bytes(len),
            });
        }
        out.push(Step::ToPeer {
            chan: 0,
            data: rng.bytes(CLIENT_DATAGRAM_MAX - 4),
            pad: Vec::new(),
        });
        out.push(Step::ToPeer {
            chan: 1,
            data: rng.bytes(CLIENT_DATAGRAM_MAX - 4 - 3),
            pad: vec![0xff; 3],
        });
        out.push(Step::ToClient {
            chan: 2,
            data: rng.bytes(PEER_DATAGRAM_MAX),
        });
    }
    for _ in 0..steps {
        let chan = rng.below(CHANNELS);
        if rng.below(2) == 0 {
            // No padding, padding to a multiple of 4 (RFC 8656 §12.5), or 1–3 bytes of it
            // whatever the length; never zero bytes, so a pad left in is visible.
            let kind = rng.below(3);
            let len = size(&mut rng, CLIENT_DATAGRAM_MAX - 4 - 3);
            let pad_len = match kind {
                0 => 0,
                1 => (4 - len % 4) % 4,
                _ => rng.between(1, 3),
            };
            let pad = (0..pad_len).map(|_| rng.next() as u8 | 1).collect();
            out.push(Step::ToPeer {
                chan,
                data: rng.bytes(len),
                pad,
            });
        } else {
            let len = size(&mut rng, PEER_DATAGRAM_MAX);
            let mut data = rng.bytes(len);
            // Peer data that looks like ChannelData of a bound channel, or like STUN: it is
            // opaque payload all the same (RFC 8656 §12.7).
            if len >= 4 {
                match rng.below(8) {
                    0 => {
                        let c = channels[rng.below(CHANNELS)];
                        data[..2].copy_from_slice(&c.to_be_bytes());
                        data[2..4].copy_from_slice(&((len - 4) as u16).to_be_bytes());
                    }
                    1 => data[..2].copy_from_slice(&[0x00, 0x01]),
                    _ => {}
                }
            }
            out.push(Step::ToClient { chan, data });
        }
    }
    Script {
        channels,
        steps: out,
    }
}

/// What the RFC says each step delivers: the data alone to the peer (§12.6: padding is not
/// relayed), and unpadded ChannelData to a UDP client (§12.7, §12.5). An empty peer
/// datagram reaches nobody: userspace cannot tell it from a truncated one (src/sys/mmsg.rs)
/// and the program leaves datagrams under 4 bytes to userspace.
fn expected(script: &Script) -> Vec<Option<Vec<u8>>> {
    script
        .steps
        .iter()
        .map(|step| match step {
            Step::ToPeer { data, .. } => Some(data.clone()),
            Step::ToClient { data, .. } if data.is_empty() => None,
            Step::ToClient { chan, data } => Some(channel_data(script.channels[*chan], data, &[])),
        })
        .collect()
}

/// What the program relays of a script: every client ChannelData (each fits the program's
/// checks), and every peer datagram of 4 bytes or more (shorter ones go to userspace).
fn kernel_counts(script: &Script) -> Events {
    // Padding is the program's only when it ends the datagram on a 4-byte boundary, as RFC
    // 8656 §12.5 pads; other trailing bytes go to userspace, which relays the same data.
    let to_peer = script
        .steps
        .iter()
        .filter(|s| {
            matches!(s, Step::ToPeer { data, pad, .. }
                if pad.is_empty() || (data.len() + pad.len()).is_multiple_of(4))
        })
        .count() as u64;
    let to_client = script
        .steps
        .iter()
        .filter(|s| matches!(s, Step::ToClient { data, .. } if data.len() >= 4))
        .count() as u64;
    Events::of(&[
        ("relayed_to_peer", to_peer),
        ("relayed_to_client", to_client),
    ])
}

/// Runs `script` against `server` over one family; what each step delivered.
async fn run(
    server: &Server,
    v6: bool,
    script: &Script,
    expect: &[Option<Vec<u8>>],
) -> Vec<Option<Vec<u8>>> {
    let mut c: TurnClient = client(server, v6).await;
    let relayed = allocate(&mut c, v6).await;
    let mut peers = Vec::new();
    for number in &script.channels {
        let peer = UdpSocket::bind(SocketAddr::new(loopback(v6), 0))
            .await
            .unwrap();
        bind(&mut c, *number, peer.local_addr().unwrap()).await;
        peers.push(peer);
    }
    settle(&mut c).await;
    let mut got = Vec::with_capacity(script.steps.len());
    for (step, want) in script.steps.iter().zip(expect) {
        // An expected datagram gets the full reply bound; an expected silence a short one.
        let wait = if want.is_some() {
            REPLY_TIMEOUT
        } else {
            SILENCE
        };
        match step {
            Step::ToPeer { chan, data, pad } => {
                c.conn
                    .send(&channel_data(script.channels[*chan], data, pad))
                    .await;
                let arrived = recv_within(&peers[*chan], wait).await;
                if let Some((_, from)) = &arrived {
                    assert_eq!(*from, relayed, "the peer must see the relayed address");
                }
                got.push(arrived.map(|(bytes, _)| bytes));
            }
            Step::ToClient { chan, data } => {
                peers[*chan].send_to(data, relayed).await.unwrap();
                // Only datagrams from the listener count (Conn::recv_within filters).
                got.push(c.conn.recv_within(wait).await);
            }
        }
    }
    // Nothing else may be on its way anywhere.
    for peer in &peers {
        assert_eq!(recv_within(peer, Duration::from_millis(20)).await, None);
    }
    assert_eq!(c.conn.recv_within(Duration::from_millis(20)).await, None);
    got
}

/// Where two transcripts first differ, in words (payloads are too long to print).
fn first_difference(
    script: &Script,
    a: &[Option<Vec<u8>>],
    b: &[Option<Vec<u8>>],
) -> Option<String> {
    let show = |x: &Option<Vec<u8>>| match x {
        None => "nothing".to_string(),
        Some(v) => format!("{} bytes starting {:02x?}", v.len(), &v[..v.len().min(8)]),
    };
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            let at = match (x, y) {
                (Some(x), Some(y)) => x
                    .iter()
                    .zip(y)
                    .position(|(p, q)| p != q)
                    .map_or(String::new(), |p| format!(" (first differing byte {p})")),
                _ => String::new(),
            };
            return Some(format!(
                "step {i} ({}): {} vs {}{at}",
                script.steps[i].describe(),
                show(x),
                show(y)
            ));
        }
    }
    (a.len() != b.len()).then(|| format!("{} vs {} steps", a.len(), b.len()))
}

/// Scripts per family (the first has the fixed boundaries) and random steps per script.
const SCRIPTS: u64 = 3;
const STEPS: usize = 40;

#[test]
fn kernel_and_userspace_relay_the_same_bytes_over_both_families_both_ways() {
    let seed = std::env::var("TURNSTONE_FP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x7572_6e73_746f_6e65_u64);
    on_private_lo("fp-eq", move || async move {
        let on = Server::start(&Cfg::loopback("on"));
        let off = Server::start(&Cfg::loopback("off"));
        assert!(off.events().is_none(), "fast_path = \"off\" loaded it");
        for v6 in [false, true] {
            for n in 0..SCRIPTS {
                let case_seed = seed ^ (n << 1 | u64::from(v6));
                let script = script(case_seed, n == 0, STEPS);
                let want = expected(&script);
                let family = if v6 { "IPv6" } else { "IPv4" };
                let context = format!(
                    "{family}, seed {case_seed:#x}, channels {:04x?}",
                    script.channels
                );

                let before = on.kernel();
                let kernel = run(&on, v6, &script, &want).await;
                let relayed = on.kernel().since(&before);
                let user = run(&off, v6, &script, &want).await;

                if let Some(d) = first_difference(&script, &kernel, &user) {
                    panic!("fast path on vs off differ at {d} [{context}]");
                }
                if let Some(d) = first_difference(&script, &kernel, &want) {
                    panic!("both servers deviate from the RFC at {d} [{context}]");
                }
                assert_eq!(
                    relayed,
                    kernel_counts(&script),
                    "what the program relayed [{context}]"
                );
            }
        }
        assert!(off.events().is_none());
    });
}

/// Datagrams past userspace's limits ([`CLIENT_DATAGRAM_MAX`], [`PEER_DATAGRAM_MAX`]) up to
/// near 64 KiB, which loopback carries whole: the two paths must still agree.
///
/// The program relays only datagrams userspace would: a client datagram up to 4096 bytes, a
/// peer datagram up to 4044 (userspace's receive buffers; the loader sets the program's
/// limits from them); larger ones go to userspace, which drops them, as without the fast
/// path. Found as a bug: the program once relayed them whenever they fit the path.
#[test]
fn kernel_and_userspace_agree_on_datagrams_past_the_userspace_buffers() {
    on_private_lo("fp-big", move || async move {
        let on = Server::start(&Cfg::loopback("on"));
        let off = Server::start(&Cfg::loopback("off"));
        let mut rng = Rng::new(0xb16);
        let mut steps = Vec::new();
        for len in [CLIENT_DATAGRAM_MAX - 3, 8 * 1024, 60 * 1024, 65000] {
            steps.push(Step::ToPeer {
                chan: 0,
                data: rng.bytes(len),
                pad: Vec::new(),
            });
        }
        for len in [
            PEER_DATAGRAM_MAX + 1,
            CLIENT_DATAGRAM_MAX,
            8 * 1024,
            60 * 1024,
            65000,
        ] {
            steps.push(Step::ToClient {
                chan: 1,
                data: rng.bytes(len),
            });
        }
        let script = Script {
            channels: [0x4001, 0x4002, 0x4003],
            steps,
        };
        let mut failures = Vec::new();
        for v6 in [false, true] {
            // Short waits: one path is expected to stay silent.
            let want = vec![None; script.steps.len()];
            let before = on.kernel();
            let kernel = run(&on, v6, &script, &want).await;
            let relayed = on.kernel().since(&before);
            let user = run(&off, v6, &script, &want).await;
            let summary = |t: &[Option<Vec<u8>>]| {
                t.iter()
                    .map(|x| x.as_ref().map(Vec::len))
                    .collect::<Vec<_>>()
            };
            // What the kernel delivered, it delivered as the RFC says.
            for (got, want) in kernel.iter().zip(expected(&script)) {
                assert!(
                    got.is_none() || *got == want,
                    "the kernel mangled a datagram"
                );
            }
            if first_difference(&script, &kernel, &user).is_some() {
                failures.push(format!(
                    "{}: sizes delivered with the fast path {:?}, without {:?} \
                     (steps {:?}; program events {relayed:?})",
                    if v6 { "IPv6" } else { "IPv4" },
                    summary(&kernel),
                    summary(&user),
                    script.steps.iter().map(Step::describe).collect::<Vec<_>>(),
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "the paths differ:\n{}",
            failures.join("\n")
        );
    });
}
