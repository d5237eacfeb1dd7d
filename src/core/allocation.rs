//! Allocations and their table: a slab with generation-checked ids, indexed by 5-tuple and by
//! relay socket (RFC 8656 §3: an allocation is identified by its 5-tuple).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use super::FiveTuple;
use super::quota::TokenBucket;
use super::relay::{RelayId, RelayMap};
use super::stats::Traffic;

/// A slot index plus a generation, so a stale id never reaches a newer allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllocId {
    index: u32,
    generation: u32,
}

/// One relayed transport address of an allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Relay {
    pub id: RelayId,
    /// The bound socket address.
    pub bound: SocketAddr,
    /// What the client is told (external IP behind NAT).
    pub advertised: SocketAddr,
}

/// RFC 8656 §9: a permission is an IP address and an expiry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permission {
    pub ip: IpAddr,
    pub expires: Instant,
}

/// RFC 8656 §12: a channel binds a number to a peer transport address.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
    /// The peer is one of our own relay addresses, valid only while a relay socket is open at
    /// its port (`PeerPolicy::is_live_gated`, decided at bind and on reload): only such
    /// channels pay a per-packet check, one atomic load.
    pub live_gated: bool,
}

/// An allocation.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub five_tuple: FiveTuple,
    /// The username it was created with; later requests must use the same (RFC 8656 §7.2: 441).
    pub username: Arc<str>,
    pub relays: [Option<Relay>; 2],
    pub expires: Instant,
    pub started_unix: u64,
    pub permissions: Vec<Permission>,
    pub channels: Vec<Channel>,
    pub peers_seen: u32,
    pub traffic: Traffic,
    /// The per-allocation bandwidth cap, if configured.
    pub bucket: Option<TokenBucket>,
}

impl Allocation {
    /// The relay of the peer's family.
    pub fn relay_for(&self, peer: IpAddr) -> Option<&Relay> {
        self.relays[usize::from(peer.is_ipv6())].as_ref()
    }

    /// Whether a live permission covers `ip`.
    pub fn permits(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .iter()
            .any(|p| p.ip == ip && p.expires > now)
    }

    /// The live channel with this number.
    pub fn channel(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
    }

    /// The live channel bound to this peer.
    pub fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<&Channel> {
        self.channels
            .iter()
            .find(|c| c.peer == peer && c.expires > now)
    }

    /// Installs or refreshes a permission (RFC 8656 §10.2); false when `max` live ones exist.
    pub fn permit(&mut self, ip: IpAddr, expires: Instant, now: Instant, max: usize) -> bool {
        self.permissions.retain(|p| p.expires > now);
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = expires;
            return true;
        }
        if self.permissions.len() >= max {
            return false;
        }
        self.permissions.push(Permission { ip, expires });
        self.peers_seen = self.peers_seen.saturating_add(1);
        true
    }
}

/// All allocations of one worker.
#[derive(Debug, Default)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Looked up for every client datagram. Keyed by addresses a client chooses, so the hash is
    /// seeded at random per map (foldhash); and an entry exists only for an authenticated,
    /// quota-bound allocation, so an attacker cannot fill it with colliding keys at will.
    by_five_tuple: HashMap<FiveTuple, AllocId, foldhash::fast::RandomState>,
    by_relay: RelayMap<AllocId>,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    allocation: Option<Allocation>,
}

impl Table {
    /// Inserts an allocation and indexes it.
    pub fn insert(&mut self, allocation: Allocation) -> AllocId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot::default());
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = AllocId {
            index,
            generation: slot.generation,
        };
        self.by_five_tuple.insert(allocation.five_tuple, id);
        for relay in allocation.relays.iter().flatten() {
            self.by_relay.insert(relay.id, id);
        }
        slot.allocation = Some(allocation);
        id
    }

    /// Removes an allocation and its index entries.
    pub fn remove(&mut self, id: AllocId) -> Option<Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let allocation = slot.allocation.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        self.by_five_tuple.remove(&allocation.five_tuple);
        for relay in allocation.relays.iter().flatten() {
            self.by_relay.remove(&relay.id);
        }
        Some(allocation)
    }

    pub fn get(&self, id: AllocId) -> Option<&Allocation> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.allocation.as_ref())
            .flatten()
    }

    pub fn get_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        (slot.generation == id.generation)
            .then_some(slot.allocation.as_mut())
            .flatten()
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
}
