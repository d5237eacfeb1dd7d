//! The server's half of the kernel mirror (`super::mirror`): turning dirty marks into
//! [`MirrorOp`]s, and the kernel's counts back into counters and usage records.

use super::allocation::AllocId;
use super::keys::{AddrKey, ChannelKey, PeerKey, Slot};
use super::mirror::{Mirror, MirrorOp, MirroredChannel};
use super::server::{Command, Server};
use super::stats::Traffic;
use super::table::Table;

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
