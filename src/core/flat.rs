//! The flat tables of one worker (DESIGN.md §1), shaped like kernel maps:
//!
//! - `channels`: (client 5-tuple, channel) → (relay, peer, expiry, permission expiry, slot);
//!   ChannelData from a client is one lookup here.
//! - `peers`: (relay, peer address) → (client 5-tuple, channel, expiries, slot); a peer's
//!   datagram on a bound channel is one lookup here.
//! - `permissions`: (relay, peer IP) → (client 5-tuple, expiry, slot); a peer's datagram
//!   without a live channel becomes a Data indication after a miss above and one lookup here.
//!
//! Keys and values are the plain structs of [`super::keys`]. The allocation table
//! (`super::table`) is their only writer: it keeps each allocation's own list of permissions
//! and channels (the control plane's view, bounded by the per-allocation limits) and mirrors
//! every change here, so the data plane never scans a list.
//!
//! The maps are keyed by addresses clients and peers choose, so each is seeded at random
//! (foldhash); entries exist only for authenticated, quota-bound allocations, so nobody can
//! fill them with colliding keys at will. They grow only on the control plane: the data plane
//! reads entries and never inserts, so it never allocates.

use std::collections::HashMap;

use super::keys::{
    ChannelEntry, ChannelKey, PeerEntry, PeerKey, PermissionEntry, PermissionKey, Slot, Tick,
};
use super::mirror::Mirror;
use super::quota::TokenBucket;
use super::stats::Traffic;

type Seeded = foldhash::fast::RandomState;

/// Room reserved up front, so the first allocations do not rehash one after another.
const INITIAL_ENTRIES: usize = 256;

/// One allocation's entry in the counters array: what every relayed packet updates.
#[derive(Clone, Debug, Default)]
pub(crate) struct SlotCounters {
    /// Bumped when the slot is reused, so a stale [`Slot`] finds nothing.
    pub generation: u32,
    /// The allocation's expiry (its `Instant` in ticks); 0 while the slot is free.
    pub expires: Tick,
    pub traffic: Traffic,
    /// The per-allocation bandwidth cap, if configured.
    pub bucket: Option<TokenBucket>,
}

/// The three maps.
#[derive(Debug)]
pub(crate) struct FlatTables {
    pub channels: HashMap<ChannelKey, ChannelEntry, Seeded>,
    pub peers: HashMap<PeerKey, PeerEntry, Seeded>,
    pub permissions: HashMap<PermissionKey, PermissionEntry, Seeded>,
    /// Dirty marks for the kernel fast path's copy, when there is one (`super::mirror`).
    pub mirror: Option<Mirror>,
}

impl Default for FlatTables {
    fn default() -> Self {
        Self {
            channels: HashMap::with_capacity_and_hasher(INITIAL_ENTRIES, Seeded::default()),
            peers: HashMap::with_capacity_and_hasher(INITIAL_ENTRIES, Seeded::default()),
            permissions: HashMap::with_capacity_and_hasher(INITIAL_ENTRIES, Seeded::default()),
            mirror: None,
        }
    }
}

impl FlatTables {
    /// Sets the permission expiry a channel's two entries carry.
    pub fn set_channel_permission(&mut self, channel: &ChannelKey, peer: &PeerKey, at: Tick) {
        if let Some(e) = self.channels.get_mut(channel) {
            e.permission_expires = at;
        }
        if let Some(e) = self.peers.get_mut(peer) {
            e.permission_expires = at;
        }
        self.changed(channel, peer);
    }

    /// Marks a channel's entries for the kernel mirror, if there is one.
    pub fn changed(&mut self, channel: &ChannelKey, peer: &PeerKey) {
        if let Some(mirror) = &mut self.mirror {
            mirror.channel_changed(*channel, *peer);
        }
    }

    /// Installs or refreshes both entries of a channel.
    pub fn set_channel(&mut self, keys: (ChannelKey, PeerKey), entries: (ChannelEntry, PeerEntry)) {
        self.channels.insert(keys.0, entries.0);
        self.peers.insert(keys.1, entries.1);
        self.changed(&keys.0, &keys.1);
    }

    /// Removes both entries of a channel.
    pub fn remove_channel(&mut self, channel: &ChannelKey, peer: &PeerKey) {
        self.channels.remove(channel);
        self.peers.remove(peer);
        self.changed(channel, peer);
    }

    /// The counters slot of a live entry, checked against the counters array.
    pub fn live(counters: &mut [SlotCounters], slot: Slot) -> Option<&mut SlotCounters> {
        counters
            .get_mut(slot.index as usize)
            .filter(|c| c.generation == slot.generation)
    }
}
