//! Relay sockets by request and confirm (DESIGN.md §3): an Allocate waits for IO to confirm
//! its relays; exhaustion, bind failures, slow binds, dual stack and EVEN-PORT pairs are
//! scripted on the harness's relay side.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::core::{
    Command, DropReason, FiveTuple, Handled, RelayError, RelayRequest, RelayToken, Settings,
    Transport,
};
use crate::proto::{Method, attr};

use super::harness::{Attr, Client, Harness, RELAY_V4, RELAY_V6, even_port, family, settings, udp};

/// A client that has its challenge: its next Allocate is authenticated.
fn challenged(h: &mut Harness, transport: Transport) -> Client {
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), transport);
    let mut c = Harness::user_on(ft, "alice");
    h.challenge(&mut c);
    c
}

/// The one answer to `ft` among `answers`, as a response.
#[track_caller]
fn answer_to(answers: Vec<(FiveTuple, Vec<u8>)>, ft: FiveTuple) -> super::harness::Resp {
    let mut to_ft: Vec<_> = answers.into_iter().filter(|(to, _)| *to == ft).collect();
    assert_eq!(to_ft.len(), 1, "exactly one answer to the client");
    super::harness::Resp(to_ft.remove(0).1)
}

#[test]
fn allocate_is_answered_only_after_the_relay_is_confirmed() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.delay = true;
    let pkt = c.build(Method::ALLOCATE, &[udp()]);
    let (handled, _) = h.input(c.ft, &pkt);
    assert_eq!(handled, Handled::Drop(DropReason::Pending));
    assert_eq!(h.relays.held.len(), 1);
    // Waiting: no allocation yet, but its quota slot is taken.
    assert_eq!((h.server.allocation_count(), h.shared.total()), (0, 1));
    assert!(!h.server.has_allocation(&c.ft));
    let resp = answer_to(h.confirm_held(), c.ft).ok();
    assert_eq!(resp.relayed(), SocketAddr::new(RELAY_V4, 50000));
    resp.msg().verify_integrity(&c.key()).unwrap();
    assert_eq!((h.server.allocation_count(), h.shared.total()), (1, 1));
}

#[test]
fn retransmitted_allocate_while_pending_opens_one_relay() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.delay = true;
    let pkt = c.build(Method::ALLOCATE, &[udp()]);
    for _ in 0..3 {
        let (handled, _) = h.input(c.ft, &pkt);
        assert_eq!(handled, Handled::Drop(DropReason::Pending));
    }
    assert_eq!(h.relays.held.len(), 1, "one relay requested");
    let first = answer_to(h.confirm_held(), c.ft).ok();
    assert_eq!(h.relays.requests.len(), 1);
    // After the answer, a retransmission gets the same bytes from the response cache.
    assert_eq!(h.exchange(c.ft, &pkt), first);
    assert_eq!(h.relays.requests.len(), 1);
    assert_eq!(h.server.counters().allocations_created, 1);
}

#[test]
fn another_allocate_on_a_pending_five_tuple_is_answered_437() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.delay = true;
    let pkt = c.build(Method::ALLOCATE, &[udp()]);
    h.input(c.ft, &pkt);
    // RFC 8656 §7.2: a new transaction on a 5-tuple that has (or is getting) an allocation.
    h.send(&mut c, Method::ALLOCATE, &[udp()]).err(437);
    assert_eq!(h.relays.held.len(), 1);
    answer_to(h.confirm_held(), c.ft).ok();
}

#[test]
fn pending_allocates_count_against_the_server_quota() {
    let mut h = Harness::with_settings(Settings {
        max_allocations: 1,
        ..settings()
    });
    let mut alice = challenged(&mut h, Transport::Udp);
    h.relays.delay = true;
    let pkt = alice.build(Method::ALLOCATE, &[udp()]);
    h.input(alice.ft, &pkt);
    // A flood cannot over-commit while binds are in flight.
    let mut bob = h.client("bob");
    h.request(&mut bob, Method::ALLOCATE, &[udp()]).err(508);
    assert_eq!(h.relays.held.len(), 1);
}

#[test]
fn exhausted_ports_answer_508_and_release_the_quota() {
    let mut h = Harness::with_settings(Settings {
        max_allocations_per_user: 1,
        ..settings()
    });
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.failures.push_back(RelayError::Exhausted);
    let resp = h.send(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(508);
    assert_eq!(resp.reason(), "no free relay port");
    // Signed like every answer to an authenticated request (RFC 8489 §9.2.4).
    resp.msg().verify_integrity(&c.key()).unwrap();
    assert_eq!((h.server.allocation_count(), h.shared.total()), (0, 0));
    assert!(h.relays.open.is_empty());
    // The slot is free again: the next Allocate of the same user succeeds.
    assert_eq!(h.allocate(&mut c, &[]), SocketAddr::new(RELAY_V4, 50000));
}

#[test]
fn bind_failure_answers_508_signed_and_releases_the_quota() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.failures.push_back(RelayError::Failed);
    let resp = h.send(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(508);
    assert_eq!(resp.reason(), "relay socket could not be opened");
    resp.msg().verify_integrity(&c.key()).unwrap();
    assert_eq!(h.shared.total(), 0);
    assert_eq!(h.server.counters().allocations_created, 0);
}

#[test]
fn relay_confirmed_after_the_client_left_is_closed() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Tcp);
    h.relays.delay = true;
    let pkt = c.build(Method::ALLOCATE, &[udp()]);
    h.input(c.ft, &pkt);
    h.connection_closed(c.ft);
    assert_eq!(
        h.shared.total(),
        0,
        "the quota goes back when the client leaves"
    );
    assert!(h.confirm_held().is_empty(), "nobody to answer");
    assert_eq!(h.relays.closed.len(), 1, "the fresh relay is closed again");
    assert!(h.relays.open.is_empty());
    assert_eq!(h.relays.strays, 0);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn a_confirmation_nobody_asked_for_closes_the_relay() {
    let mut h = Harness::new();
    let opened = h.relays.open(RelayRequest::Any { ip: RELAY_V4 }).unwrap();
    let now = h.now();
    let mut out = [0u8; 512];
    let answer = h
        .server
        .relay_opened(now, RelayToken(999), Ok(opened), &mut out);
    assert_eq!(answer, None);
    assert_eq!(
        h.server.next_command(),
        Some(Command::CloseRelay { relay: opened.id })
    );
}

#[test]
fn dual_stack_allocate_waits_for_both_relays_and_keeps_ipv4_when_ipv6_fails() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.delay = true;
    let pkt = c.build(
        Method::ALLOCATE,
        &[udp(), family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02)],
    );
    h.input(c.ft, &pkt);
    let held: Vec<_> = h.relays.held.drain(..).collect();
    let requests: Vec<RelayRequest> = held.iter().map(|(_, r)| *r).collect();
    assert_eq!(
        requests,
        vec![
            RelayRequest::Any { ip: RELAY_V4 },
            RelayRequest::Any { ip: RELAY_V6 }
        ],
        "one OpenRelay per family, both at once"
    );
    let now = h.now();
    let mut out = [0u8; 1024];
    let v4 = h.relays.open(held[0].1);
    assert_eq!(h.server.relay_opened(now, held[0].0, v4, &mut out), None);
    let answer = h
        .server
        .relay_opened(now, held[1].0, Err(RelayError::Exhausted), &mut out)
        .expect("answered once both came back");
    assert_eq!(answer.to, c.ft);
    let resp = super::harness::Resp(out[..answer.len].to_vec()).ok();
    assert_eq!(
        resp.xors(attr::XOR_RELAYED_ADDRESS),
        vec![SocketAddr::new(RELAY_V4, 50000)]
    );
    // RFC 8656 §18.11: family 0x02 and 508 as class and number.
    let error = resp.get(attr::ADDRESS_ERROR_CODE).unwrap();
    assert_eq!(error[..4], [0x02, 0, 5, 8]);
    assert_eq!(h.shared.total(), 1);
}

#[test]
fn dual_stack_allocate_whose_ipv4_relay_fails_is_answered_508_and_closes_the_ipv6_relay() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.failures.push_back(RelayError::Failed);
    let attrs = [udp(), family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02)];
    h.send(&mut c, Method::ALLOCATE, &attrs).err(508);
    assert_eq!(h.relays.requests.len(), 2);
    assert_eq!(h.relays.closed.len(), 1, "the IPv6 relay goes back");
    assert!(h.relays.open.is_empty());
    assert_eq!(h.shared.total(), 0);
}

#[test]
fn even_port_pair_is_confirmed_with_its_reservation_and_the_token_opens_the_held_port() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.delay = true;
    let pkt = c.build(Method::ALLOCATE, &[udp(), even_port(true)]);
    h.input(c.ft, &pkt);
    assert_eq!(
        h.shared.total(),
        2,
        "the held port's slot is taken while pending"
    );
    let resp = answer_to(h.confirm_held(), c.ft).ok();
    assert_eq!(resp.relayed(), SocketAddr::new(RELAY_V4, 50000));
    let token = resp.get(attr::RESERVATION_TOKEN).unwrap();
    let mut rtcp = h.client("alice");
    let relayed = h.allocate(&mut rtcp, &[Attr::Raw(attr::RESERVATION_TOKEN, token)]);
    assert_eq!(relayed, SocketAddr::new(RELAY_V4, 50001));
    assert!(matches!(h.relays.requests[1], RelayRequest::Reserved(_)));
    assert_eq!(h.shared.total(), 2);
}

#[test]
fn even_port_pair_confirmed_after_the_client_left_releases_both_ports() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Tls);
    h.relays.delay = true;
    let pkt = c.build(Method::ALLOCATE, &[udp(), even_port(true)]);
    h.input(c.ft, &pkt);
    h.connection_closed(c.ft);
    assert_eq!(h.shared.total(), 0);
    assert!(h.confirm_held().is_empty());
    assert_eq!((h.relays.closed.len(), h.relays.released.len()), (1, 1));
    assert!(h.relays.open.is_empty() && h.relays.reserved.is_empty());
    assert_eq!(h.relays.strays, 0);
}

#[test]
fn shutdown_while_an_allocate_waits_releases_its_quota_and_closes_the_late_relay() {
    let mut h = Harness::new();
    let mut c = challenged(&mut h, Transport::Udp);
    h.relays.delay = true;
    let pkt = c.build(Method::ALLOCATE, &[udp()]);
    h.input(c.ft, &pkt);
    let now = h.now();
    h.server.close_all(now);
    assert_eq!(h.shared.total(), 0);
    assert!(h.confirm_held().is_empty());
    assert!(h.relays.open.is_empty());
}

#[test]
fn dont_fragment_is_passed_to_the_relay_side() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[Attr::Raw(attr::DONT_FRAGMENT, vec![])]);
    assert_eq!(h.relays.dont_fragment.len(), 1);
}
