//! RFC 6062 TCP allocations and Connect: who may make them, what they refuse (400, 403, 437,
//! 442, 443, 446, 447, 508), and the request/confirm pattern of Connect.

use std::net::SocketAddr;

use crate::core::{Command, ConnectError, Settings, Transport};
use crate::proto::{Method, attr};

use super::harness::{Client, Harness, RELAY_V4, channel, even_port, peer, sa, settings, tcp, udp};

const PEER: &str = "8.8.8.8:443";

/// A TCP client of alice with a TCP allocation and a permission for [`PEER`]'s IP.
fn allocated(h: &mut Harness) -> (Client, SocketAddr) {
    let mut c = h.tcp_client("alice");
    let relayed = h.allocate_tcp(&mut c);
    h.permit(&mut c, &[sa(PEER)]).ok();
    (c, relayed)
}

#[test]
fn tcp_allocate_over_tcp_opens_a_listening_relay() {
    let mut h = Harness::new();
    let mut c = h.tcp_client("alice");
    let relayed = h.allocate_tcp(&mut c);
    assert_eq!(relayed, SocketAddr::new(RELAY_V4, 50000));
    let id = h.relays.id_of(relayed).unwrap();
    assert_eq!(h.relays.tcp, vec![id], "a TCP relay, not a UDP socket");
    h.refresh(&mut c, 0).ok();
    let usage = h.usage();
    assert!(usage[0].tcp_relay);
    assert!(usage[0].to_json().contains("\"relay_transport\":\"tcp\""));
    assert_eq!(h.relays.closed, vec![id]);
}

#[test]
fn tcp_allocate_over_udp_is_answered_400() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.request(&mut c, Method::ALLOCATE, &[tcp()]);
    resp.err(400);
    assert!(h.relays.requests.is_empty());
}

#[test]
fn tcp_allocate_with_udp_only_attributes_is_answered_400() {
    let mut h = Harness::new();
    for extra in [
        even_port(false),
        super::harness::Attr::Raw(attr::DONT_FRAGMENT, vec![]),
        super::harness::Attr::Raw(attr::RESERVATION_TOKEN, vec![1; 8]),
    ] {
        let mut c = h.tcp_client("alice");
        h.request(&mut c, Method::ALLOCATE, &[tcp(), extra])
            .err(400);
    }
    assert_eq!(h.shared.total(), 0, "no quota taken");
}

#[test]
fn tcp_allocate_is_answered_442_when_tcp_relays_are_off() {
    let mut h = Harness::with_settings(Settings {
        tcp_relay: false,
        ..settings()
    });
    let mut c = h.tcp_client("alice");
    let resp = h.request(&mut c, Method::ALLOCATE, &[tcp()]);
    resp.err(442);
    assert_eq!(resp.reason(), "only UDP relaying is offered");
}

#[test]
fn tcp_allocations_count_against_the_user_quota() {
    let mut h = Harness::with_settings(Settings {
        max_allocations_per_user: 1,
        ..settings()
    });
    let mut c = h.tcp_client("alice");
    h.allocate_tcp(&mut c);
    let mut other = h.tcp_client("alice");
    h.request(&mut other, Method::ALLOCATE, &[tcp()]).err(486);
}

#[test]
fn connect_is_answered_with_a_connection_id_once_io_connected() {
    let mut h = Harness::new();
    let (mut c, relayed) = allocated(&mut h);
    assert!(h.connect(&mut c, sa(PEER)).is_none(), "waits for IO");
    let (_, relay, to) = h.relays.connects[0];
    assert_eq!(
        relay,
        h.relays.id_of(relayed).unwrap(),
        "from the relayed address"
    );
    assert_eq!(to.0, sa(PEER));
    let (connection, client, resp) = h.confirm_connect(Ok(()));
    assert_eq!(client, c.ft);
    let resp = resp.ok();
    resp.msg().verify_integrity(&c.key()).unwrap();
    assert_eq!(resp.u32(attr::CONNECTION_ID), Some(connection.0));
    assert_eq!(h.server.peer_connection_count(), 1);
}

#[test]
fn retransmitted_connect_while_connecting_asks_io_once_and_is_answered_once() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let pkt = c.build(Method::CONNECT, &[peer(sa(PEER))]);
    for _ in 0..3 {
        let (handled, _) = h.input(c.ft, &pkt);
        assert_eq!(
            handled,
            crate::core::Handled::Drop(crate::core::DropReason::Pending)
        );
    }
    assert_eq!(h.relays.connects.len(), 1);
    let (_, _, first) = h.confirm_connect(Ok(()));
    // The answer is remembered for later retransmissions (RFC 8489 §6.3.1).
    assert_eq!(h.exchange(c.ft, &pkt), first);
}

#[test]
fn failed_or_timed_out_connect_is_answered_447() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    for error in [ConnectError::Failed, ConnectError::Timeout] {
        assert!(h.connect(&mut c, sa(PEER)).is_none());
        let (_, _, resp) = h.confirm_connect(Err(error));
        resp.err(447);
        resp.msg().verify_integrity(&c.key()).unwrap();
    }
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn second_connect_to_the_same_peer_is_answered_446_while_the_first_lives() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    assert!(h.connect(&mut c, sa(PEER)).is_none());
    // While connecting (RFC 6062 §5.2: "currently processing").
    h.connect(&mut c, sa(PEER)).unwrap().err(446);
    let (connection, _, _) = h.confirm_connect(Ok(()));
    // While waiting for its ConnectionBind.
    h.connect(&mut c, sa(PEER)).unwrap().err(446);
    // Another port of the same IP is another peer.
    assert!(h.connect(&mut c, sa("8.8.8.8:444")).is_none());
    // Once the connection is gone, the peer can be connected again.
    let now = h.now();
    h.server.handle_peer_connection_closed(now, connection);
    assert!(h.connect(&mut c, sa(PEER)).is_none());
}

#[test]
fn connect_without_a_permission_is_answered_403() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let resp = h.connect(&mut c, sa("8.8.4.4:443")).unwrap();
    resp.err(403);
    assert!(h.relays.connects.is_empty());
}

#[test]
fn connect_to_a_peer_the_policy_refuses_is_answered_403() {
    let mut h = Harness::with_settings(Settings {
        policy: super::harness::policy(&["127.0.0.0/8"]),
        ..settings()
    });
    let (mut c, _) = allocated(&mut h);
    h.permit(&mut c, &[sa("127.0.0.1:1")]).ok();
    // Private and mapped forms of it (every address form is canonicalised first).
    for refused in ["10.0.0.1:80", "[::ffff:10.0.0.1]:80"] {
        let resp = h.connect(&mut c, sa(refused)).unwrap();
        resp.err(403);
    }
    // Port-aware: the server's own TCP listener is refused even where loopback is allowed.
    let resp = h.connect(&mut c, super::harness::LISTENER).unwrap();
    resp.err(403);
    assert!(h.connect(&mut c, sa("127.0.0.1:9999")).is_none());
}

#[test]
fn connect_without_an_allocation_is_answered_437() {
    let mut h = Harness::new();
    let mut c = h.tcp_client("alice");
    h.challenge(&mut c);
    h.connect(&mut c, sa(PEER)).unwrap().err(437);
}

#[test]
fn connect_on_a_udp_allocation_is_answered_400() {
    let mut h = Harness::new();
    let mut c = h.tcp_client("alice");
    h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
    h.permit(&mut c, &[sa(PEER)]).ok();
    h.connect(&mut c, sa(PEER)).unwrap().err(400);
}

#[test]
fn connect_to_a_peer_of_another_family_is_answered_443() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let resp = h.connect(&mut c, sa("[2606:4700::1111]:443")).unwrap();
    resp.err(443);
}

#[test]
fn connects_beyond_the_per_allocation_cap_are_answered_508() {
    let mut h = Harness::with_settings(Settings {
        max_tcp_connections: 2,
        ..settings()
    });
    let (mut c, _) = allocated(&mut h);
    assert!(h.connect(&mut c, sa("8.8.8.8:1")).is_none());
    assert!(h.connect(&mut c, sa("8.8.8.8:2")).is_none());
    h.connect(&mut c, sa("8.8.8.8:3")).unwrap().err(508);
}

#[test]
fn channel_bind_on_a_tcp_allocation_is_answered_400() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    h.request(
        &mut c,
        Method::CHANNEL_BIND,
        &[channel(0x4000), peer(sa(PEER))],
    )
    .err(400);
}

#[test]
fn send_indications_on_a_tcp_allocation_are_dropped() {
    let mut h = Harness::new();
    let (c, _) = allocated(&mut h);
    let (handled, _) = h.send_indication(c.ft, sa(PEER), b"hi");
    assert!(matches!(handled, crate::core::Handled::Drop(_)));
}

#[test]
fn a_connect_confirmed_after_its_allocation_ended_is_closed() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    assert!(h.connect(&mut c, sa(PEER)).is_none());
    let (connection, _, _) = h.relays.connects[0];
    h.refresh(&mut c, 0).ok();
    assert!(
        h.relays.closed_connections.contains(&connection),
        "the allocation's end closes its connecting connection"
    );
    let now = h.now();
    let mut out = [0u8; 512];
    assert!(
        h.server
            .peer_connected(now, connection, Ok(()), &mut out)
            .is_none()
    );
    assert_eq!(
        h.server.next_command(),
        Some(Command::CloseConnection { connection })
    );
}

#[test]
fn connection_ids_name_the_worker_that_made_them() {
    let mut h = Harness::new();
    h.server.set_worker(2, 3);
    let (mut c, _) = allocated(&mut h);
    for port in 1..=5 {
        assert!(
            h.connect(&mut c, SocketAddr::new(sa(PEER).ip(), port))
                .is_none()
        );
    }
    for (connection, _, _) in &h.relays.connects {
        assert_eq!(connection.worker(3), 2);
        assert_ne!(connection.0, 0);
    }
}

#[test]
fn tcp_allocations_are_never_mirrored_into_the_kernel() {
    let mut h = Harness::new();
    h.server.enable_mirror(1024);
    let (mut c, _) = allocated(&mut h);
    assert!(h.connect(&mut c, sa(PEER)).is_none());
    h.confirm_connect(Ok(()));
    let mut ops = Vec::new();
    h.server.drain_mirror(&mut ops);
    assert!(
        ops.iter()
            .all(|op| matches!(op, crate::core::MirrorOp::Slot { .. })),
        "no channel of a TCP allocation reaches the kernel: {ops:?}"
    );
    assert_eq!(c.ft.transport, Transport::Tcp);
}
