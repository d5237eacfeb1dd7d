//! RFC 6062 peer data connections: peers connecting in (ConnectionAttempt), ConnectionBind on
//! a new client connection, relayed bytes in counters and usage, bandwidth caps as pauses, the
//! 30 s bind window, and every connection closing with its allocation.

use std::net::SocketAddr;
use std::time::Duration;

use crate::core::{
    Bandwidth, ConnectionId, Direction, DropReason, Settings, TcpRelayed, Transport,
};
use crate::proto::{Class, Method, attr};

use super::harness::{Client, Harness, connection_id, sa, settings};

const PEER: &str = "8.8.8.8:443";

/// A TCP client of alice with a TCP allocation and a permission for [`PEER`]'s IP.
fn allocated(h: &mut Harness) -> (Client, SocketAddr) {
    let mut c = h.tcp_client("alice");
    let relayed = h.allocate_tcp(&mut c);
    h.permit(&mut c, &[sa(PEER)]).ok();
    (c, relayed)
}

/// A connection made by Connect and confirmed.
fn connected(h: &mut Harness, c: &mut Client) -> ConnectionId {
    assert!(h.connect(c, sa(PEER)).is_none());
    h.confirm_connect(Ok(())).0
}

#[test]
fn a_permitted_peer_connecting_in_is_announced_with_a_connection_attempt() {
    let mut h = Harness::new();
    let (c, relayed) = allocated(&mut h);
    let from = sa("8.8.8.8:40000");
    let (connection, to, indication) = h.peer_connects(relayed, from).unwrap();
    assert_eq!(to, c.ft, "on the control connection");
    assert_eq!(indication.class(), Class::Indication);
    assert_eq!(indication.msg().method(), Method::CONNECTION_ATTEMPT);
    assert_eq!(indication.xor(attr::XOR_PEER_ADDRESS), Some(from));
    assert_eq!(indication.u32(attr::CONNECTION_ID), Some(connection.0));
}

#[test]
fn a_peer_without_a_permission_is_refused_and_the_client_hears_nothing() {
    let mut h = Harness::new();
    let (_, relayed) = allocated(&mut h);
    assert_eq!(
        h.peer_connects(relayed, sa("8.8.4.4:40000")),
        Err(DropReason::NoPermission)
    );
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn peers_beyond_the_per_allocation_cap_are_refused() {
    let mut h = Harness::with_settings(Settings {
        max_tcp_connections: 2,
        ..settings()
    });
    let (_, relayed) = allocated(&mut h);
    h.peer_connects(relayed, sa("8.8.8.8:1")).unwrap();
    h.peer_connects(relayed, sa("8.8.8.8:2")).unwrap();
    assert_eq!(
        h.peer_connects(relayed, sa("8.8.8.8:3")),
        Err(DropReason::Capacity)
    );
}

#[test]
fn connection_bind_on_a_new_connection_splices_it_with_the_peer() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    let mut data = h.tcp_client("alice");
    let resp = h.connection_bind(&mut data, connection).ok();
    resp.msg().verify_integrity(&data.key()).unwrap();
    assert_eq!(h.relays.splices, vec![(data.ft, connection)]);
    // A second bind of the same connection finds it bound already.
    let mut again = h.tcp_client("alice");
    h.connection_bind(&mut again, connection).err(400);
}

#[test]
fn connection_bind_binds_a_peer_that_connected_in_too() {
    let mut h = Harness::new();
    let (_, relayed) = allocated(&mut h);
    let (connection, _, _) = h.peer_connects(relayed, sa("8.8.8.8:40000")).unwrap();
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, connection).ok();
    assert_eq!(h.relays.splices, vec![(data.ft, connection)]);
}

#[test]
fn connection_bind_naming_no_waiting_connection_is_answered_400() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, ConnectionId(connection.0 ^ 1))
        .err(400);
    // Missing CONNECTION-ID.
    h.request(&mut data, Method::CONNECTION_BIND, &[]).err(400);
    assert!(h.relays.splices.is_empty());
}

#[test]
fn connection_bind_with_another_users_credentials_is_answered_400() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    let mut bob = h.tcp_client("bob");
    let resp = h.connection_bind(&mut bob, connection);
    resp.err(400);
    // The same answer as an unknown CONNECTION-ID: nothing to probe.
    let mut unknown = h.tcp_client("bob");
    let other = h.connection_bind(&mut unknown, ConnectionId(connection.0 ^ 1));
    assert_eq!(resp.reason(), other.reason());
    assert!(h.relays.splices.is_empty());
}

#[test]
fn connection_bind_on_the_control_connection_or_over_udp_is_answered_400() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    h.connection_bind(&mut c, connection).err(400);
    let mut udp = h.client("alice");
    h.connection_bind(&mut udp, connection).err(400);
    // Still waiting: a proper data connection binds it.
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, connection).ok();
}

#[test]
fn an_unbound_peer_connection_is_closed_after_30_seconds() {
    let mut h = Harness::new();
    let (mut c, relayed) = allocated(&mut h);
    let connected = connected(&mut h, &mut c);
    let (arrived, _, _) = h.peer_connects(relayed, sa("8.8.8.8:40000")).unwrap();
    h.advance(Duration::from_secs(29));
    h.tick();
    assert!(h.relays.closed_connections.is_empty());
    h.advance(Duration::from_secs(1));
    h.tick();
    let mut closed = h.relays.closed_connections.clone();
    closed.sort();
    let mut expected = vec![connected, arrived];
    expected.sort();
    assert_eq!(closed, expected, "RFC 6062 §5.3: 30 s to bind");
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, connected).err(400);
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn a_bound_connection_outlives_the_bind_window() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, connection).ok();
    h.advance(Duration::from_secs(60));
    h.tick();
    assert!(h.relays.closed_connections.is_empty());
    let now = h.now();
    let relayed = h
        .server
        .handle_tcp_relayed(now, connection, Direction::ToPeer, 10);
    assert_eq!(relayed, TcpRelayed::Continue);
}

#[test]
fn relayed_bytes_are_counted_with_each_read_as_a_packet() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, connection).ok();
    let now = h.now();
    for (direction, bytes) in [
        (Direction::ToPeer, 1000),
        (Direction::ToPeer, 500),
        (Direction::ToClient, 16384),
    ] {
        let verdict = h
            .server
            .handle_tcp_relayed(now, connection, direction, bytes);
        assert_eq!(verdict, TcpRelayed::Continue);
    }
    let counters = h.server.counters();
    assert_eq!(
        (counters.packets_to_peer, counters.bytes_to_peer),
        (2, 1500)
    );
    assert_eq!(
        (counters.packets_to_client, counters.bytes_to_client),
        (1, 16384)
    );
    h.refresh(&mut c, 0).ok();
    let usage = h.usage();
    assert_eq!(usage[0].traffic.bytes_to_peer, 1500);
    assert_eq!(usage[0].traffic.packets_to_peer, 2);
    assert_eq!(usage[0].traffic.bytes_to_client, 16384);
    assert_eq!(usage[0].five_tuple.transport, Transport::Tcp);
}

#[test]
fn a_bandwidth_cap_pauses_the_stream_instead_of_dropping() {
    let mut h = Harness::with_settings(Settings {
        allocation_bandwidth: Some(Bandwidth {
            bytes_per_sec: 1000,
            burst_bytes: 1000,
        }),
        ..settings()
    });
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, connection).ok();
    let now = h.now();
    let first = h
        .server
        .handle_tcp_relayed(now, connection, Direction::ToPeer, 1000);
    assert_eq!(first, TcpRelayed::Continue);
    let second = h
        .server
        .handle_tcp_relayed(now, connection, Direction::ToClient, 500);
    assert_eq!(second, TcpRelayed::Wait(Duration::from_millis(500)));
    // Every byte read is counted, paused or not.
    assert_eq!(h.server.counters().bytes_to_client, 500);
}

#[test]
fn deleting_the_allocation_closes_every_connection() {
    let mut h = Harness::new();
    let (mut c, relayed) = allocated(&mut h);
    let bound = connected(&mut h, &mut c);
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, bound).ok();
    let (waiting, _, _) = h.peer_connects(relayed, sa("8.8.8.8:40000")).unwrap();
    h.refresh(&mut c, 0).ok();
    let mut closed = h.relays.closed_connections.clone();
    closed.sort();
    let mut expected = vec![bound, waiting];
    expected.sort();
    assert_eq!(closed, expected);
    assert_eq!(h.server.peer_connection_count(), 0);
    let now = h.now();
    assert_eq!(
        h.server
            .handle_tcp_relayed(now, bound, Direction::ToPeer, 1),
        TcpRelayed::Closed
    );
}

#[test]
fn the_allocation_expiring_or_its_control_connection_closing_closes_its_connections() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let first = connected(&mut h, &mut c);
    h.advance(Duration::from_secs(601));
    h.tick();
    assert_eq!(h.relays.closed_connections, vec![first]);
    let (mut c, _) = allocated(&mut h);
    let second = connected(&mut h, &mut c);
    h.connection_closed(c.ft);
    assert_eq!(h.relays.closed_connections, vec![first, second]);
    assert_eq!(h.server.peer_connection_count(), 0);
}

#[test]
fn refresh_keeps_the_connections_of_a_tcp_allocation() {
    let mut h = Harness::new();
    let (mut c, _) = allocated(&mut h);
    let connection = connected(&mut h, &mut c);
    let mut data = h.tcp_client("alice");
    h.connection_bind(&mut data, connection).ok();
    h.advance(Duration::from_secs(500));
    h.refresh(&mut c, 600).ok();
    h.advance(Duration::from_secs(500));
    h.tick();
    assert!(h.relays.closed_connections.is_empty());
    let _ = connection_id(connection);
}
