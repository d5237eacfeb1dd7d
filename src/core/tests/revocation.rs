//! A tightened peer policy applies to what already exists (DESIGN.md §4): a reload or a new
//! host address revokes the permissions and channels it now refuses.

use std::net::IpAddr;

use crate::core::cidr::Cidr;
use crate::core::policy::PeerPolicy;
use crate::core::{DropReason, Handled, PeerHandled, Settings};

use super::harness::{Harness, LISTENER, RELAY_V4, RELAY_V6, sa, settings};

pub(super) fn denying(deny: &[&str]) -> Settings {
    let deny: Vec<Cidr> = deny.iter().map(|c| c.parse().unwrap()).collect();
    Settings {
        policy: PeerPolicy::new(vec![], deny, vec![RELAY_V4, RELAY_V6], vec![LISTENER])
            .with_relay_ports(49152..=65535),
        ..settings()
    }
}

#[test]
fn reload_that_denies_a_peer_revokes_its_permission_and_channel_both_ways() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let (x, y) = (sa("8.8.8.8:53"), sa("1.1.1.1:53"));
    h.bind(&mut c, 0x4000, x).ok();
    h.permit(&mut c, &[y]).ok();
    assert!(matches!(
        h.channel_data(c.ft, 0x4000, b"a").0,
        Handled::Forward { .. }
    ));

    h.server.set_settings(denying(&["8.8.8.0/24"]));

    // Client → X: the channel is gone, and a Send indication is refused.
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"a").0,
        Handled::Drop(DropReason::NoChannel)
    );
    assert_eq!(
        h.send_indication(c.ft, x, b"a").0,
        Handled::Drop(DropReason::Policy)
    );
    // X → client: no permission any more.
    assert_eq!(
        h.peer_sends(relayed, x, b"b").0,
        PeerHandled::Drop(DropReason::NoPermission)
    );
    // Y was not touched.
    assert!(matches!(
        h.peer_sends(relayed, y, b"c").0,
        PeerHandled::ToClient { .. }
    ));
    // The channel number is free again; binding it to X is refused by the new policy.
    h.bind(&mut c, 0x4000, x).err(403);
    h.bind(&mut c, 0x4000, y).ok();
}

#[test]
fn a_new_host_address_revokes_permissions_to_it() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let x = sa("9.9.9.9:53");
    h.bind(&mut c, 0x4000, x).ok();
    let host: IpAddr = "9.9.9.9".parse().unwrap();
    assert_eq!(h.server.set_host_addresses(vec![host]), 2);
    assert_eq!(
        h.peer_sends(relayed, x, b"b").0,
        PeerHandled::Drop(DropReason::NoPermission)
    );
    assert_eq!(
        h.channel_data(c.ft, 0x4000, b"a").0,
        Handled::Drop(DropReason::NoChannel)
    );
    // The same set again changes nothing.
    assert_eq!(h.server.set_host_addresses(vec![host]), 0);
}

#[test]
fn a_reload_that_could_not_read_the_host_addresses_keeps_the_known_ones() {
    let mut h = Harness::new();
    h.server
        .set_host_addresses(vec!["9.9.9.9".parse().unwrap()]);
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    // The IO layer builds the reloaded policy without host addresses when getifaddrs fails.
    h.server.set_settings(denying(&[]));
    h.bind(&mut c, 0x4000, sa("9.9.9.9:53")).err(403);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:53")).ok();
    // A reload that did read them replaces them.
    let mut fresh = denying(&[]);
    fresh.policy.set_host_ips(vec!["1.2.3.4".parse().unwrap()]);
    h.server.set_settings(fresh);
    h.bind(&mut c, 0x4001, sa("9.9.9.9:53")).ok();
    h.bind(&mut c, 0x4002, sa("1.2.3.4:53")).err(403);
}

#[test]
fn a_403_for_the_servers_private_bind_address_reads_like_any_private_address() {
    let mut h = Harness::with_settings(Settings {
        policy: PeerPolicy::new(vec![], vec![], vec![RELAY_V4], vec![LISTENER])
            .with_relay_ports(49152..=65535)
            .with_host_ips(vec!["10.1.2.3".parse().unwrap()]),
        ..settings()
    });
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    let ours = h.request(
        &mut c,
        crate::proto::Method::CHANNEL_BIND,
        &[
            super::harness::channel(0x4000),
            super::harness::peer(sa("10.1.2.3:22")),
        ],
    );
    ours.err(403);
    let theirs = h.request(
        &mut c,
        crate::proto::Method::CHANNEL_BIND,
        &[
            super::harness::channel(0x4000),
            super::harness::peer(sa("10.1.2.4:22")),
        ],
    );
    theirs.err(403);
    assert_eq!(ours.reason(), theirs.reason());
}

#[test]
fn hairpin_with_a_wildcard_relay_bind_never_sends_to_the_unspecified_address() {
    // Validation refuses this configuration now; the core must be safe with it anyway.
    let wildcard = IpAddr::from([0, 0, 0, 0]);
    let mut h = Harness::with_settings(Settings {
        relay_v4: Some(crate::core::RelayFamily {
            bind: wildcard,
            advertised: RELAY_V4,
        }),
        ..settings()
    });
    let (mut alice, mut bob) = (h.client("alice"), h.client("bob"));
    let a = h.allocate(&mut alice, &[]);
    let b = h.allocate(&mut bob, &[]);
    assert_eq!((a.ip(), b.ip()), (RELAY_V4, RELAY_V4));
    h.bind(&mut alice, 0x4000, b).ok();
    match h.channel_data(alice.ft, 0x4000, b"hi").0 {
        Handled::Forward { peer, .. } => assert!(!peer.0.ip().is_unspecified(), "{peer}"),
        Handled::Drop(_) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_channel_to_another_relay_stops_when_that_relay_socket_closes() {
    let live = std::sync::Arc::new(crate::core::live_ports::LivePorts::default());
    let mut h = Harness::with_settings(Settings {
        policy: super::harness::policy(&[]).with_live_ports(std::sync::Arc::clone(&live)),
        ..settings()
    });
    let (mut alice, mut bob) = (h.client("alice"), h.client("bob"));
    let a = h.allocate(&mut alice, &[]);
    let b = h.allocate(&mut bob, &[]);
    // The scripted relays do not mark ports; do what the IO layer does.
    live.open(false, a.port());
    live.open(false, b.port());
    h.bind(&mut alice, 0x4000, b).ok();
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"hi").0,
        h.forward(a, b, 4..6)
    );
    // Bob's allocation ends and its port may go to any local process.
    h.refresh(&mut bob, 0).ok();
    live.close(false, b.port());
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"hi").0,
        Handled::Drop(DropReason::Policy)
    );
}

#[test]
fn a_channel_to_our_relay_address_opened_by_a_single_address_entry_outlives_its_relay_socket() {
    let live = std::sync::Arc::new(crate::core::live_ports::LivePorts::default());
    let opened = |allow: &[&str]| Settings {
        policy: super::harness::policy(allow).with_live_ports(std::sync::Arc::clone(&live)),
        ..settings()
    };
    let mut h = Harness::with_settings(opened(&["192.0.2.10/32"]));
    let (mut alice, mut bob) = (h.client("alice"), h.client("bob"));
    let a = h.allocate(&mut alice, &[]);
    let b = h.allocate(&mut bob, &[]);
    h.bind(&mut alice, 0x4000, b).ok();
    // The operator named the address: the channel is not tied to bob's relay socket.
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"hi").0,
        h.forward(a, b, 4..6)
    );
    // A reload without that entry ties the channel to the socket again.
    live.open(false, b.port());
    h.server.set_settings(opened(&[]));
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"hi").0,
        h.forward(a, b, 4..6)
    );
    live.close(false, b.port());
    assert_eq!(
        h.channel_data(alice.ft, 0x4000, b"hi").0,
        Handled::Drop(DropReason::Policy)
    );
}

#[test]
fn reload_that_denies_a_peer_closes_its_tcp_relay_connections() {
    let mut h = Harness::new();
    let mut c = h.tcp_client("alice");
    let relayed = h.allocate_tcp(&mut c);
    let (x, y) = (sa("8.8.8.8:443"), sa("1.1.1.1:443"));
    h.permit(&mut c, &[x, y]).ok();
    assert!(h.connect(&mut c, x).is_none());
    let (to_x, _, _) = h.confirm_connect(Ok(()));
    let (from_x, _, _) = h.peer_connects(relayed, sa("8.8.8.8:40000")).unwrap();
    assert!(h.connect(&mut c, y).is_none());
    let (to_y, _, _) = h.confirm_connect(Ok(()));

    h.server.set_settings(denying(&["8.8.8.0/24"]));
    h.pump();

    let mut closed = h.relays.closed_connections.clone();
    closed.sort();
    let mut expected = vec![to_x, from_x];
    expected.sort();
    assert_eq!(closed, expected);
    assert_eq!(h.server.peer_connection_count(), 1, "{to_y:?} stays");
}
