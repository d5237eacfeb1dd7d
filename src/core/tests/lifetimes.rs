//! Refresh (RFC 8656 §7.3), allocation expiry, usage records and TCP connection close (§3.1).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::core::{EndReason, Transport};
use crate::proto::{Class, Method, attr};

use super::harness::{Harness, family, lifetime, sa, settings, udp};

#[test]
fn refresh_grants_the_requested_lifetime_within_the_limits() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    assert_eq!(h.refresh(&mut c, 1200).ok().u32(attr::LIFETIME), Some(1200));
    assert_eq!(h.refresh(&mut c, 9999).ok().u32(attr::LIFETIME), Some(3600));
    let resp = h.request(&mut c, Method::REFRESH, &[]).ok();
    assert_eq!(resp.u32(attr::LIFETIME), Some(600));
}

#[test]
fn refresh_naming_a_family_the_allocation_lacks_is_answered_443() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    let v6 = [family(attr::REQUESTED_ADDRESS_FAMILY, 0x02)];
    h.request(&mut c, Method::REFRESH, &v6).err(443);
    let v4 = [family(attr::REQUESTED_ADDRESS_FAMILY, 0x01)];
    h.request(&mut c, Method::REFRESH, &v4).ok();
}

#[test]
fn refresh_keeps_the_allocation_alive_past_its_original_expiry() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.advance(Duration::from_secs(500));
    h.refresh(&mut c, 600).ok();
    h.advance(Duration::from_secs(200));
    h.tick();
    assert_eq!(h.server.allocation_count(), 1);
    h.permit(&mut c, &[sa("8.8.8.8:53")]).ok();
    h.advance(Duration::from_secs(400));
    h.tick();
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn refresh_with_lifetime_zero_deletes_the_allocation_at_once() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let id = h.relays.id_of(relayed).unwrap();
    assert_eq!(h.refresh(&mut c, 0).ok().u32(attr::LIFETIME), Some(0));
    assert_eq!(h.relays.closed, vec![id]);
    assert_eq!((h.server.allocation_count(), h.shared.total()), (0, 0));
    let usage = h.usage();
    assert_eq!(usage.len(), 1);
    assert_eq!(
        (usage[0].reason, usage[0].user.as_str()),
        (EndReason::Deleted, "alice")
    );
    assert_eq!(usage[0].relays, vec![crate::core::RelayAddr(relayed)]);
    assert!(usage[0].to_json().contains("\"end_reason\":\"deleted\""));
    h.permit(&mut c, &[sa("8.8.8.8:53")]).err(437);
    h.refresh(&mut c, 600).err(437);
}

#[test]
fn retransmitted_refresh_zero_gets_the_cached_success() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    let pkt = c.build(Method::REFRESH, &[lifetime(0)]);
    let first = h.exchange(c.ft, &pkt).ok();
    let again = h.exchange(c.ft, &pkt);
    assert_eq!(again, first);
    assert_eq!(again.class(), Class::Success);
    assert_eq!(h.usage().len(), 1);
}

#[test]
fn refresh_by_another_user_on_the_same_five_tuple_is_answered_441() {
    let mut h = Harness::new();
    let mut alice = h.client("alice");
    h.allocate(&mut alice, &[]);
    let mut bob = Harness::user_on(alice.ft, "bob");
    h.refresh(&mut bob, 600).err(441);
    h.refresh(&mut bob, 0).err(441);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn allocation_expires_after_its_lifetime() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let id = h.relays.id_of(relayed).unwrap();
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now().mono + Duration::from_secs(600))
    );
    h.advance(Duration::from_secs(599));
    h.tick();
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(Duration::from_secs(1));
    h.tick();
    assert_eq!((h.server.allocation_count(), h.shared.total()), (0, 0));
    assert_eq!(h.relays.closed, vec![id]);
    let usage = h.usage();
    assert_eq!(usage[0].reason, EndReason::Expired);
    assert_eq!(usage[0].ended_unix - usage[0].started_unix, 600);
    h.refresh(&mut c, 600).err(437);
}

#[test]
fn closing_a_tcp_connection_ends_its_allocation() {
    let mut h = Harness::new();
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
    let mut c = Harness::user_on(ft, "alice");
    let relayed = h.allocate(&mut c, &[]);
    let id = h.relays.id_of(relayed).unwrap();
    h.connection_closed(ft);
    assert_eq!((h.server.allocation_count(), h.shared.total()), (0, 0));
    assert_eq!(h.relays.closed, vec![id]);
    assert_eq!(h.usage()[0].reason, EndReason::ConnectionClosed);
}

/// The expiry a compact nonce carries: after cookie and features, unpadded base64 of a
/// 4-byte big-endian Unix time (then the MAC).
fn nonce_expiry(nonce: &[u8]) -> u64 {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&nonce[13..])
        .unwrap();
    u64::from(u32::from_be_bytes(payload[..4].try_into().unwrap()))
}

#[test]
fn a_reloaded_nonce_lifetime_applies_to_the_next_nonce_issued() {
    let mut h = Harness::new();
    let mut before = h.client("alice");
    h.challenge(&mut before);
    let now = h.now().unix_secs;
    assert_eq!(nonce_expiry(before.nonce.as_ref().unwrap()) - now, 600);

    let mut reloaded = settings();
    reloaded.lifetimes.nonce = Duration::from_secs(60);
    h.server.set_settings(reloaded);
    let mut after = h.client("alice");
    h.challenge(&mut after);
    assert_eq!(nonce_expiry(after.nonce.as_ref().unwrap()) - now, 60);
    h.advance(Duration::from_secs(61));
    h.send(&mut after, Method::ALLOCATE, &[udp()]).err(438);
}

#[test]
fn a_connection_has_an_allocation_only_after_an_authenticated_allocate_and_until_it_ends() {
    let mut h = Harness::new();
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
    let mut c = Harness::user_on(ft, "alice");
    h.send(&mut c, Method::BINDING, &[]).ok();
    h.challenge(&mut c);
    assert!(
        !h.server.has_allocation(&ft),
        "Binding and a 401 do not count"
    );
    h.allocate(&mut c, &[]);
    assert!(h.server.has_allocation(&ft));
    let other = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
    assert!(!h.server.has_allocation(&other));
    h.refresh(&mut c, 0).ok();
    assert!(!h.server.has_allocation(&ft));
}
