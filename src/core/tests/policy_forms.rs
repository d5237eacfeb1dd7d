//! The peer policy at CreatePermission, ChannelBind and Send (RFC 8656 §21: 403), on IPv4,
//! IPv6 and dual-stack allocations, including IPv6 wrappers of private IPv4 addresses.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::core::policy::PeerPolicy;
use crate::core::{DropReason, Handled, RelayFamily, Settings};
use crate::proto::{Message, attr};

use super::harness::{Attr, Harness, LISTENER, RELAY_V4, family, policy, sa, settings};

/// Never valid peers under the built-in policy, whatever the allocation's family.
const REFUSED: &[&str] = &[
    "127.0.0.1",          // loopback
    "10.1.2.3",           // private
    "172.16.0.1",         // private
    "192.168.1.1",        // private
    "100.64.0.1",         // CGNAT
    "169.254.169.254",    // link-local, cloud metadata
    "224.0.0.1",          // multicast
    "0.0.0.0",            // unspecified
    "255.255.255.255",    // broadcast
    "192.0.2.1",          // documentation
    "198.51.100.1",       // documentation
    "203.0.113.1",        // documentation
    "::1",                // loopback
    "::",                 // unspecified
    "fd00::1",            // unique local
    "fd00:ec2::254",      // unique local, cloud metadata
    "fe80::1",            // link-local
    "ff02::1",            // multicast
    "2001:db8::1",        // documentation
    "::ffff:10.0.0.1",    // IPv4-mapped private
    "::10.0.0.1",         // IPv4-compatible private
    "2002:a00:1::1",      // 6to4 of 10.0.0.1
    "64:ff9b::a00:1",     // NAT64 of 10.0.0.1
    "64:ff9b::a9fe:a9fe", // NAT64 of 169.254.169.254
    "::ffff:127.0.0.1",   // IPv4-mapped loopback
];

fn v4() -> Vec<Attr> {
    vec![]
}
fn v6() -> Vec<Attr> {
    vec![family(attr::REQUESTED_ADDRESS_FAMILY, 0x02)]
}
fn dual() -> Vec<Attr> {
    vec![family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02)]
}

/// Every refused address, through every method, on an allocation made with `extra`.
fn assert_every_special_peer_is_refused(extra: &[Attr]) {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, extra);
    for (i, ip) in REFUSED.iter().enumerate() {
        let p = SocketAddr::new(ip.parse().unwrap(), 5000);
        assert_eq!(
            h.permit(&mut c, &[p]).code(),
            Some(403),
            "CreatePermission {p}"
        );
        assert_eq!(
            h.bind(&mut c, 0x4000 + i as u16, p).code(),
            Some(403),
            "ChannelBind {p}"
        );
        let (handled, _) = h.send_indication(c.ft, p, b"x");
        assert_eq!(handled, Handled::Drop(DropReason::Policy), "Send {p}");
    }
    assert_eq!(h.server.counters().dropped_policy, REFUSED.len() as u64);
    assert_eq!(h.server.counters().packets_to_peer, 0);
}

#[test]
fn special_peers_are_refused_403_on_an_ipv4_allocation() {
    assert_every_special_peer_is_refused(&v4());
}

#[test]
fn special_peers_are_refused_403_on_an_ipv6_allocation() {
    assert_every_special_peer_is_refused(&v6());
}

#[test]
fn special_peers_are_refused_403_on_a_dual_stack_allocation() {
    assert_every_special_peer_is_refused(&dual());
}

#[test]
fn public_peers_are_accepted_on_each_allocation_family() {
    let v4_peer = sa("8.8.8.8:53");
    let v6_peer = sa("[2606:4700::1111]:443");
    for (extra, peers) in [
        (v4(), vec![v4_peer]),
        (v6(), vec![v6_peer]),
        (dual(), vec![v4_peer, v6_peer]),
    ] {
        let mut h = Harness::new();
        let mut c = h.client("alice");
        h.allocate(&mut c, &extra);
        for (i, p) in peers.into_iter().enumerate() {
            h.permit(&mut c, &[p]).ok();
            h.bind(&mut c, 0x4000 + i as u16, p).ok();
            assert!(
                matches!(h.send_indication(c.ft, p, b"x").0, Handled::Forward { peer, .. } if peer.0 == p)
            );
        }
    }
}

#[test]
fn create_permission_with_one_refused_peer_installs_none() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    h.permit(&mut c, &[sa("8.8.8.8:53"), sa("10.0.0.1:53")])
        .err(403);
    assert!(matches!(
        h.peer_sends(relayed, sa("8.8.8.8:53"), b"x").0,
        crate::core::PeerHandled::Drop(_)
    ));
}

#[test]
fn allowed_loopback_works_but_the_servers_own_listener_is_refused() {
    let mut h = Harness::with_settings(Settings {
        policy: policy(&["127.0.0.0/8"]),
        ..settings()
    });
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let other_port = SocketAddr::new(LISTENER.ip(), LISTENER.port() + 1);
    h.permit(&mut c, &[LISTENER]).ok();
    h.bind(&mut c, 0x4000, LISTENER).err(403);
    h.bind(&mut c, 0x4000, sa("[::ffff:127.0.0.1]:3478"))
        .err(403);
    h.bind(&mut c, 0x4000, other_port).ok();
    assert_eq!(
        h.send_indication(c.ft, LISTENER, b"loop").0,
        Handled::Drop(DropReason::Policy)
    );
    assert_eq!(
        h.send_indication(c.ft, other_port, b"fine").0,
        h.forward(relayed, other_port, 36..40)
    );
    assert_eq!(
        h.delivered(relayed, other_port, b"back"),
        b"\x40\x00\x00\x04back"
    );
}

#[test]
fn the_servers_own_relay_address_is_a_valid_peer() {
    let mut h = Harness::new();
    let mut alice = h.client("alice");
    let mut bob = h.client("bob");
    let a = h.allocate(&mut alice, &[]);
    let b = h.allocate(&mut bob, &[]);
    assert_eq!((a.ip(), b.ip()), (RELAY_V4, RELAY_V4));
    h.bind(&mut alice, 0x4000, b).ok();
    h.permit(&mut bob, &[a]).ok();
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"hi").0,
        h.forward(a, b, 4..6)
    );
    // The IO layer delivers the datagram to bob's relay socket, from alice's.
    let delivered = h.delivered(b, a, b"hi");
    assert_eq!(
        delivered[..2],
        [0x00, 0x17],
        "a Data indication: bob has no channel"
    );
    assert_eq!(h.delivered(a, b, b"yo"), b"\x40\x00\x00\x02yo");
    // Our own IP outside the relay port range is still refused.
    h.bind(&mut alice, 0x4001, SocketAddr::new(RELAY_V4, 22))
        .err(403);
}

#[test]
fn ipv4_mapped_peer_is_relayed_as_its_plain_ipv4_address() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let plain = sa("8.8.8.8:53");
    h.bind(&mut c, 0x4000, sa("[::ffff:8.8.8.8]:53")).ok();
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        h.forward(relayed, plain, 4..5)
    );
    assert_eq!(h.delivered(relayed, plain, b"y"), b"\x40\x00\x00\x01y");
    h.bind(&mut c, 0x4000, plain).ok();
}

#[test]
fn relay_to_relay_behind_nat_goes_through_the_bound_addresses() {
    let bind = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
    let own = vec![bind, RELAY_V4];
    let nat = Settings {
        relay_v4: Some(RelayFamily {
            bind,
            advertised: RELAY_V4,
        }),
        policy: PeerPolicy::new(vec![], vec![], own, vec![LISTENER])
            .with_relay_ports(49152..=65535),
        ..settings()
    };
    let mut h = Harness::with_settings(nat);
    let (mut alice, mut bob) = (h.client("alice"), h.client("bob"));
    let a = h.allocate(&mut alice, &[]);
    let b = h.allocate(&mut bob, &[]);
    assert_eq!((a.ip(), b.ip()), (RELAY_V4, RELAY_V4));
    let (a_bound, b_bound) = (
        SocketAddr::new(bind, a.port()),
        SocketAddr::new(bind, b.port()),
    );
    h.bind(&mut alice, 0x4000, b).ok();
    h.permit(&mut bob, &[a]).ok();
    // Sent to the bound address: 1:1 NAT often does not hairpin.
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"hi").0,
        h.forward(a_bound, b_bound, 4..6)
    );
    // Bob sees it from alice's advertised address, which his permission names.
    let bytes = h.delivered(b_bound, a_bound, b"hi");
    let msg = Message::parse(&bytes).unwrap();
    assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(a)));
    // Bob's answer reaches alice on her channel.
    assert_eq!(h.delivered(a_bound, b_bound, b"yo"), b"\x40\x00\x00\x02yo");
}
