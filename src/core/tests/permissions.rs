//! CreatePermission (RFC 8656 §9) and the family check (RFC 6156 §5.2: 443).

use std::time::Duration;

use crate::core::{DropReason, Handled, PeerHandled, Settings};
use crate::proto::Method;

use super::harness::{Harness, channel, peer, sa, settings};

#[test]
fn create_permission_with_several_peers_installs_them_all() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let peers = [sa("8.8.8.8:53"), sa("1.1.1.1:443"), sa("9.9.9.9:5000")];
    h.permit(&mut c, &peers).ok();
    for p in peers {
        h.delivered(relayed, p, b"hi");
        // A permission covers the IP, whatever the port (RFC 8656 §9).
        h.delivered(relayed, sa(&format!("{}:1", p.ip())), b"hi");
    }
    assert_eq!(h.server.counters().packets_to_client, 6);
}

#[test]
fn create_permission_without_a_peer_is_answered_400() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.request(&mut c, Method::CREATE_PERMISSION, &[]).err(400);
}

#[test]
fn permission_expires_after_300_seconds() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:53");
    h.permit(&mut c, &[p]).ok();
    h.advance(Duration::from_secs(299));
    h.delivered(relayed, p, b"before");
    // Header 20 + XOR-PEER-ADDRESS 12 + DATA header 4: the payload starts at 36.
    assert_eq!(
        h.send_indication(c.ft, p, b"out").0,
        h.forward(relayed, p, 36..39)
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.peer_sends(relayed, p, b"after").0,
        PeerHandled::Drop(DropReason::NoPermission)
    );
    let (handled, _) = h.send_indication(c.ft, p, b"out");
    assert_eq!(handled, Handled::Drop(DropReason::NoPermission));
}

#[test]
fn peer_data_without_a_permission_is_dropped_and_counted() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    h.permit(&mut c, &[sa("8.8.8.8:53")]).ok();
    let (handled, _) = h.peer_sends(relayed, sa("8.8.4.4:53"), b"uninvited");
    assert_eq!(handled, PeerHandled::Drop(DropReason::NoPermission));
    assert_eq!(h.server.counters().dropped_no_permission, 1);
    assert_eq!(h.server.counters().packets_to_client, 0);
}

#[test]
fn ipv6_peer_on_an_ipv4_allocation_is_answered_443() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    let v6 = sa("[2606:4700::1111]:443");
    h.permit(&mut c, &[v6]).err(443);
    h.request(&mut c, Method::CHANNEL_BIND, &[channel(0x4000), peer(v6)])
        .err(443);
}

#[test]
fn create_permission_refused_for_the_cap_installs_none_of_its_peers() {
    let mut h = Harness::with_settings(Settings {
        max_permissions: 2,
        ..settings()
    });
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    h.permit(&mut c, &[sa("8.8.8.8:53")]).ok();
    h.permit(&mut c, &[sa("1.1.1.1:53"), sa("9.9.9.9:53")])
        .err(508);
    let (handled, _) = h.peer_sends(relayed, sa("1.1.1.1:53"), b"x");
    assert_eq!(handled, PeerHandled::Drop(DropReason::NoPermission));
    // Refreshing existing permissions never hits the cap.
    h.permit(&mut c, &[sa("8.8.8.8:53"), sa("1.1.1.1:53")]).ok();
}
