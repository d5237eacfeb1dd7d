//! What the kernel relays follows the core's state: permission and channel expiry, deletion,
//! a reload that denies the peer, usage counters, bandwidth caps, and channels between two
//! allocations of one server. All on a private loopback.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use turnstone::config::Config;
use turnstone::core::EndReason;
use turnstone::proto::{Class, Method, attr, error_code};

use super::{
    Cfg, Events, SILENCE, Server, allocate, bind, channel_data, client, loopback, on_private_lo,
    on_private_lo_with, permit, recv, recv_within, settle,
};
use crate::client::{TurnClient, error_of, parse};

const CHANNEL: u16 = 0x4000;

/// One ChannelData each way on `channel` between client `c` and `peer`, both delivered
/// exactly (RFC 8656 §12.6, §12.7).
async fn exchange(
    c: &mut TurnClient,
    channel: u16,
    peer: &UdpSocket,
    relayed: SocketAddr,
    data: &[u8],
) {
    c.conn.send(&channel_data(channel, data, &[])).await;
    let (bytes, from) = recv(peer).await;
    assert_eq!((bytes.as_slice(), from), (data, relayed), "client → peer");
    peer.send_to(data, relayed).await.unwrap();
    let got = c.conn.recv().await;
    assert_eq!(got, channel_data(channel, data, &[]), "peer → client");
}

/// Sends one ChannelData each way and asserts that neither arrives.
async fn exchange_refused(
    c: &mut TurnClient,
    channel: u16,
    peer: &UdpSocket,
    relayed: SocketAddr,
    what: &str,
) {
    c.conn
        .send(&channel_data(channel, b"must not pass", &[]))
        .await;
    assert_eq!(
        recv_within(peer, SILENCE).await,
        None,
        "{what}: the peer got ChannelData"
    );
    peer.send_to(b"must not pass either", relayed)
        .await
        .unwrap();
    assert_eq!(
        c.conn.recv_within(SILENCE).await,
        None,
        "{what}: the client got the peer's datagram"
    );
}

/// Both directions, one packet each, relayed in the kernel.
fn one_each_way() -> Events {
    Events::of(&[("relayed_to_peer", 1), ("relayed_to_client", 1)])
}

/// Sleeps until `at`; fails if `at` passed more than half a second ago (the timeline's
/// margins would not hold: the machine is too slow for it).
async fn at(at: Instant, what: &str) {
    let late = Instant::now().saturating_duration_since(at);
    assert!(
        late < Duration::from_millis(500),
        "{what}: {late:?} behind the timeline"
    );
    tokio::time::sleep_until(at).await;
}

/// RFC 8656 §9 and §12: data needs a live permission for the peer's IP, and ChannelData a
/// live channel; the program checks both expiries itself, and defers to userspace (which
/// drops) once either has passed. Permission 2 s (the least the configuration takes is 1 s),
/// channel 4 s.
#[test]
fn expired_permissions_and_channels_stop_kernel_relaying_until_refreshed() {
    on_private_lo("fp-expiry", || async {
        let cfg = Cfg::loopback("on")
            .with_limits("permission_lifetime = \"2s\"\nchannel_lifetime = \"4s\"");
        let server = Server::start(&cfg);
        let mut c = client(&server, false).await;
        let relayed = allocate(&mut c, false).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer_addr = peer.local_addr().unwrap();
        bind(&mut c, CHANNEL, peer_addr).await;
        // Expiries count from the server's handling, between the request and its answer.
        let bound = Instant::now();
        settle(&mut c).await;
        let margin = Duration::from_millis(300);

        let e = server.kernel();
        exchange(&mut c, CHANNEL, &peer, relayed, b"fresh").await;
        assert_eq!(server.kernel().since(&e), one_each_way(), "fresh channel");

        // The permission lapsed, the channel did not: the program finds both entries stale
        // and userspace drops what it hands over.
        at(bound + Duration::from_secs(2) + margin, "permission lapse").await;
        let e = server.kernel();
        exchange_refused(&mut c, CHANNEL, &peer, relayed, "permission expired").await;
        assert_eq!(
            server.kernel().since(&e),
            Events::of(&[("stale", 2)]),
            "permission expired"
        );

        // CreatePermission refreshes it (RFC 8656 §9): relaying resumes, in the kernel.
        permit(&mut c, peer_addr).await;
        settle(&mut c).await;
        assert!(
            Instant::now() + margin < bound + Duration::from_secs(4),
            "too slow: the channel would lapse during the next step"
        );
        let e = server.kernel();
        exchange(&mut c, CHANNEL, &peer, relayed, b"refreshed").await;
        assert_eq!(
            server.kernel().since(&e),
            one_each_way(),
            "permission refreshed"
        );

        // The channel lapsed while a fresh permission stands: ChannelData from the client is
        // dropped, and the peer's data reaches the client as a Data indication (RFC 8656
        // §12: no channel, but a permission), which only userspace builds.
        at(bound + Duration::from_secs(4) + margin, "channel lapse").await;
        permit(&mut c, peer_addr).await;
        settle(&mut c).await;
        let e = server.kernel();
        c.conn
            .send(&channel_data(CHANNEL, b"no channel", &[]))
            .await;
        assert_eq!(recv_within(&peer, SILENCE).await, None, "expired channel");
        peer.send_to(b"as an indication", relayed).await.unwrap();
        let got = c.conn.recv().await;
        let msg = parse(&got);
        assert_eq!(
            (msg.method(), msg.class()),
            (Method::DATA, Class::Indication)
        );
        assert_eq!(msg.get(attr::DATA).unwrap(), b"as an indication");
        assert_eq!(
            msg.xor_address(attr::XOR_PEER_ADDRESS).unwrap().unwrap(),
            peer_addr
        );
        assert_eq!(
            server.kernel().since(&e),
            Events::of(&[("stale", 2)]),
            "channel expired"
        );
    });
}

/// A reload that denies the peer revokes its permission and channel (issue 13, item 10); the
/// kernel must stop with userspace. Seen here once the worker has applied the reload (a new
/// ChannelBind to the peer is refused) and finished that batch ([`settle`]); that it stops
/// without waiting for the worker to run is the ignored
/// [`a_reload_denying_the_peer_stops_kernel_relaying_as_soon_as_userspace_stops`].
#[test]
fn a_reload_denying_the_peer_stops_kernel_relaying_both_ways() {
    on_private_lo("fp-reload", || async {
        for v6 in [false, true] {
            let cfg = Cfg::loopback("on");
            let server = Server::start(&cfg);
            // A peer address of its own, so it can be denied alone: 127.0.0.2, or ::1 (the
            // only IPv6 loopback address; the client's address is not a peer).
            let (peer_ip, deny): (IpAddr, &str) = if v6 {
                (loopback(true), "::1/128")
            } else {
                ([127, 0, 0, 2].into(), "127.0.0.2/32")
            };
            let peer = UdpSocket::bind(SocketAddr::new(peer_ip, 0)).await.unwrap();
            let peer_addr = peer.local_addr().unwrap();
            let mut c = client(&server, v6).await;
            let relayed = allocate(&mut c, v6).await;
            bind(&mut c, CHANNEL, peer_addr).await;
            settle(&mut c).await;
            let e = server.kernel();
            exchange(&mut c, CHANNEL, &peer, relayed, b"before").await;
            assert_eq!(
                server.kernel().since(&e),
                one_each_way(),
                "before the reload"
            );

            server.reload(&Cfg {
                deny: vec![deny.to_string()],
                ..cfg.clone()
            });
            let mut refused = false;
            for _ in 0..50 {
                let reply = c
                    .request(Method::CHANNEL_BIND, |w| {
                        w.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL + 1) << 16)
                            .unwrap();
                        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                            .unwrap();
                    })
                    .await;
                let msg = parse(&reply);
                if msg.class() == Class::Error && error_of(&msg) == error_code::FORBIDDEN {
                    refused = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(refused, "the reloaded policy never applied");
            settle(&mut c).await;

            let e = server.kernel();
            exchange_refused(&mut c, CHANNEL, &peer, relayed, "denied by the reload").await;
            // The entries are gone from the maps: not even looked at as stale.
            assert_eq!(
                server.kernel().since(&e),
                Events::default(),
                "after the reload (v6 {v6})"
            );
        }
    });
}

/// A reload reaches the kernel's maps at once: the reload itself syncs the mirror, not the
/// data plane's next wake-up, which kernel-relayed packets never cause. Found as a bug: for
/// up to a second after the reload the denied peer kept exchanging data with the client,
/// where the userspace path (the fast path off) stopped at once. The probes run for 1.5 s
/// after the reload, 30 ms apart, against both servers.
#[test]
fn a_reload_denying_the_peer_stops_kernel_relaying_as_soon_as_userspace_stops() {
    on_private_lo("fp-reload-now", || async {
        let on = Cfg::loopback("on");
        let off = Cfg::loopback("off");
        let mut sides = Vec::new();
        for cfg in [&on, &off] {
            let server = Server::start(cfg);
            let peer = UdpSocket::bind("127.0.0.2:0").await.unwrap();
            let mut c = client(&server, false).await;
            let relayed = allocate(&mut c, false).await;
            bind(&mut c, CHANNEL, peer.local_addr().unwrap()).await;
            settle(&mut c).await;
            exchange(&mut c, CHANNEL, &peer, relayed, b"before").await;
            sides.push((server, c, peer, relayed));
        }
        for ((server, ..), cfg) in sides.iter().zip([&on, &off]) {
            server.reload(&Cfg {
                deny: vec!["127.0.0.2/32".into()],
                ..cfg.clone()
            });
        }
        let reloaded = Instant::now();
        let probe = Duration::from_millis(30);
        // When each server last delivered something, counted from the reload.
        let mut last: [Option<Duration>; 2] = [None, None];
        for _ in 0..25 {
            for (k, (_, c, peer, relayed)) in sides.iter_mut().enumerate() {
                c.conn.send(&channel_data(CHANNEL, b"probe", &[])).await;
                if recv_within(peer, probe).await.is_some() {
                    last[k] = Some(reloaded.elapsed());
                }
                peer.send_to(b"probe", *relayed).await.unwrap();
                if c.conn.recv_within(probe).await.is_some() {
                    last[k] = Some(reloaded.elapsed());
                }
            }
        }
        let applied = Duration::from_millis(100);
        assert!(
            last[1].is_none_or(|t| t < applied),
            "userspace relayed {:?} after the reload: the probe is broken",
            last[1]
        );
        assert!(
            last[0].is_none_or(|t| t < applied),
            "with the fast path on, the denied peer still exchanged data {:?} after the reload \
             (without it: {:?}); events {:?}",
            last[0],
            last[1],
            sides[0].0.kernel()
        );
    });
}

/// The usage record of an allocation whose data the kernel relayed counts exactly what was
/// sent (the kernel's per-slot counters merged with userspace's), and a deleted allocation
/// relays nothing more.
#[test]
fn usage_records_count_kernel_relayed_traffic_exactly() {
    on_private_lo("fp-usage", || async {
        let server = Server::start(&Cfg::loopback("on"));
        for v6 in [false, true] {
            let mut c = client(&server, v6).await;
            let local = c.conn.local_addr();
            let relayed = allocate(&mut c, v6).await;
            let peer = UdpSocket::bind(SocketAddr::new(loopback(v6), 0))
                .await
                .unwrap();
            bind(&mut c, CHANNEL, peer.local_addr().unwrap()).await;
            settle(&mut c).await;
            let e = server.kernel();
            let (mut to_peer, mut to_client) = ((0u64, 0u64), (0u64, 0u64));
            for i in 0..20usize {
                let data = vec![i as u8; 1 + i * 67];
                // Padding is not payload: it is neither relayed nor counted.
                let pad = vec![0xee; (4 - data.len() % 4) % 4];
                c.conn.send(&channel_data(CHANNEL, &data, &pad)).await;
                assert_eq!(recv(&peer).await.0, data);
                to_peer = (to_peer.0 + 1, to_peer.1 + data.len() as u64);
            }
            // 4 bytes and more go through the kernel, 1–3 through userspace: the record adds
            // both.
            for len in [4usize, 5, 100, 1000, 1400, 1, 2, 3] {
                let data = vec![0x42; len];
                peer.send_to(&data, relayed).await.unwrap();
                assert_eq!(c.conn.recv().await, channel_data(CHANNEL, &data, &[]));
                to_client = (to_client.0 + 1, to_client.1 + len as u64);
            }
            assert_eq!(
                server.kernel().since(&e),
                Events::of(&[("relayed_to_peer", 20), ("relayed_to_client", 5)]),
                "v6 {v6}"
            );

            c.request_ok(Method::REFRESH, |w| {
                w.add_u32(attr::LIFETIME, 0).unwrap();
            })
            .await;
            let record = server
                .wait_usage(|r| r.five_tuple.client.addr() == local)
                .await;
            assert_eq!(record.reason, EndReason::Deleted);
            let t = record.traffic;
            assert_eq!(
                (
                    t.packets_to_peer,
                    t.bytes_to_peer,
                    t.packets_to_client,
                    t.bytes_to_client
                ),
                (to_peer.0, to_peer.1, to_client.0, to_client.1),
                "usage of a kernel-relayed allocation (v6 {v6})"
            );

            // Deleted: the maps no longer hold it.
            settle(&mut c).await;
            let e = server.kernel();
            exchange_refused(&mut c, CHANNEL, &peer, relayed, "deleted allocation").await;
            assert_eq!(
                server.kernel().since(&e),
                Events::default(),
                "after deletion"
            );
        }
    });
}

/// Bandwidth caps are enforced in userspace: under "auto" the fast path stays off (and the
/// cap holds); "on" with a cap is a configuration error that names the caps.
#[test]
fn bandwidth_caps_keep_the_fast_path_off_and_still_apply() {
    on_private_lo("fp-caps", || async {
        // Control: here "auto" does load it, so its absence below is the caps' doing.
        let uncapped = Server::start(&Cfg::loopback("auto"));
        assert!(
            uncapped.events().is_some(),
            "auto without caps must load here"
        );
        drop(uncapped);
        let total =
            Server::start(&Cfg::loopback("auto").with_limits("max_total_bitrate = \"1Gbps\""));
        assert_eq!(total.events(), None, "max_total_bitrate with auto");
        drop(total);

        let server = Server::start(
            &Cfg::loopback("auto")
                .with_limits("max_allocation_bitrate = \"80kbps\"\nallocation_burst = \"2KiB\""),
        );
        assert_eq!(server.events(), None, "max_allocation_bitrate with auto");
        let mut c = client(&server, false).await;
        allocate(&mut c, false).await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        bind(&mut c, CHANNEL, peer.local_addr().unwrap()).await;
        let packet = channel_data(CHANNEL, &[0xab; 1000], &[]);
        for _ in 0..100 {
            c.conn.send(&packet).await;
        }
        let mut delivered = 0;
        while recv_within(&peer, SILENCE).await.is_some() {
            delivered += 1;
            assert!(delivered <= 100);
        }
        // 2 KiB of burst is two packets; 10 kB/s refills one more every 100 ms.
        assert!(
            (1..=6).contains(&delivered),
            "{delivered} of 100 packets reached the peer"
        );
    });

    for cap in [
        "max_allocation_bitrate = \"2Mbps\"",
        "max_total_bitrate = \"1Gbps\"",
    ] {
        let text = Cfg::loopback("on").with_limits(cap).toml();
        let err = Config::from_toml(&text, std::path::Path::new("/"))
            .err()
            .unwrap_or_else(|| panic!("fast_path = \"on\" with {cap} was accepted"))
            .to_string();
        for needle in [
            "relay.fast_path",
            "limits.max_allocation_bitrate",
            "limits.max_total_bitrate",
        ] {
            assert!(err.contains(needle), "{cap}: no {needle} in {err}");
        }
    }
}

/// Channels between two allocations of one server, each bound to the other's relayed
/// address: data flows both ways with the fast path on, and another channel of the same
/// allocation keeps going through the kernel. Two policies:
///
/// - the relay address opened deliberately (a loopback range in `allow`): such channels are
///   not live-gated, so the kernel relays the client → relay hop, and its output, delivered
///   to the other relay's socket past the program, goes on through userspace;
/// - the relay address only inside a broad `allow` entry: the channels are live-gated (valid
///   while a relay socket holds the port, which the program cannot see), so they stay in
///   userspace entirely.
#[test]
fn relay_to_relay_on_one_server_works_with_the_fast_path_on() {
    // The second relay address and a peer that is opened deliberately, on the private lo.
    let addresses = ["10.99.0.1/32", "10.99.0.2/32"];
    on_private_lo_with("fp-r2r", &addresses, || async {
        let deliberate = Cfg::loopback("on");
        relay_to_relay(&deliberate, "127.0.0.1", true).await;
        let broad = Cfg {
            relay: "10.99.0.1".into(),
            relay_v6: None,
            allow: vec!["10.99.0.0/24".into(), "10.99.0.2/32".into()],
            ..Cfg::loopback("on")
        };
        relay_to_relay(&broad, "10.99.0.2", false).await;
    });
}

/// Runs the relay-to-relay exchange on a server configured by `cfg`, with an outside peer
/// on `outside_ip`; `mirrored`: whether the relay-to-relay channels are in the kernel.
async fn relay_to_relay(cfg: &Cfg, outside_ip: &str, mirrored: bool) {
    let server = Server::start(cfg);
    let mut a = client(&server, false).await;
    let mut b = client(&server, false).await;
    let relay_a = allocate(&mut a, false).await;
    let relay_b = allocate(&mut b, false).await;
    let outside = UdpSocket::bind((outside_ip, 0)).await.unwrap();
    bind(&mut a, 0x4000, relay_b).await;
    bind(&mut b, 0x4001, relay_a).await;
    bind(&mut a, 0x4002, outside.local_addr().unwrap()).await;
    settle(&mut a).await;
    settle(&mut b).await;

    let e = server.kernel();
    // No empty payload: relay B would get an empty datagram from relay A, which userspace
    // drops as it does every empty peer datagram (with the fast path off too).
    let sizes = [1usize, 2, 3, 4, 5, 100, 1400];
    for (i, len) in sizes.into_iter().enumerate() {
        let data = vec![i as u8 + 1; len];
        // Every other message padded to a multiple of 4 (RFC 8656 §12.5), which the program
        // strips: other trailing bytes would leave the hop to userspace.
        let pad = vec![0x11; if i % 2 == 1 { (4 - len % 4) % 4 } else { 0 }];
        a.conn.send(&channel_data(0x4000, &data, &pad)).await;
        let got = b.conn.recv().await;
        assert_eq!(
            got,
            channel_data(0x4001, &data, &[]),
            "a → b ({})",
            cfg.relay
        );
        b.conn.send(&channel_data(0x4001, &data, &pad)).await;
        let got = a.conn.recv().await;
        assert_eq!(
            got,
            channel_data(0x4000, &data, &[]),
            "b → a ({})",
            cfg.relay
        );
    }
    let kernel_hops = if mirrored { 2 * sizes.len() as u64 } else { 0 };
    assert_eq!(
        server.kernel().since(&e),
        Events::of(&[("relayed_to_peer", kernel_hops)]),
        "relay-to-relay ({})",
        cfg.relay
    );

    // The other channel of a still goes through the kernel.
    let e = server.kernel();
    exchange(&mut a, 0x4002, &outside, relay_a, b"outside").await;
    assert_eq!(
        server.kernel().since(&e),
        one_each_way(),
        "a's outside channel"
    );
}
