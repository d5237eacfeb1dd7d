//! Allocate (RFC 8656 §7.2), address families (RFC 6156, RFC 8656 §7.2 dual stack), EVEN-PORT
//! reservations (§14.6, §14.9) and quotas (486, 508).

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::{RelayRequest, ReservationId, Settings};
use crate::proto::{Method, attr};

use super::harness::{
    Attr, Harness, RELAY_V4, RELAY_V6, even_port, family, lifetime, settings, transport, udp,
};

#[test]
fn allocation_success_has_relayed_address_default_lifetime_and_mapped_address() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
    assert_eq!(resp.relayed(), SocketAddr::new(RELAY_V4, 50000));
    assert_eq!(resp.u32(attr::LIFETIME), Some(600));
    assert_eq!(resp.xor(attr::XOR_MAPPED_ADDRESS), Some(c.ft.client.addr()));
    assert_eq!(h.relays.requests, vec![RelayRequest::Any { ip: RELAY_V4 }]);
    assert_eq!((h.server.allocation_count(), h.shared.total()), (1, 1));
}

#[test]
fn requested_lifetime_is_capped_at_the_maximum_and_raised_to_the_default() {
    let mut h = Harness::new();
    for (asked, granted) in [(7200, 3600), (1200, 1200), (60, 600), (1, 600)] {
        let mut c = h.client("alice");
        let resp = h
            .request(&mut c, Method::ALLOCATE, &[udp(), lifetime(asked)])
            .ok();
        assert_eq!(resp.u32(attr::LIFETIME), Some(granted), "asked {asked}");
    }
}

#[test]
fn second_allocate_on_the_same_five_tuple_is_answered_437() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.send(&mut c, Method::ALLOCATE, &[udp()]).err(437);
    assert_eq!(h.relays.requests.len(), 1);
}

#[test]
fn retransmitted_allocate_gets_the_byte_identical_answer() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.challenge(&mut c);
    let pkt = c.build(Method::ALLOCATE, &[udp()]);
    let first = h.exchange(c.ft, &pkt).ok();
    h.advance(Duration::from_secs(2));
    assert_eq!(h.exchange(c.ft, &pkt), first);
    assert_eq!(h.relays.requests.len(), 1);
    assert_eq!(h.server.counters().allocations_created, 1);
}

#[test]
fn requested_transport_other_than_udp_or_tcp_is_answered_442() {
    let mut h = Harness::new();
    let mut c = h.tcp_client("alice");
    // SCTP (132): RFC 8656 §7.2 step 3 and RFC 6062 §5.1 know UDP and TCP only.
    h.request(&mut c, Method::ALLOCATE, &[transport(132)])
        .err(442);
    assert_eq!((h.server.allocation_count(), h.shared.total()), (0, 0));
}

#[test]
fn missing_requested_transport_is_answered_400() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.request(&mut c, Method::ALLOCATE, &[lifetime(600)])
        .err(400);
    assert!(h.relays.requests.is_empty());
}

#[test]
fn ipv6_allocation_is_relayed_from_the_ipv6_relay_address() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[family(attr::REQUESTED_ADDRESS_FAMILY, 0x02)]);
    assert_eq!(relayed, SocketAddr::new(RELAY_V6, 50000));
    assert_eq!(h.relays.requests, vec![RelayRequest::Any { ip: RELAY_V6 }]);
}

#[test]
fn ipv6_allocation_without_an_ipv6_relay_is_answered_440() {
    let mut h = Harness::with_settings(Settings {
        relay_v6: None,
        ..settings()
    });
    let mut c = h.client("alice");
    let attrs = [udp(), family(attr::REQUESTED_ADDRESS_FAMILY, 0x02)];
    h.request(&mut c, Method::ALLOCATE, &attrs).err(440);
    assert_eq!(h.shared.total(), 0);
}

#[test]
fn dual_stack_allocation_gets_two_relayed_addresses() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let attrs = [udp(), family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02)];
    let resp = h.request(&mut c, Method::ALLOCATE, &attrs).ok();
    let relayed = resp.xors(attr::XOR_RELAYED_ADDRESS);
    assert_eq!(
        relayed,
        vec![
            SocketAddr::new(RELAY_V4, 50000),
            SocketAddr::new(RELAY_V6, 50002)
        ]
    );
    assert!(resp.get(attr::ADDRESS_ERROR_CODE).is_none());
    h.refresh(&mut c, 0).ok();
    assert_eq!(h.relays.closed.len(), 2);
}

#[test]
fn dual_stack_allocation_without_ipv6_gets_ipv4_and_address_error_code() {
    let mut h = Harness::with_settings(Settings {
        relay_v6: None,
        ..settings()
    });
    let mut c = h.client("alice");
    let attrs = [udp(), family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02)];
    let resp = h.request(&mut c, Method::ALLOCATE, &attrs).ok();
    assert_eq!(
        resp.xors(attr::XOR_RELAYED_ADDRESS),
        vec![SocketAddr::new(RELAY_V4, 50000)]
    );
    // RFC 8656 §18.11: family 0x02, then the 440 as class and number.
    let error = resp.get(attr::ADDRESS_ERROR_CODE).unwrap();
    assert_eq!(error[..4], [0x02, 0, 4, 40]);
}

#[test]
fn requested_and_additional_address_family_together_are_answered_400() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let attrs = [
        udp(),
        family(attr::REQUESTED_ADDRESS_FAMILY, 0x01),
        family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02),
    ];
    h.request(&mut c, Method::ALLOCATE, &attrs).err(400);
    assert!(h.relays.requests.is_empty());
}

/// Allocates with EVEN-PORT R=1; returns the reservation token.
fn reserve(h: &mut Harness) -> Vec<u8> {
    let mut c = h.client("alice");
    let resp = h
        .request(&mut c, Method::ALLOCATE, &[udp(), even_port(true)])
        .ok();
    assert_eq!(resp.relayed(), SocketAddr::new(RELAY_V4, 50000));
    assert_eq!(
        h.relays.requests,
        vec![RelayRequest::Even {
            ip: RELAY_V4,
            reserve_next: true
        }]
    );
    let token = resp.get(attr::RESERVATION_TOKEN).unwrap();
    assert_eq!(token.len(), 8);
    token
}

#[test]
fn even_port_reservation_token_gives_a_later_allocation_the_reserved_relay() {
    let mut h = Harness::new();
    let token = reserve(&mut h);
    // The RTCP allocation of the same user, from another 5-tuple.
    let mut rtcp = h.client("alice");
    let relayed = h.allocate(&mut rtcp, &[Attr::Raw(attr::RESERVATION_TOKEN, token)]);
    assert_eq!(relayed, SocketAddr::new(RELAY_V4, 50001));
    // The reservation's quota slot passed to the allocation: two slots, not three.
    assert_eq!(h.shared.total(), 2);
    // The fake numbers reservations like relays: the Even open above was number 1.
    assert_eq!(
        h.relays.requests[1],
        RelayRequest::Reserved(ReservationId(1))
    );
    h.advance(Duration::from_secs(31));
    h.tick();
    assert!(
        h.relays.released.is_empty(),
        "a claimed reservation is not released"
    );
}

#[test]
fn another_users_reservation_token_is_refused_and_stays_for_its_owner() {
    let mut h = Harness::new();
    let token = reserve(&mut h);
    let mut bob = h.client("bob");
    let attrs = [udp(), Attr::Raw(attr::RESERVATION_TOKEN, token.clone())];
    let resp = h.request(&mut bob, Method::ALLOCATE, &attrs);
    resp.err(508);
    // Same answer as an unknown token: nothing tells bob the token exists.
    assert_eq!(resp.reason(), "unknown or expired RESERVATION-TOKEN");
    assert_eq!(h.shared.total(), 2, "bob holds no slot");
    let mut rtcp = h.client("alice");
    let relayed = h.allocate(&mut rtcp, &[Attr::Raw(attr::RESERVATION_TOKEN, token)]);
    assert_eq!(relayed, SocketAddr::new(RELAY_V4, 50001));
}

#[test]
fn a_reserved_port_counts_against_the_users_allocation_quota() {
    let mut h = Harness::with_settings(Settings {
        max_allocations_per_user: 2,
        ..settings()
    });
    reserve(&mut h);
    let mut third = h.client("alice");
    h.request(&mut third, Method::ALLOCATE, &[udp()]).err(486);
    // The unclaimed reservation lapses and gives its slot back.
    h.advance(Duration::from_secs(30));
    h.tick();
    assert_eq!(h.shared.total(), 1);
    h.allocate(&mut third, &[]);
}

#[test]
fn reserving_with_one_slot_left_is_answered_486_and_takes_nothing() {
    let mut h = Harness::with_settings(Settings {
        max_allocations_per_user: 1,
        ..settings()
    });
    let mut c = h.client("alice");
    h.request(&mut c, Method::ALLOCATE, &[udp(), even_port(true)])
        .err(486);
    assert_eq!(h.shared.total(), 0);
    assert!(h.relays.requests.is_empty());
}

#[test]
fn reservation_tokens_are_not_the_generator_that_data_indication_ids_come_from() {
    // The harness seeds the worker with 42. Data indication transaction ids are outputs of
    // splitmix64 from that seed and are seen by every client; the old tokens were the very
    // next outputs, so one observed id predicted them.
    let mut h = Harness::new();
    let mut state = 42;
    let stream: Vec<Vec<u8>> = (0..16)
        .map(|_| {
            crate::core::server::next_random(&mut state)
                .to_be_bytes()
                .to_vec()
        })
        .collect();
    let token = reserve(&mut h);
    assert!(!stream.contains(&token));
}

#[test]
fn reservation_token_with_even_port_is_answered_400() {
    let mut h = Harness::new();
    let token = reserve(&mut h);
    let mut other = h.client("alice");
    let attrs = [
        udp(),
        Attr::Raw(attr::RESERVATION_TOKEN, token),
        even_port(false),
    ];
    h.request(&mut other, Method::ALLOCATE, &attrs).err(400);
}

#[test]
fn unknown_reservation_token_is_answered_508() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let attrs = [udp(), Attr::Raw(attr::RESERVATION_TOKEN, vec![1; 8])];
    h.request(&mut c, Method::ALLOCATE, &attrs).err(508);
    assert_eq!(h.shared.total(), 0);
}

#[test]
fn unclaimed_reservation_is_released_after_30_seconds() {
    let mut h = Harness::new();
    let token = reserve(&mut h);
    h.advance(Duration::from_secs(29));
    h.tick();
    assert!(h.relays.released.is_empty());
    h.advance(Duration::from_secs(1));
    h.tick();
    assert_eq!(h.relays.released.len(), 1);
    let mut late = h.client("alice");
    h.request(
        &mut late,
        Method::ALLOCATE,
        &[udp(), Attr::Raw(attr::RESERVATION_TOKEN, token)],
    )
    .err(508);
}

#[test]
fn a_reservation_past_its_expiry_cannot_be_claimed_before_its_timer_runs() {
    let mut h = Harness::new();
    let token = reserve(&mut h);
    // No tick: the timer that would remove the reservation has not run (it runs on the worker
    // that made it, which may be busy or another worker).
    h.advance(Duration::from_secs(30));
    let mut late = h.client("alice");
    let resp = h.request(
        &mut late,
        Method::ALLOCATE,
        &[udp(), Attr::Raw(attr::RESERVATION_TOKEN, token)],
    );
    resp.err(508);
    assert_eq!(resp.reason(), "unknown or expired RESERVATION-TOKEN");
    // The timer still gives the port and the quota slot back.
    h.tick();
    assert_eq!(h.relays.released.len(), 1);
    assert_eq!(
        h.shared.total(),
        1,
        "only the first allocation holds a slot"
    );
}

#[test]
fn port_exhaustion_is_answered_508_and_frees_the_quota_slot() {
    let mut h = Harness::with_settings(Settings {
        max_allocations_per_user: 1,
        ..settings()
    });
    h.relays.ports.clear();
    let mut c = h.client("alice");
    h.request(&mut c, Method::ALLOCATE, &[udp()]).err(508);
    assert_eq!((h.server.allocation_count(), h.shared.total()), (0, 0));
    h.relays.ports.push_back(50100);
    assert_eq!(h.allocate(&mut c, &[]), SocketAddr::new(RELAY_V4, 50100));
}

#[test]
fn per_user_quota_is_answered_486_until_an_allocation_is_freed() {
    let mut h = Harness::with_settings(Settings {
        max_allocations_per_user: 1,
        ..settings()
    });
    let mut first = h.client("alice");
    h.allocate(&mut first, &[]);
    let mut second = h.client("alice");
    h.request(&mut second, Method::ALLOCATE, &[udp()]).err(486);
    let mut bob = h.client("bob");
    h.allocate(&mut bob, &[]);
    h.refresh(&mut first, 0).ok();
    h.allocate(&mut second, &[]);
}

#[test]
fn total_quota_is_answered_508_until_an_allocation_is_freed() {
    let mut h = Harness::with_settings(Settings {
        max_allocations: 1,
        ..settings()
    });
    let mut alice = h.client("alice");
    h.allocate(&mut alice, &[]);
    let mut bob = h.client("bob");
    // RFC 8656 §19: 486 is the user's own quota; a full server is Insufficient Capacity.
    h.request(&mut bob, Method::ALLOCATE, &[udp()]).err(508);
    h.refresh(&mut alice, 0).ok();
    assert_eq!(h.shared.total(), 0);
    h.allocate(&mut bob, &[]);
}
