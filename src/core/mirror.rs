//! The kernel fast path's copy of the flat tables (issue 15): the core stays the single
//! source of truth, and this module says what changed, as plain values io writes into eBPF
//! maps. Off unless io turns it on ([`Server::enable_mirror`]); then every write to a
//! channel's flat entries and every change to an allocation's slot marks it dirty, and
//! [`Server::drain_mirror`] turns the dirty marks into [`MirrorOp`]s by comparing what the
//! flat tables hold now with what the kernel was last given.
//!
//! The server's side (draining, counting back) is `super::mirror_sync`.
//!
//! Only what the kernel can relay exactly as userspace would is mirrored: channels of UDP
//! clients on a listener with a specific address, whose peer has the client's address family,
//! that are not gated on our own relay ports (the program cannot see relay sockets), in a
//! slot below the kernel's array size. Everything else stays on the userspace path.

use std::collections::HashMap;

use super::keys::{AddrKey, ChannelKey, PeerKey, Slot, Tick};
use super::stats::UsageRecord;

/// One channel as the kernel sees it: both directions' keys and what they lead to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MirroredChannel {
    /// The client's address.
    pub client: AddrKey,
    /// The listener address the client reached.
    pub server: AddrKey,
    /// The channel number (RFC 8656 §12).
    pub channel: u16,
    /// The relay socket's bound address (where peers' datagrams arrive).
    pub relay: AddrKey,
    /// The peer, as on the wire.
    pub peer: AddrKey,
    /// The channel's expiry.
    pub expires: Tick,
    /// The permission's expiry for the peer's IP.
    pub permission_expires: Tick,
    /// The allocation's counters slot.
    pub slot: Slot,
}

/// A change to the kernel's copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MirrorOp {
    /// Install or replace a channel's entries.
    SetChannel(MirroredChannel),
    /// Remove a channel's entries (the value last installed).
    RemoveChannel(MirroredChannel),
    /// A slot's generation and expiry; `expires == Tick(0)` when it was freed.
    Slot {
        /// The slot index.
        index: u32,
        /// Its current generation.
        generation: u32,
        /// The allocation's expiry.
        expires: Tick,
    },
}

/// Dirty marks and what the kernel holds.
#[derive(Debug, Default)]
pub(crate) struct Mirror {
    /// Slots at or above this index are not mirrored (the kernel array's share of a worker).
    pub slot_limit: u32,
    pub channels: Vec<(ChannelKey, PeerKey)>,
    pub slots: Vec<u32>,
    pub installed: HashMap<ChannelKey, MirroredChannel, foldhash::fast::RandomState>,
    /// Records of ended allocations, waiting for the kernel's last counts
    /// ([`Server::release_usage`]).
    pub held: Vec<(Slot, UsageRecord)>,
}

impl Mirror {
    pub fn channel_changed(&mut self, channel: ChannelKey, peer: PeerKey) {
        self.channels.push((channel, peer));
    }

    pub fn hold(&mut self, slot: Slot, record: UsageRecord) {
        self.held.push((slot, record));
    }

    pub fn slot_changed(&mut self, index: u32) {
        if index < self.slot_limit {
            self.slots.push(index);
        }
    }
}
