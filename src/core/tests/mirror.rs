//! The kernel fast path's copy of the flat tables (`core::mirror`): every change the core makes
//! reaches it as an op, nothing else does, and only what the kernel can relay exactly as
//! userspace would is mirrored.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::core::keys::{AddrKey, Tick};
use crate::core::{MirrorOp, MirroredChannel, Traffic, Transport};

use super::harness::{Harness, LISTENER, family, lifetime, sa};
use super::revocation::denying;
use crate::proto::attr;

fn drained(h: &mut Harness) -> Vec<MirrorOp> {
    let mut ops = Vec::new();
    h.server.drain_mirror(&mut ops);
    ops
}

fn channels(ops: &[MirrorOp]) -> Vec<MirrorOp> {
    ops.iter()
        .filter(|op| !matches!(op, MirrorOp::Slot { .. }))
        .copied()
        .collect()
}

fn set(ops: &[MirrorOp]) -> MirroredChannel {
    match channels(ops).as_slice() {
        [MirrorOp::SetChannel(c)] => *c,
        other => panic!("expected one SetChannel, got {other:?}"),
    }
}

fn mirrored() -> Harness {
    let mut h = Harness::new();
    h.server.enable_mirror(1024);
    h
}

#[test]
fn without_the_mirror_nothing_is_recorded() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:1000")).ok();
    assert!(drained(&mut h).is_empty());
}

#[test]
fn a_bound_channel_is_mirrored_with_both_directions_keys_and_its_expiries() {
    let mut h = mirrored();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[lifetime(3600)]);
    let ops = drained(&mut h);
    let slot = match ops.as_slice() {
        [MirrorOp::Slot { index, expires, .. }] => {
            assert!(expires.0 >= Duration::from_secs(3600).as_nanos() as u64);
            *index
        }
        other => panic!("expected the allocation's slot, got {other:?}"),
    };
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4000, p).ok();
    let ch = set(&drained(&mut h));
    assert_eq!(ch.client, AddrKey::new(c.ft.client.addr()));
    assert_eq!(ch.server, AddrKey::new(LISTENER));
    assert_eq!(ch.channel, 0x4000);
    assert_eq!(ch.relay.addr(), relayed, "the relay's bound address");
    assert_eq!(ch.peer, AddrKey::new(p));
    assert_eq!(ch.slot.index, slot);
    // RFC 8656 §12: the channel lasts 10 minutes, its permission 5 (a ChannelBind installs
    // both).
    let epoch = h.server.tick_epoch().unwrap();
    let tick = |secs| Tick::since(epoch, h.now().mono + Duration::from_secs(secs));
    assert_eq!(ch.expires, tick(600));
    assert_eq!(ch.permission_expires, tick(300));
    // Nothing changed, nothing to say.
    assert!(drained(&mut h).is_empty());
}

#[test]
fn refreshes_and_lapses_reach_the_mirror_and_deletion_removes_every_entry() {
    let mut h = mirrored();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[lifetime(3600)]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4000, p).ok();
    let first = set(&drained(&mut h));

    // CreatePermission refreshes the permission the channel's entries carry.
    h.advance(Duration::from_secs(100));
    h.permit(&mut c, &[sa("8.8.8.8:1")]).ok();
    let refreshed = set(&drained(&mut h));
    assert!(refreshed.permission_expires > first.permission_expires);
    assert_eq!(refreshed.expires, first.expires);

    // Refresh moves the allocation's expiry: a slot op, no channel op.
    h.refresh(&mut c, 1200).ok();
    let ops = drained(&mut h);
    assert!(matches!(ops.as_slice(), [MirrorOp::Slot { expires, .. }] if expires.0 > 0));

    // Deleting the allocation removes the channel and frees the slot with a new generation,
    // so an entry the kernel still held could never match it.
    h.refresh(&mut c, 0).ok();
    let ops = drained(&mut h);
    assert!(ops.contains(&MirrorOp::RemoveChannel(refreshed)));
    let freed = ops.iter().find_map(|op| match op {
        MirrorOp::Slot {
            generation,
            expires,
            ..
        } => Some((*generation, *expires)),
        _ => None,
    });
    assert_eq!(
        freed,
        Some((refreshed.slot.generation.wrapping_add(1), Tick(0)))
    );
}

#[test]
fn a_policy_reload_that_refuses_the_peer_removes_the_channel_from_the_kernel() {
    let mut h = mirrored();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:53")).ok();
    let ch = set(&drained(&mut h));
    h.server.set_settings(denying(&["8.8.8.0/24"]));
    assert_eq!(
        channels(&drained(&mut h)),
        vec![MirrorOp::RemoveChannel(ch)]
    );
}

#[test]
fn tcp_and_tls_clients_stay_on_the_userspace_path() {
    let mut h = mirrored();
    for transport in [Transport::Tcp, Transport::Tls] {
        let ft = h.five_tuple(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), transport);
        let mut c = Harness::user_on(ft, "alice");
        h.allocate(&mut c, &[]);
        h.bind(&mut c, 0x4000, sa("8.8.8.8:1000")).ok();
    }
    assert!(channels(&drained(&mut h)).is_empty());
}

#[test]
fn a_peer_of_the_other_family_stays_on_the_userspace_path() {
    // RFC 8656 §8 / RFC 6156: an IPv4 client may relay to IPv6 peers; the kernel would have
    // to change the IP version of the packet, so userspace does it.
    let mut h = mirrored();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02)]);
    let peer: SocketAddr = "[2001:4860::8888]:53".parse().unwrap();
    h.bind(&mut c, 0x4000, peer).ok();
    assert!(channels(&drained(&mut h)).is_empty());
}

#[test]
fn slots_beyond_the_kernels_share_stay_on_the_userspace_path() {
    let mut h = Harness::new();
    h.server.enable_mirror(1);
    let (mut a, mut b) = (h.client("alice"), h.client("bob"));
    h.allocate(&mut a, &[]);
    h.allocate(&mut b, &[]);
    h.bind(&mut a, 0x4000, sa("8.8.8.8:1000")).ok();
    h.bind(&mut b, 0x4000, sa("8.8.8.8:1000")).ok();
    let ops = drained(&mut h);
    assert_eq!(channels(&ops).len(), 1, "{ops:?}");
    assert_eq!(
        ops.iter()
            .filter(|op| matches!(op, MirrorOp::Slot { .. }))
            .count(),
        1
    );
}

#[test]
fn an_ended_allocations_usage_record_waits_for_the_kernels_last_counts() {
    let mut h = mirrored();
    let mut c = h.client("alice");
    h.allocate(&mut c, &[]);
    h.bind(&mut c, 0x4000, sa("8.8.8.8:1000")).ok();
    let ch = set(&drained(&mut h));
    let kernel = |to_peer: u64, to_client: u64| Traffic {
        packets_to_peer: to_peer,
        bytes_to_peer: 10 * to_peer,
        packets_to_client: to_client,
        bytes_to_client: 10 * to_client,
    };
    // A periodic read while the allocation lives, then the last one after it ended.
    h.server.add_fast_path_traffic(ch.slot, kernel(2, 0));
    h.refresh(&mut c, 0).ok();
    assert!(
        h.usage().is_empty(),
        "held until the kernel's last counts are in"
    );
    drained(&mut h);
    h.server.add_fast_path_traffic(ch.slot, kernel(1, 3));
    h.server.release_usage();
    let records = h.usage();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].traffic, kernel(3, 3));
    assert_eq!(h.server.counters().packets_to_peer, 3);
}
