//! The redirect path: a server namespace with one end of a veth pair, and a second
//! namespace at the other end holding the client (10.77.0.2, fd77::2) and the peer
//! (10.77.0.3, fd77::3). The program rewrites a packet that came in on the server's veth and
//! sends it back out of it (FIB lookup, neighbour MACs), so the receiving stack verifies
//! every UDP checksum the program updated.
//!
//! With transmit checksum offload off on the client side, packets carry full checksums and
//! the program relays them; with it on (the veth default), they arrive as CHECKSUM_PARTIAL
//! leftovers it cannot redirect, and userspace relays them ("offloaded").
//!
//! With IP forwarding on the server's veth, the program sends where the kernel's FIB lookup
//! says. Without it (a default host) the lookup answers "forwarding disabled", and the program
//! sends through the interface each side's own packets arrive on, learned per channel: the
//! client's first ChannelData teaches the way to the client, the peer's first datagram the
//! way to the peer, which that datagram therefore takes through userspace ("no_route").
//!
//! The server must see its namespace's /sys (the loader checks the interface type there), so
//! it runs in a child process started by `ip netns exec` ([`super::run_inner`]); that process
//! has the metrics recorder to itself, so the metrics are checked exactly too.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{
    Cfg, Events, Server, allocate, bind, channel_data, client_at, is_inner, recv_within, run_inner,
    settle,
};
use crate::common::{REPLY_TIMEOUT, bounded};
use crate::netns::{Netns, enter};
use crate::ops_limits::metric;

const SERVER_MAC: &str = "02:77:00:00:00:01";
const CLIENTS_MAC: &str = "02:77:00:00:00:02";
/// The client side's namespace (by name).
const NS_VAR: &str = "TURNSTONE_IT_FP_VETH_NS";

/// (server, client, peer) addresses of a family.
fn addresses(v6: bool) -> (IpAddr, IpAddr, IpAddr) {
    let p = |s: &str| s.parse::<IpAddr>().unwrap();
    if v6 {
        (p("fd77::1"), p("fd77::2"), p("fd77::3"))
    } else {
        (p("10.77.0.1"), p("10.77.0.2"), p("10.77.0.3"))
    }
}

/// One veth setup: the client side's checksum offload, the server side's forwarding, and
/// how the client pads its ChannelData.
#[derive(Clone, Copy, Debug)]
struct Scenario {
    offload: bool,
    forwarding: bool,
    /// Padding 1–3 bytes that leaves an odd total (not to a multiple of 4); otherwise none
    /// or to a multiple of 4 (RFC 8656 §12.5).
    odd_padding: bool,
}

const SCENARIO_VAR: &str = "TURNSTONE_IT_FP_VETH_SCENARIO";

impl Scenario {
    fn encode(self) -> String {
        format!("{} {} {}", self.offload, self.forwarding, self.odd_padding)
    }

    fn decode(text: &str) -> Scenario {
        let flags: Vec<bool> = text.split(' ').map(|f| f == "true").collect();
        Scenario {
            offload: flags[0],
            forwarding: flags[1],
            odd_padding: flags[2],
        }
    }
}

/// Builds the two namespaces and runs [`inner`] in the server's.
fn veth(scenario: Scenario) {
    let server = Netns::new("fp-vs");
    let clients = Netns::new("fp-vc");
    // Created inside the namespaces: nothing appears on the host, even for a moment.
    server.ip(&[
        "link",
        "add",
        "vs",
        "address",
        SERVER_MAC,
        "type",
        "veth",
        "peer",
        "name",
        "vc",
        "address",
        CLIENTS_MAC,
        "netns",
        &clients.name,
    ]);
    for v6 in [false, true] {
        let (s, c, p) = addresses(v6);
        let prefix = if v6 { 64 } else { 24 };
        // No duplicate address detection: the addresses work at once.
        let nodad: &[&str] = if v6 { &["nodad"] } else { &[] };
        let add = |ns: &Netns, ip: IpAddr, dev: &str| {
            let cidr = format!("{ip}/{prefix}");
            let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev];
            args.extend_from_slice(nodad);
            ns.ip(&args);
        };
        add(&server, s, "vs");
        add(&clients, c, "vc");
        add(&clients, p, "vc");
        // Permanent neighbours: the program's FIB lookup finds the MACs from the first
        // packet (without them it leaves packets to userspace until ARP/ND has run).
        for ip in [c, p] {
            let ip = ip.to_string();
            server.ip(&[
                "neigh",
                "replace",
                &ip,
                "lladdr",
                CLIENTS_MAC,
                "dev",
                "vs",
                "nud",
                "permanent",
            ]);
        }
        let s = s.to_string();
        clients.ip(&[
            "neigh",
            "replace",
            &s,
            "lladdr",
            SERVER_MAC,
            "dev",
            "vc",
            "nud",
            "permanent",
        ]);
    }
    if scenario.forwarding {
        // The namespace's own sysctls: the host's stay as they are.
        server.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv4.conf.vs.forwarding=1",
                "net.ipv6.conf.vs.forwarding=1",
            ],
        );
    }
    server.ip(&["link", "set", "vs", "up"]);
    clients.ip(&["link", "set", "vc", "up"]);
    // Transmit checksum offload of the client side (the veth default is on).
    let tx = if scenario.offload { "on" } else { "off" };
    clients.exec("ethtool", &["-K", "vc", "tx", tx]);
    run_inner(
        &server,
        "fastpath::veth::inner",
        &[
            (NS_VAR, clients.name.clone()),
            (SCENARIO_VAR, scenario.encode()),
        ],
    );
}

#[test]
fn over_veth_the_program_redirects_both_ways_with_valid_checksums() {
    veth(Scenario {
        offload: false,
        forwarding: true,
        odd_padding: false,
    });
}

#[test]
fn over_veth_checksum_offloaded_packets_are_relayed_by_userspace() {
    veth(Scenario {
        offload: true,
        forwarding: true,
        odd_padding: false,
    });
}

/// Trailing bytes that do not end the datagram on a 4-byte boundary are not RFC 8656 §12.5
/// padding: the program leaves them to userspace (its incremental checksum takes padding out
/// as the tail of the datagram's last 4-byte word), which relays the same data. Found as a
/// bug: the program once took them too and broke the checksum when data + padding was odd
/// (e.g. 100 bytes + 5c a3 17), which only the redirect path shows (loopback packets are
/// checksum-offloaded).
#[test]
fn over_veth_padding_that_leaves_an_odd_total_keeps_the_checksum_valid() {
    veth(Scenario {
        offload: false,
        forwarding: true,
        odd_padding: true,
    });
}

/// On an interface without IP forwarding (the default: net.ipv4.conf.<dev>.forwarding = 0)
/// `bpf_fib_lookup` answers BPF_FIB_LKUP_RET_FWD_DISABLED whatever its flags; the program
/// then sends through the interface each side's packets arrive on, learned per channel, with
/// `bpf_redirect_neigh`. Found as a bug: the program once left every packet to userspace
/// there, while it logged "active".
#[test]
fn over_veth_the_program_relays_with_forwarding_off_as_on_a_default_host() {
    veth(Scenario {
        offload: false,
        forwarding: false,
        odd_padding: false,
    });
}

/// What one family's exchange sent: kernel-relayable packets each way, and everything
/// delivered each way.
#[derive(Default)]
struct Tally {
    kernel_to_peer: u64,
    kernel_to_client: u64,
    too_big: u64,
    no_route: u64,
    to_peer: u64,
    to_client: u64,
}

/// Client → peer ChannelData: (data length, padding length). RFC padding (to a multiple of
/// 4) or none, and 1600 bytes, which leave the client as IP fragments that the program
/// leaves to the stack (reassembled, then relayed by userspace).
const RFC_PADDED: &[(usize, usize)] = &[
    (0, 0),
    (1, 3),
    (2, 2),
    (3, 1),
    (4, 0),
    (5, 3),
    (7, 1),
    (100, 0),
    (1001, 3),
    (1400, 0),
    (1600, 0),
];
/// Padding that leaves an odd total.
const ODD_PADDED: &[(usize, usize)] = &[
    (0, 1),
    (1, 2),
    (2, 1),
    (2, 3),
    (4, 1),
    (7, 2),
    (100, 3),
    (1001, 2),
];
/// Padding bytes: not zero and not all alike, so a checksum slip cannot cancel out.
const PAD: [u8; 3] = [0x5c, 0xa3, 0x17];

/// The exchange of one family, from the client side's namespace.
async fn exchange(server: &Server, v6: bool, scenario: Scenario, tally: &mut Tally) {
    let (s, c_ip, p_ip) = addresses(v6);
    let mut c = client_at(SocketAddr::new(s, 3478), c_ip).await;
    let relayed = allocate(&mut c, v6).await;
    let peer = UdpSocket::bind(SocketAddr::new(p_ip, 0)).await.unwrap();
    let channel = if v6 { 0x4ffe } else { 0x4001 };
    bind(&mut c, channel, peer.local_addr().unwrap()).await;
    settle(&mut c).await;
    if !scenario.forwarding {
        // Without forwarding the program learns where the peer is from the peer's own
        // first datagram, which userspace relays meanwhile.
        peer.send_to(b"hello peer", relayed).await.unwrap();
        let got = c.conn.recv_within(REPLY_TIMEOUT).await;
        assert_eq!(got, Some(channel_data(channel, b"hello peer", &[])));
        tally.no_route += 1;
        tally.to_client += 1;
    }

    let sends = if scenario.odd_padding {
        ODD_PADDED
    } else {
        RFC_PADDED
    };
    for (i, &(len, pad)) in sends.iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let pad = &PAD[..pad];
        c.conn.send(&channel_data(channel, &data, pad)).await;
        let Some((got, from)) = recv_within(&peer, REPLY_TIMEOUT).await else {
            panic!(
                "client → peer, {len} bytes + {} pad (IPv6 {v6}): nothing arrived; program \
                 events {:?}; UDP counters here: {}",
                pad.len(),
                server.kernel(),
                udp_counters()
            );
        };
        assert_eq!(
            (got.len(), from),
            (len, relayed),
            "client → peer, {len} bytes"
        );
        assert_eq!(got, data, "client → peer, {len} bytes");
        tally.to_peer += 1;
        // Only what left the client unfragmented is the program's, and only padding that
        // ends on a 4-byte boundary (RFC 8656 §12.5): other trailing bytes go to userspace.
        let unfragmented = if v6 { 1500 - 40 - 8 } else { 1500 - 20 - 8 };
        let rfc_padding = pad.is_empty() || (len + pad.len()).is_multiple_of(4);
        if 4 + len + pad.len() <= unfragmented && rfc_padding {
            tally.kernel_to_peer += 1;
        }
    }
    // Peer → client. Under 4 bytes is userspace's; the largest unfragmented datagram does
    // not fit the link's MTU once it grows by the ChannelData header ("too_big", then
    // userspace, which fragments it).
    let largest = if v6 { 1500 - 40 - 8 } else { 1500 - 20 - 8 };
    for len in [1usize, 3, 4, 5, 8, 100, 999, 1400, largest] {
        let data: Vec<u8> = (0..len).map(|b| (b * 13 + len) as u8).collect();
        peer.send_to(&data, relayed).await.unwrap();
        let Some(got) = c.conn.recv_within(REPLY_TIMEOUT).await else {
            panic!(
                "peer → client, {len} bytes (IPv6 {v6}): nothing arrived; program events \
                 {:?}; UDP counters here: {}",
                server.kernel(),
                udp_counters()
            );
        };
        assert_eq!(
            got,
            channel_data(channel, &data, &[]),
            "peer → client, {len} bytes"
        );
        tally.to_client += 1;
        if len == largest {
            tally.too_big += 1;
        } else if len >= 4 {
            tally.kernel_to_client += 1;
        }
    }
}

/// This thread's namespace's UDP and UDP6 counters (InErrors, InCsumErrors: a datagram
/// the program rewrote with a wrong checksum is dropped there), for failure messages.
fn udp_counters() -> String {
    let read =
        |f: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).unwrap_or_default();
    let snmp = read("snmp");
    let v4: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let v6: Vec<String> = read("snmp6")
        .lines()
        .filter(|l| l.starts_with("Udp6InErrors") || l.starts_with("Udp6InCsumErrors"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join("="))
        .collect();
    format!("{v4:?} {v6:?}")
}

#[test]
#[ignore = "run in its namespaces by the over_veth_* tests"]
fn inner() {
    if !is_inner() {
        return;
    }
    let clients = PathBuf::from("/var/run/netns").join(std::env::var(NS_VAR).unwrap());
    let scenario = Scenario::decode(&std::env::var(SCENARIO_VAR).unwrap());
    // This process is this test's alone: the counts are exact.
    let recorder = turnstone::ops::install_recorder().expect("a metrics recorder");
    let server = Server::start(&Cfg {
        fast_path: "on",
        listen: vec!["10.77.0.1:3478".into(), "[fd77::1]:3478".into()],
        relay: "10.77.0.1".into(),
        relay_v6: Some("fd77::1".into()),
        allow: vec!["10.77.0.0/24".into(), "fd77::/64".into()],
        deny: Vec::new(),
        limits: String::new(),
        workers: 2,
    });
    // The server's threads stay in this namespace; this one moves to the clients'.
    enter(&clients).expect("setns into the client side's namespace");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bounded(async {
        let mut total = Tally::default();
        for v6 in [false, true] {
            let before = server.kernel();
            let mut tally = Tally::default();
            exchange(&server, v6, scenario, &mut tally).await;
            let got = server.kernel().since(&before);
            let kernel = tally.kernel_to_peer + tally.kernel_to_client;
            let want = if scenario.offload {
                Events::of(&[("offloaded", kernel), ("too_big", tally.too_big)])
            } else {
                Events::of(&[
                    ("relayed_to_peer", tally.kernel_to_peer),
                    ("relayed_to_client", tally.kernel_to_client),
                    ("too_big", tally.too_big),
                    ("no_route", tally.no_route),
                ])
            };
            assert_eq!(got, want, "program events (IPv6 {v6}, {scenario:?})");
            total.to_peer += tally.to_peer;
            total.to_client += tally.to_client;
        }

        // Metrics: the program's counters as published, and the relayed packets counted
        // once whichever path took them. Workers publish once a second.
        let events = server.kernel();
        let expected: Vec<u64> = turnstone::io::fastpath::EVENTS
            .iter()
            .map(|e| events.get(e))
            .chain([total.to_peer, total.to_client])
            .collect();
        let scrape = || {
            let text = recorder.render();
            let mut v: Vec<u64> = turnstone::io::fastpath::EVENTS
                .iter()
                .map(|e| metric(&text, "turnstone_fast_path_events_total", &[("event", e)]))
                .collect();
            for d in ["to_peer", "to_client"] {
                v.push(metric(
                    &text,
                    "turnstone_relayed_packets_total",
                    &[("direction", d)],
                ));
            }
            v
        };
        let mut seen = Vec::new();
        for _ in 0..40 {
            seen = scrape();
            if seen == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            seen,
            expected,
            "metrics: fast path events {:?} then relayed packets to peer, to client",
            turnstone::io::fastpath::EVENTS
        );
    }));
}
