//! The kernel fast path's copy of the flat tables (issue 15): the core stays the single
//! source of truth, and this module says what changed, as plain values io writes into eBPF
//! maps. Off unless io turns it on ([`Server::enable_mirror`]); then every write to a
//! channel's flat entries and every change to an allocation's slot marks it dirty, and
//! [`Server::drain_mirror`] turns the dirty marks into [`MirrorOp`]s by comparing what the
//! flat tables hold now with what the kernel was last given.
//!
//! Only what the kernel can relay exactly as userspace would is mirrored: channels of UDP
//! clients on a listener with a specific address, whose peer has the client's address family,
//! that are not gated on our own relay ports (the program cannot see relay sockets), in a
//! slot below the kernel's array size. Everything else stays on the userspace path.

use std::collections::HashMap;

use super::allocation::AllocId;
use super::keys::{AddrKey, ChannelKey, PeerKey, Slot, Tick};
use super::server::{Command, Server};
use super::stats::{Traffic, UsageRecord};
use super::table::Table;

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
    slot_limit: u32,
    channels: Vec<(ChannelKey, PeerKey)>,
    slots: Vec<u32>,
    installed: HashMap<ChannelKey, MirroredChannel, foldhash::fast::RandomState>,
    /// Records of ended allocations, waiting for the kernel's last counts
    /// ([`Server::release_usage`]).
    held: Vec<(Slot, UsageRecord)>,
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

impl Server {
    /// Starts recording changes for a kernel mirror of up to `slots` allocation slots. Call
    /// before the first allocation: earlier state is not replayed.
    pub fn enable_mirror(&mut self, slots: u32) {
        self.table.flat.mirror = Some(Mirror {
            slot_limit: slots,
            ..Mirror::default()
        });
    }

    /// The instant ticks count from ([`Tick`]), once the first allocation was made.
    pub fn tick_epoch(&self) -> Option<std::time::Instant> {
        self.table.epoch()
    }

    /// Counts what the kernel relayed for slot `slot` since the last call: into the
    /// allocation's usage (if it is still the one in that slot) and the worker's counters.
    pub fn add_fast_path_traffic(&mut self, slot: Slot, t: Traffic) {
        let c = &mut self.counters;
        c.packets_to_peer += t.packets_to_peer;
        c.bytes_to_peer += t.bytes_to_peer;
        c.packets_to_client += t.packets_to_client;
        c.bytes_to_client += t.bytes_to_client;
        let a = if self.table.counters_mut(slot).is_some() {
            match self.table.counters_mut(slot) {
                Some(counters) => &mut counters.traffic,
                None => return,
            }
        } else {
            // The allocation ended; its record waits for these counts.
            let held = self.table.flat.mirror.as_mut().and_then(|m| {
                m.held
                    .iter_mut()
                    .find(|(s, _)| *s == slot)
                    .map(|(_, r)| &mut r.traffic)
            });
            match held {
                Some(traffic) => traffic,
                None => return,
            }
        };
        a.packets_to_peer += t.packets_to_peer;
        a.bytes_to_peer += t.bytes_to_peer;
        a.packets_to_client += t.packets_to_client;
        a.bytes_to_client += t.bytes_to_client;
    }

    /// Lets the usage records of ended allocations go (as [`Command::Usage`]): call after
    /// applying [`Server::drain_mirror`]'s ops, whose slot changes read the kernel's last
    /// counts of each ended allocation into its record.
    pub fn release_usage(&mut self) {
        if let Some(mirror) = &mut self.table.flat.mirror {
            for (_, record) in mirror.held.drain(..) {
                self.commands.push_back(Command::Usage(record));
            }
        }
    }

    /// Appends the changes since the last call to `out`; nothing when the mirror is off or
    /// nothing changed (the common case costs one branch).
    pub fn drain_mirror(&mut self, out: &mut Vec<MirrorOp>) {
        let Some(mut mirror) = self.table.flat.mirror.take() else {
            return;
        };
        for index in mirror.slots.drain(..) {
            if let Some((generation, expires)) = self.table.slot_state(index) {
                out.push(MirrorOp::Slot {
                    index,
                    generation,
                    expires,
                });
            }
        }
        for (channel, peer) in std::mem::take(&mut mirror.channels) {
            let wanted = mirrorable(&self.table, &channel, &peer, mirror.slot_limit);
            let had = mirror.installed.get(&channel).copied();
            if wanted == had {
                continue;
            }
            if let Some(old) = had
                && wanted.is_none_or(|w| (w.relay, w.peer) != (old.relay, old.peer))
            {
                out.push(MirrorOp::RemoveChannel(old));
                mirror.installed.remove(&channel);
            }
            if let Some(new) = wanted {
                out.push(MirrorOp::SetChannel(new));
                mirror.installed.insert(channel, new);
            }
        }
        self.table.flat.mirror = Some(mirror);
    }
}

/// The channel as the kernel should have it, if it should.
fn mirrorable(
    table: &Table,
    channel: &ChannelKey,
    peer: &PeerKey,
    slot_limit: u32,
) -> Option<MirroredChannel> {
    let entry = table.flat.channels.get(channel)?;
    let back = table.flat.peers.get(peer)?;
    let client = channel.client;
    let udp = client.transport == 17;
    let same_family = client.client.family == entry.peer.family;
    let specific_listener = client.server.ip != [0; 16];
    if !udp
        || !same_family
        || !specific_listener
        || entry.live_gated != 0
        || entry.slot.index >= slot_limit
        || back.channel != channel.channel
    {
        return None;
    }
    let id = AllocId {
        index: entry.slot.index,
        generation: entry.slot.generation,
    };
    let relay = table
        .get(id)?
        .relays
        .iter()
        .flatten()
        .find(|r| r.id.0 == entry.relay && !r.bound.ip().is_unspecified())?;
    Some(MirroredChannel {
        client: client.client,
        server: client.server,
        channel: channel.channel,
        relay: AddrKey::new(relay.bound),
        peer: entry.peer,
        expires: entry.expires,
        permission_expires: entry.permission_expires,
        slot: entry.slot,
    })
}
