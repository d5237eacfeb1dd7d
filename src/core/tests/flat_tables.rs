//! The flat tables (DESIGN.md §1) against the per-allocation view: a permission's expiry
//! reaches the channel entries that carry it, entries go with their allocation, and one
//! allocation's entries never answer for another's.

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use crate::core::{ClientAddr, DropReason, Handled, PeerHandled, Transport};

use super::harness::{Harness, lifetime, sa};

#[test]
fn a_permission_lapsing_under_a_live_channel_stops_it_both_ways_until_refreshed() {
    // RFC 8656 §9 and §12: a channel (600 s) needs its permission (300 s) to carry data.
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[lifetime(3600)]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4000, p).ok();
    h.advance(Duration::from_secs(300));
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        Handled::Drop(DropReason::NoPermission)
    );
    assert_eq!(
        h.peer_sends(relayed, p, b"y").0,
        PeerHandled::Drop(DropReason::NoPermission)
    );
    h.permit(&mut c, &[sa("8.8.8.8:1")]).ok();
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"x").0,
        h.forward(relayed, p, 4..5)
    );
    assert_eq!(h.delivered(relayed, p, b"y"), b"\x40\x00\x00\x01y");
}

#[test]
fn an_ended_allocation_leaves_no_entry_for_the_next_one_in_its_slot() {
    let mut h = Harness::new();
    let mut alice = h.client("alice");
    h.allocate(&mut alice, &[]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut alice, 0x4000, p).ok();
    h.refresh(&mut alice, 0).ok();
    let mut bob = h.client("bob");
    let new = h.allocate(&mut bob, &[]);
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"x").0,
        Handled::Drop(DropReason::NoAllocation)
    );
    assert_eq!(
        h.channel_data(bob.ft, 0x4000, b"x").0,
        Handled::Drop(DropReason::NoChannel)
    );
    assert_eq!(
        h.peer_sends(new, p, b"y").0,
        PeerHandled::Drop(DropReason::NoPermission)
    );
}

#[test]
fn two_allocations_with_the_same_channel_to_the_same_peer_each_keep_their_own() {
    let mut h = Harness::new();
    let (mut alice, mut bob) = (h.client("alice"), h.client("bob"));
    let a = h.allocate(&mut alice, &[]);
    let b = h.allocate(&mut bob, &[]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut alice, 0x4000, p).ok();
    h.bind(&mut bob, 0x4000, p).ok();
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"x").0,
        h.forward(a, p, 4..5)
    );
    assert_eq!(
        h.channel_data(bob.ft, 0x4000, b"x").0,
        h.forward(b, p, 4..5)
    );
    for (relay, client) in [(a, alice.ft), (b, bob.ft)] {
        match h.peer_sends(relay, p, b"y").0 {
            PeerHandled::ToClient { client: to, .. } => assert_eq!(to, client),
            other => panic!("{other:?}"),
        }
    }
    let usage = {
        h.refresh(&mut alice, 0).ok();
        h.usage()
    };
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].traffic.packets_to_peer, 1);
    assert_eq!(usage[0].traffic.packets_to_client, 1);
    // Bob's entries outlive alice's.
    assert_eq!(
        h.channel_data(bob.ft, 0x4000, b"x").0,
        h.forward(b, p, 4..5)
    );
}

#[test]
fn a_peer_port_without_a_channel_gets_data_indications_beside_a_bound_one() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:1000")).ok();
    // Same IP, so the channel's permission covers it (RFC 8656 §9: port ignored).
    assert_eq!(
        h.delivered(relayed, sa("8.8.8.8:1001"), b"y")[..2],
        [0x00, 0x17]
    );
    assert_eq!(
        h.delivered(relayed, sa("8.8.8.8:1000"), b"y")[..2],
        [0x40, 0x00]
    );
}

#[test]
fn peer_data_reaches_a_link_local_client_with_its_interface_scope() {
    // The flat keys hold no IPv6 scope; a link-local client needs its interface's to be
    // reached (the old per-allocation lookup kept it).
    let mut h = Harness::new();
    let mut ft = h.five_tuple("fe80::1".parse().unwrap(), Transport::Udp);
    ft.client = ClientAddr(SocketAddr::V6(SocketAddrV6::new(
        "fe80::1".parse().unwrap(),
        40000,
        0,
        3,
    )));
    let mut c = Harness::user_on(ft, "alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4000, p).ok();
    let PeerHandled::ToClient { client, .. } = h.peer_sends(relayed, p, b"y").0 else {
        panic!("peer data not relayed");
    };
    assert_eq!(client, ft);
    let SocketAddr::V6(v6) = client.client.addr() else {
        panic!("not IPv6");
    };
    assert_eq!(v6.scope_id(), 3);
}
