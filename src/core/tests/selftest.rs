//! Self-test credentials (`auth::selftest`): whoever opens the public self-test page gets one,
//! so an allocation made with it reaches only this server's own relays at live ports (the page
//! relays to itself), is capped in lifetime, bandwidth and number per source, and a REST
//! secret cannot mint one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{ReportId, SelftestKey};
use crate::core::live_ports::LivePorts;
use crate::core::{Bandwidth, DropReason, Handled, SelftestLimits, Settings, Transport};
use crate::proto::{Method, attr};

use super::harness::{
    Client, Harness, LISTENER, RELAY_V4, SECRET_NEW, UNIX_START, even_port, lifetime, policy, sa,
    settings, udp,
};

const KEY: [u8; 32] = [0x5e; 32];
/// A peer the configuration allows (`[peers] allow = ["127.0.0.0/8"]`): an echo service on
/// loopback that ordinary users may reach.
const LOOPBACK_ECHO: &str = "127.0.0.1:7000";

fn limits() -> SelftestLimits {
    SelftestLimits {
        max_lifetime: Duration::from_secs(120),
        max_allocations_per_ip: 2,
        max_allocations: 3,
        ipv6_prefix_length: 64,
        bandwidth: Bandwidth {
            bytes_per_sec: 1000,
            burst_bytes: 1500,
        },
    }
}

/// A server that takes self-test credentials, allows loopback peers to ordinary users, and
/// knows which relay ports are live (`live`; the test opens and closes them as IO would).
fn harness(live: &Arc<LivePorts>) -> Harness {
    let settings = Settings {
        policy: policy(&["127.0.0.0/8"]).with_live_ports(Arc::clone(live)),
        selftest: Some(limits()),
        ..settings()
    };
    let store = Harness::store(super::harness::REALM, true).with_selftest(SelftestKey::new(KEY));
    Harness::with_store(settings, store)
}

/// A client from `ip` with a fresh self-test credential valid for 5 minutes.
fn selftest_client(h: &mut Harness, ip: [u8; 4]) -> Client {
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::from(ip)), Transport::Udp);
    let id = ReportId::from_random([ip[3], 1, 2, 3, 4]);
    let (username, password) = SelftestKey::new(KEY).mint(&id, UNIX_START + 300);
    Client::new(ft, &username, &password)
}

/// Allocates and marks the relay port live, as IO does once the socket is bound.
fn allocate_live(h: &mut Harness, live: &LivePorts, c: &mut Client) -> SocketAddr {
    let relayed = h.allocate(c, &[]);
    live.open(false, relayed.port());
    relayed
}

#[test]
fn a_selftest_credential_reaches_no_peer_but_a_live_relay_of_this_server() {
    let live = Arc::new(LivePorts::default());
    let mut h = harness(&live);
    let mut a = selftest_client(&mut h, [198, 51, 100, 1]);
    let mut b = selftest_client(&mut h, [198, 51, 100, 2]);
    let relay_a = allocate_live(&mut h, &live, &mut a);
    let relay_b = allocate_live(&mut h, &live, &mut b);

    // Every other kind of peer is refused, by permission, channel and Send alike.
    let elsewhere = [
        sa(LOOPBACK_ECHO),                // allowed by the configuration for ordinary users
        sa("10.0.0.7:7000"),              // a private address
        LISTENER,                         // the server's own listener
        sa("8.8.8.8:53"),                 // a public address
        sa("[2001:4860::8888]:53"),       // a public IPv6 address
        SocketAddr::new(RELAY_V4, 3478),  // our relay IP at a port without a relay socket
        SocketAddr::new(RELAY_V4, 50998), // ... and one in the relay range
    ];
    for (i, peer) in elsewhere.into_iter().enumerate() {
        let number = 0x4000 + i as u16;
        h.bind(&mut a, number, peer).err(403);
        assert_eq!(
            h.send_indication(a.ft, peer, b"leak").0,
            Handled::Drop(DropReason::Policy),
            "Send to {peer}"
        );
        assert_eq!(
            h.channel_data(a.ft, number, b"leak").0,
            Handled::Drop(DropReason::NoChannel),
            "ChannelData to {peer}"
        );
        if peer.ip() != RELAY_V4 {
            h.permit(&mut a, &[peer]).err(403);
        }
    }
    let refused = h.bind(&mut a, 0x4100, sa(LOOPBACK_ECHO));
    assert_eq!(
        refused.reason(),
        "self-test credentials reach only this server's relay addresses"
    );

    // Relay to relay works, both ways.
    h.bind(&mut a, 0x4200, relay_b).ok();
    h.permit(&mut b, &[relay_a]).ok();
    assert_eq!(
        h.channel_data(a.ft, 0x4200, b"ping").0,
        h.forward(relay_a, relay_b, 4..8)
    );
    let (sent, pkt) = h.send_indication(b.ft, relay_a, b"pong");
    let Handled::Forward { payload, .. } = &sent else {
        panic!("expected a forward, got {sent:?}");
    };
    assert_eq!(sent, h.forward(relay_b, relay_a, payload.clone()));
    assert_eq!(&pkt[payload.clone()], b"pong");

    // Once B's relay socket closes, its port may belong to anyone: A's channel stops.
    live.close(false, relay_b.port());
    assert_eq!(
        h.channel_data(a.ft, 0x4200, b"ping").0,
        Handled::Drop(DropReason::Policy)
    );

    // An ordinary user of the same server still reaches what the configuration allows.
    let mut alice = h.client("alice");
    let relay_alice = allocate_live(&mut h, &live, &mut alice);
    h.bind(&mut alice, 0x4000, sa(LOOPBACK_ECHO)).ok();
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"x").0,
        h.forward(relay_alice, sa(LOOPBACK_ECHO), 4..5)
    );
}

#[test]
fn selftest_allocations_are_limited_per_source_and_in_total() {
    let live = Arc::new(LivePorts::default());
    let mut h = harness(&live);
    let mut first = selftest_client(&mut h, [198, 51, 100, 1]);
    let mut second = selftest_client(&mut h, [198, 51, 100, 1]);
    let mut third = selftest_client(&mut h, [198, 51, 100, 1]);
    h.allocate(&mut first, &[]);
    h.allocate(&mut second, &[]);
    // Two per source: the third from the same address is over its quota (486).
    h.request(&mut third, Method::ALLOCATE, &[udp()]).err(486);
    let mut other = selftest_client(&mut h, [198, 51, 100, 2]);
    h.allocate(&mut other, &[]);
    // Three in total: a fourth source gets 508.
    let mut fourth = selftest_client(&mut h, [198, 51, 100, 3]);
    h.request(&mut fourth, Method::ALLOCATE, &[udp()]).err(508);
    // Ordinary users are not counted against the self-test total.
    let mut alice = h.client("alice");
    h.allocate(&mut alice, &[]);
    // A freed slot can be taken again.
    h.refresh(&mut first, 0).ok();
    h.allocate(&mut fourth, &[]);
    h.refresh(&mut second, 0).ok();
    h.refresh(&mut other, 0).ok();
    h.refresh(&mut fourth, 0).ok();
    assert_eq!(h.shared.class_count("#selftest"), 0);
    assert_eq!(h.shared.class_count("#selftest@198.51.100.1"), 0);
}

#[test]
fn a_selftest_allocation_lives_at_most_the_selftest_lifetime() {
    let live = Arc::new(LivePorts::default());
    let mut h = harness(&live);
    let mut c = selftest_client(&mut h, [198, 51, 100, 1]);
    let resp = h
        .request(&mut c, Method::ALLOCATE, &[udp(), lifetime(3600)])
        .ok();
    assert_eq!(resp.u32(attr::LIFETIME), Some(120));
    let refreshed = h.refresh(&mut c, 3600).ok();
    assert_eq!(refreshed.u32(attr::LIFETIME), Some(120));
    h.advance(Duration::from_secs(121));
    h.tick();
    assert_eq!(h.server.allocation_count(), 0);
    assert_eq!(h.shared.class_count("#selftest"), 0);
}

#[test]
fn a_selftest_allocation_is_held_to_its_bandwidth_cap() {
    let live = Arc::new(LivePorts::default());
    let mut h = harness(&live);
    let mut a = selftest_client(&mut h, [198, 51, 100, 1]);
    let mut b = selftest_client(&mut h, [198, 51, 100, 2]);
    let relay_a = allocate_live(&mut h, &live, &mut a);
    let relay_b = allocate_live(&mut h, &live, &mut b);
    h.bind(&mut a, 0x4000, relay_b).ok();
    let big = vec![0u8; 1400];
    assert_eq!(
        h.channel_data(a.ft, 0x4000, &big).0,
        h.forward(relay_a, relay_b, 4..1404)
    );
    assert_eq!(
        h.channel_data(a.ft, 0x4000, &big).0,
        Handled::Drop(DropReason::Bandwidth)
    );
    h.advance(Duration::from_secs(2));
    assert!(matches!(
        h.channel_data(a.ft, 0x4000, &big).0,
        Handled::Forward { .. }
    ));
}

#[test]
fn selftest_credentials_cannot_reserve_relay_ports() {
    let live = Arc::new(LivePorts::default());
    let mut h = harness(&live);
    let mut c = selftest_client(&mut h, [198, 51, 100, 1]);
    h.request(&mut c, Method::ALLOCATE, &[udp(), even_port(true)])
        .err(403);
    assert_eq!(h.shared.total(), 0);
    assert_eq!(h.shared.class_count("#selftest"), 0);
}

#[test]
fn selftest_credentials_are_refused_while_the_selftest_page_is_off() {
    let live = Arc::new(LivePorts::default());
    let store = Harness::store(super::harness::REALM, true).with_selftest(SelftestKey::new(KEY));
    let mut h = Harness::with_store(
        Settings {
            policy: policy(&[]).with_live_ports(live),
            ..settings()
        },
        store,
    );
    let mut c = selftest_client(&mut h, [198, 51, 100, 1]);
    h.request(&mut c, Method::ALLOCATE, &[udp()]).err(403);
    assert_eq!(h.shared.total(), 0);
}

#[test]
fn a_rest_secret_cannot_mint_a_selftest_credential_and_an_expired_one_is_refused() {
    let live = Arc::new(LivePorts::default());
    let mut h = harness(&live);
    let username = format!("{}:#selftest-ABCDEFGH", UNIX_START + 300);
    let forged = crate::auth::rest_password(SECRET_NEW, &username);
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), Transport::Udp);
    let mut c = Client::new(ft, &username, &forged);
    h.request(&mut c, Method::ALLOCATE, &[udp()]).err(401);

    let mut late = selftest_client(&mut h, [198, 51, 100, 2]);
    h.advance(Duration::from_secs(301));
    h.request(&mut late, Method::ALLOCATE, &[udp()]).err(401);
}

#[test]
fn a_reload_revokes_selftest_channels_to_addresses_no_longer_our_relays() {
    use crate::core::cidr::Cidr;
    use crate::core::policy::PeerPolicy;
    let live = Arc::new(LivePorts::default());
    let mut h = harness(&live);
    let mut a = selftest_client(&mut h, [198, 51, 100, 1]);
    let mut b = selftest_client(&mut h, [198, 51, 100, 2]);
    allocate_live(&mut h, &live, &mut a);
    let relay_b = allocate_live(&mut h, &live, &mut b);
    h.bind(&mut a, 0x4000, relay_b).ok();
    // The new configuration allows everything to ordinary users, and RELAY_V4 is no longer
    // one of our relay addresses: a self-test channel to it must go.
    let everything: Cidr = "0.0.0.0/0".parse().unwrap();
    let policy = PeerPolicy::new(
        vec![everything],
        vec![],
        vec![super::harness::RELAY_V6],
        vec![LISTENER],
    )
    .with_relay_ports(49152..=65535)
    .with_live_ports(Arc::clone(&live));
    h.server.set_settings(Settings {
        policy,
        selftest: Some(limits()),
        ..settings()
    });
    assert_eq!(
        h.channel_data(a.ft, 0x4000, b"x").0,
        Handled::Drop(DropReason::NoChannel)
    );
    h.bind(&mut a, 0x4001, sa("8.8.8.8:53")).err(403);
}

#[test]
fn a_selftest_credential_cannot_make_a_tcp_relay() {
    // RFC 6062 Connect reaches TCP peers, which the own-relays scope does not cover.
    let settings = Settings {
        tcp_relay: true,
        selftest: Some(limits()),
        ..settings()
    };
    let store = Harness::store(super::harness::REALM, true).with_selftest(SelftestKey::new(KEY));
    let mut h = Harness::with_store(settings, store);
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9)), Transport::Tcp);
    let id = ReportId::from_random([9, 1, 2, 3, 4]);
    let (username, password) = SelftestKey::new(KEY).mint(&id, UNIX_START + 300);
    let mut c = Client::new(ft, &username, &password);
    let resp = h.request(&mut c, Method::ALLOCATE, &[super::harness::tcp()]);
    resp.err(403);
    assert!(resp.reason().contains("TCP"), "{}", resp.reason());
}
