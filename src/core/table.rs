//! All allocations of one worker: a slab with generation-checked ids, indexed by 5-tuple and
//! by relay socket, with the counters array and the flat tables (`super::flat`) beside it.
//!
//! This is the only writer of permissions, channels and allocation expiry: each change goes to
//! the allocation's own list and to the flat tables together, so the data plane (one lookup)
//! and the control plane (short per-allocation lists, bounded by
//! `max_permissions_per_allocation` and `max_channels_per_allocation`) agree.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::FiveTuple;
use super::allocation::{AllocId, Allocation, Channel, Permission};
use super::flat::{FlatTables, SlotCounters};
use super::keys::{
    AddrKey, ChannelEntry, ChannelKey, FiveTupleKey, PeerEntry, PeerKey, PermissionEntry,
    PermissionKey, Slot, Tick,
};
use super::policy::PeerPolicy;
use super::quota::TokenBucket;
use super::relay::{RelayId, RelayMap};
use super::stats::Traffic;

/// The allocation table.
#[derive(Debug, Default)]
pub(crate) struct Table {
    slots: Vec<Option<Allocation>>,
    /// Per slot: generation, expiry, traffic and bucket — what each relayed packet touches.
    counters: Vec<SlotCounters>,
    free: Vec<u32>,
    /// Looked up for every client request (not for ChannelData, which the flat channel table
    /// answers). Keyed by addresses a client chooses, so seeded at random (foldhash).
    by_five_tuple: HashMap<FiveTuple, AllocId, foldhash::fast::RandomState>,
    by_relay: RelayMap<AllocId>,
    pub(crate) flat: FlatTables,
    /// Tick 0 (see `super::keys`): the first instant an allocation was made at.
    epoch: Option<Instant>,
    /// The last instant converted by [`Table::tick_now`]: io passes one `Now` per batch.
    last_now: Option<(Instant, Tick)>,
}

/// The flat keys of one channel of `a`.
fn channel_keys(a: &Allocation, c: &Channel) -> Option<(ChannelKey, PeerKey, SocketAddr)> {
    let relay = a.relay_for(c.peer.ip())?;
    let wire = relay.hairpin_out(c.peer);
    let channel = ChannelKey::new(&a.five_tuple, c.number);
    let peer = PeerKey::new(relay.id.0, wire);
    Some((channel, peer, wire))
}

/// The flat key of a permission of `a`.
fn permission_key(a: &Allocation, ip: IpAddr) -> Option<PermissionKey> {
    Some(PermissionKey::new(a.relay_for(ip)?.id.0, ip))
}

/// Brings the permission expiry in `a`'s channel entries to the peer `ip` to `at`.
fn sync_channels(flat: &mut FlatTables, a: &Allocation, ip: IpAddr, at: Tick) {
    for c in a.channels.iter().filter(|c| c.peer.ip() == ip) {
        if let Some((channel, peer, _)) = channel_keys(a, c) {
            flat.set_channel_permission(&channel, &peer, at);
        }
    }
}

/// Removes permission `p` of `a` from the flat tables; its channels lose it too.
fn unpermit(flat: &mut FlatTables, a: &Allocation, p: &Permission) {
    if let Some(key) = permission_key(a, p.ip) {
        flat.permissions.remove(&key);
    }
    sync_channels(flat, a, p.ip, Tick(0));
}

impl Table {
    /// `at` in ticks since the epoch.
    pub fn tick(&self, at: Instant) -> Tick {
        self.epoch.map_or(Tick(0), |epoch| Tick::since(epoch, at))
    }

    /// Tick 0, once the first allocation was made.
    pub fn epoch(&self) -> Option<Instant> {
        self.epoch
    }

    /// A slot's generation and expiry (expiry 0 while it is free).
    pub fn slot_state(&self, index: u32) -> Option<(u32, Tick)> {
        let c = self.counters.get(index as usize)?;
        Some((c.generation, c.expires))
    }

    /// Marks a slot for the kernel mirror, if there is one.
    fn slot_changed(&mut self, index: u32) {
        if let Some(mirror) = &mut self.flat.mirror {
            mirror.slot_changed(index);
        }
    }

    /// `tick(now)` for the data plane: the conversion (a timespec subtraction and a 128-bit
    /// multiply) is done once per distinct `now`, which io reads once per batch.
    pub fn tick_now(&mut self, now: Instant) -> Tick {
        match self.last_now {
            Some((at, tick)) if at == now => tick,
            _ => {
                let tick = self.tick(now);
                self.last_now = Some((now, tick));
                tick
            }
        }
    }

    /// Inserts an allocation made at `now` and indexes it.
    pub fn insert(
        &mut self,
        allocation: Allocation,
        bucket: Option<TokenBucket>,
        now: Instant,
    ) -> AllocId {
        if self.epoch.is_none() {
            self.epoch = Some(now);
            self.last_now = None;
        }
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.counters.push(SlotCounters::default());
                (self.slots.len() - 1) as u32
            }
        };
        let expires = self.tick(allocation.expires);
        let counters = &mut self.counters[index as usize];
        counters.expires = expires;
        counters.traffic = Traffic::default();
        counters.bucket = bucket;
        let id = AllocId {
            index,
            generation: counters.generation,
        };
        self.by_five_tuple.insert(allocation.five_tuple, id);
        for relay in allocation.relays.iter().flatten() {
            self.by_relay.insert(relay.id, id);
        }
        self.slots[index as usize] = Some(allocation);
        self.slot_changed(index);
        id
    }

    /// Removes an allocation, its index entries and its flat entries; returns it with its
    /// traffic totals.
    pub fn remove(&mut self, id: AllocId) -> Option<(Allocation, Traffic)> {
        self.get(id)?;
        let allocation = self.slots.get_mut(id.index as usize)?.take()?;
        let counters = &mut self.counters[id.index as usize];
        counters.generation = counters.generation.wrapping_add(1);
        counters.expires = Tick(0);
        counters.bucket = None;
        let traffic = std::mem::take(&mut counters.traffic);
        self.free.push(id.index);
        self.slot_changed(id.index);
        self.by_five_tuple.remove(&allocation.five_tuple);
        for relay in allocation.relays.iter().flatten() {
            self.by_relay.remove(&relay.id);
        }
        for p in &allocation.permissions {
            unpermit(&mut self.flat, &allocation, p);
        }
        for c in &allocation.channels {
            if let Some((channel, peer, _)) = channel_keys(&allocation, c) {
                self.flat.remove_channel(&channel, &peer);
            }
        }
        Some((allocation, traffic))
    }

    pub fn get(&self, id: AllocId) -> Option<&Allocation> {
        let counters = self.counters.get(id.index as usize)?;
        (counters.generation == id.generation)
            .then(|| self.slots[id.index as usize].as_ref())
            .flatten()
    }

    /// An allocation for changes to its own lists that the flat tables do not mirror (its
    /// RFC 6062 peer data connections).
    pub fn get_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        self.get(id)?;
        self.slots.get_mut(id.index as usize)?.as_mut()
    }

    /// The counters of a live slot (data plane: an array index, no hash).
    pub fn counters_mut(&mut self, slot: Slot) -> Option<&mut SlotCounters> {
        FlatTables::live(&mut self.counters, slot)
    }

    /// The counters slot of an allocation.
    pub fn slot_of(id: AllocId) -> Slot {
        Slot {
            index: id.index,
            generation: id.generation,
        }
    }

    /// Sets an allocation's expiry (Refresh, RFC 8656 §8.2).
    pub fn set_expires(&mut self, id: AllocId, expires: Instant) {
        let tick = self.tick(expires);
        let Some((a, _, _)) = self.parts(id) else {
            return;
        };
        a.expires = expires;
        self.counters[id.index as usize].expires = tick;
        self.slot_changed(id.index);
    }

    pub fn id_by_five_tuple(&self, ft: &FiveTuple) -> Option<AllocId> {
        self.by_five_tuple.get(ft).copied()
    }

    pub fn id_by_relay(&self, relay: RelayId) -> Option<AllocId> {
        self.by_relay.get(&relay).copied()
    }

    pub fn len(&self) -> usize {
        self.by_five_tuple.len()
    }

    /// Every allocation id (for draining).
    pub fn ids(&self) -> Vec<AllocId> {
        self.by_five_tuple.values().copied().collect()
    }

    /// The allocation and the flat tables, borrowed apart.
    fn parts(
        &mut self,
        id: AllocId,
    ) -> Option<(&mut Allocation, &mut FlatTables, Option<Instant>)> {
        self.get(id)?;
        let a = self.slots.get_mut(id.index as usize)?.as_mut()?;
        Some((a, &mut self.flat, self.epoch))
    }

    /// Installs or refreshes a permission (RFC 8656 §10.2) after dropping expired ones; false
    /// when `max` live ones exist.
    pub fn permit(
        &mut self,
        id: AllocId,
        ip: IpAddr,
        expires: Instant,
        now: Instant,
        max: usize,
    ) -> bool {
        let Some((a, flat, epoch)) = self.parts(id) else {
            return false;
        };
        let tick = epoch.map_or(Tick(0), |e| Tick::since(e, expires));
        for p in a.permissions.iter().filter(|p| p.expires <= now) {
            unpermit(flat, a, p);
        }
        a.permissions.retain(|p| p.expires > now);
        match a.permissions.iter().position(|p| p.ip == ip) {
            Some(i) => a.permissions[i].expires = expires,
            None if a.permissions.len() >= max => return false,
            None => {
                a.permissions.push(Permission { ip, expires });
                a.peers_seen = a.peers_seen.saturating_add(1);
            }
        }
        if let Some(key) = permission_key(a, ip) {
            let entry = PermissionEntry {
                client: FiveTupleKey::new(&a.five_tuple),
                pad: 0,
                expires: tick,
                slot: Self::slot_of(id),
            };
            flat.permissions.insert(key, entry);
        }
        sync_channels(flat, a, ip, tick);
        true
    }

    /// Drops expired channels.
    pub fn expire_channels(&mut self, id: AllocId, now: Instant) {
        let Some((a, flat, _)) = self.parts(id) else {
            return;
        };
        for c in a.channels.iter().filter(|c| c.expires <= now) {
            if let Some((channel, peer, _)) = channel_keys(a, c) {
                flat.remove_channel(&channel, &peer);
            }
        }
        a.channels.retain(|c| c.expires > now);
    }

    /// The channel number bound to what `peer` sends on the wire (after the hairpin
    /// translation), if any: two client-side addresses can meet there.
    pub fn wire_channel(&self, id: AllocId, peer: SocketAddr) -> Option<u16> {
        let a = self.get(id)?;
        let relay = a.relay_for(peer.ip())?;
        let key = PeerKey::new(relay.id.0, relay.hairpin_out(peer));
        self.flat.peers.get(&key).map(|e| e.channel)
    }

    /// Installs or refreshes a channel (RFC 8656 §12.2); its permission must exist already.
    pub fn bind_channel(&mut self, id: AllocId, new: Channel, now: Instant) {
        let Some((a, flat, epoch)) = self.parts(id) else {
            return;
        };
        let tick = |at: Instant| epoch.map_or(Tick(0), |e| Tick::since(e, at));
        match a.channels.iter_mut().find(|c| c.number == new.number) {
            Some(c) => *c = new,
            None => a.channels.push(new),
        }
        let permission = a
            .permissions
            .iter()
            .find(|p| p.ip == new.peer.ip() && p.expires > now)
            .map_or(Tick(0), |p| tick(p.expires));
        let Some((channel, peer, wire)) = channel_keys(a, &new) else {
            return;
        };
        let slot = Self::slot_of(id);
        let entries = (
            ChannelEntry {
                relay: peer.relay,
                peer: AddrKey::new(wire),
                pad: 0,
                expires: tick(new.expires),
                permission_expires: permission,
                slot,
                live_gated: u8::from(new.live_gated),
                tail: [0; 7],
            },
            PeerEntry {
                client: channel.client,
                channel: new.number,
                pad: [0; 2],
                expires: tick(new.expires),
                permission_expires: permission,
                slot,
            },
        );
        flat.set_channel((channel, peer), entries);
    }

    /// Removes every permission and channel `policy` refuses, re-deciding which channels are
    /// live-gated; returns how many were removed.
    pub fn revoke(&mut self, policy: &PeerPolicy) -> usize {
        let mut removed = 0;
        for id in self.ids() {
            let Some((a, flat, _)) = self.parts(id) else {
                continue;
            };
            let before = a.permissions.len() + a.channels.len();
            let scope = a.scope();
            for p in a
                .permissions
                .iter()
                .filter(|p| policy.check_ip_for(p.ip, scope).is_err())
            {
                unpermit(flat, a, p);
            }
            a.permissions
                .retain(|p| policy.check_ip_for(p.ip, scope).is_ok());
            // A channel is checked with its port (a listener port may be refused alone); one
            // that stays is gated on its relay socket again if the new allow list no longer
            // opens our address deliberately.
            for c in a.channels.iter_mut() {
                c.live_gated = policy.is_live_gated_for(c.peer, scope);
            }
            for c in &a.channels {
                let Some((channel, peer, _)) = channel_keys(a, c) else {
                    continue;
                };
                if policy.check_for(c.peer, scope).is_err() {
                    flat.remove_channel(&channel, &peer);
                } else if let Some(e) = flat.channels.get_mut(&channel) {
                    e.live_gated = u8::from(c.live_gated);
                    flat.changed(&channel, &peer);
                }
            }
            a.channels
                .retain(|c| policy.check_for(c.peer, scope).is_ok());
            removed += before - a.permissions.len() - a.channels.len();
        }
        removed
    }
}
