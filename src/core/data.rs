//! The data plane (RFC 8656 §11–12): ChannelData and Send indications out, peer datagrams in.
//! No heap allocation, no lock, no log above `trace`.

use std::net::SocketAddr;
use std::ops::Range;

use crate::proto::{
    ChannelData, Class, HEADER_LEN, MAGIC_COOKIE, Message, MessageType, Method, TransactionId,
    attr, write_channel_data,
};

use super::allocation::AllocId;
use super::flat::SlotCounters;
use super::keys::{ChannelKey, FiveTupleKey, PeerKey, PermissionKey, Slot, Tick};
use super::quota::{Bandwidth, TokenBucket, admit};
use super::relay::RelayId;
use super::server::{Server, next_random};
use super::table::Table;
use super::{DropReason, FiveTuple, Handled, Now, PEER_HEADROOM, PeerAddr, PeerHandled};

impl Server {
    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer. One lookup in
    /// the flat channel table answers channel, peer, relay and permission; the counters slot
    /// is an array index.
    pub(crate) fn channel_data_from_client(
        &mut self,
        now: Now,
        from: FiveTuple,
        pkt: &[u8],
    ) -> Handled {
        let Ok(cd) = ChannelData::parse(pkt) else {
            self.counters.dropped_malformed += 1;
            return Handled::Drop(DropReason::Malformed);
        };
        let key = ChannelKey::new(&from, cd.channel());
        let Some(entry) = self.table.flat.channels.get(&key).copied() else {
            self.counters.dropped_other += 1;
            // Only a drop pays a second lookup, to say which it is.
            return Handled::Drop(match self.table.id_by_five_tuple(&from) {
                Some(_) => DropReason::NoChannel,
                None => DropReason::NoAllocation,
            });
        };
        let tick = self.table.tick_now(now.mono);
        let Some(slot) = self
            .table
            .counters_mut(entry.slot)
            .filter(|c| c.expires > tick)
        else {
            return Handled::Drop(DropReason::NoAllocation);
        };
        if entry.expires <= tick {
            self.counters.dropped_other += 1;
            return Handled::Drop(DropReason::NoChannel);
        }
        if entry.permission_expires <= tick {
            self.counters.dropped_no_permission += 1;
            return Handled::Drop(DropReason::NoPermission);
        }
        let peer = entry.peer.addr();
        // A channel to another allocation's relay outlives that relay socket, whose port the
        // kernel may then give to any local process. Only such channels pay this load.
        if entry.live_gated != 0 && !self.settings.policy.relay_port_live(peer) {
            self.counters.dropped_policy += 1;
            return Handled::Drop(DropReason::Policy);
        }
        let caps = Caps {
            worker: &mut self.worker_bucket,
            limit: self.settings.worker_bandwidth,
            now: now.mono,
        };
        let to = (RelayId(entry.relay), peer);
        forward(slot, &mut self.counters, caps, to, 4..4 + cd.data().len())
    }

    /// RFC 8656 §11.2: a Send indication's DATA goes to its XOR-PEER-ADDRESS.
    pub(crate) fn send_indication(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        pkt: &[u8],
    ) -> Handled {
        let Some(id) = self.table.id_by_five_tuple(&from) else {
            self.counters.dropped_other += 1;
            return Handled::Drop(DropReason::NoAllocation);
        };
        let (Some(Ok(peer)), Some(data)) =
            (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            self.counters.dropped_malformed += 1;
            return Handled::Drop(DropReason::Malformed);
        };
        let Ok(peer) = self.checked_peer(id, peer) else {
            self.counters.dropped_policy += 1;
            return Handled::Drop(DropReason::Policy);
        };
        let tick = self.table.tick_now(now.mono);
        let Some(allocation) = self.table.get(id).filter(|a| a.expires > now.mono) else {
            return Handled::Drop(DropReason::NoAllocation);
        };
        // RFC 6062: a TCP allocation's relays are listening sockets; data goes through peer
        // data connections only.
        if allocation.tcp {
            self.counters.dropped_other += 1;
            return Handled::Drop(DropReason::Ignored);
        }
        let Some(relay) = allocation.relay_for(peer.ip()).copied() else {
            return Handled::Drop(DropReason::NoPermission);
        };
        let key = PermissionKey::new(relay.id.0, peer.ip());
        let permitted = self.table.flat.permissions.get(&key);
        if permitted.is_none_or(|p| p.expires <= tick) {
            self.counters.dropped_no_permission += 1;
            return Handled::Drop(DropReason::NoPermission);
        }
        let Some(slot) = self.table.counters_mut(Table::slot_of(id)) else {
            return Handled::Drop(DropReason::NoAllocation);
        };
        // `data` borrows `pkt`; its offset is where the payload starts.
        let start = data.as_ptr() as usize - pkt.as_ptr() as usize;
        let caps = Caps {
            worker: &mut self.worker_bucket,
            limit: self.settings.worker_bandwidth,
            now: now.mono,
        };
        let to = (relay.id, relay.hairpin_out(peer));
        forward(
            slot,
            &mut self.counters,
            caps,
            to,
            start..start + data.len(),
        )
    }

    /// RFC 8656 §11.3 and §12.7: a peer datagram becomes ChannelData when a channel is bound
    /// (one lookup in the flat peer table), else a Data indication when a permission covers
    /// the peer's IP (a second lookup, in the permission table); else it is dropped.
    pub(crate) fn data_from_peer(
        &mut self,
        now: Now,
        relay: RelayId,
        peer: PeerAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> PeerHandled {
        let tick = self.table.tick_now(now.mono);
        let key = PeerKey::new(relay.0, peer.0);
        let (client, channel, permission_expires, slot, shown) =
            match self.table.flat.peers.get(&key) {
                Some(e) if e.expires > tick => (
                    e.client,
                    Some(e.channel),
                    e.permission_expires,
                    e.slot,
                    peer.0,
                ),
                _ => match self.permission_of(now, relay, peer.0) {
                    Ok((client, expires, slot, shown)) => (client, None, expires, slot, shown),
                    Err(reason) => return PeerHandled::Drop(reason),
                },
            };
        let Some(counters) = self.table.counters_mut(slot).filter(|c| c.expires > tick) else {
            return PeerHandled::Drop(DropReason::NoAllocation);
        };
        if permission_expires <= tick {
            self.counters.dropped_no_permission += 1;
            return PeerHandled::Drop(DropReason::NoPermission);
        }
        let len = payload.len();
        let (limit, now_mono) = (self.settings.worker_bandwidth, now.mono);
        if !admit(
            &mut counters.bucket,
            &mut self.worker_bucket,
            limit,
            now_mono,
            len as u64,
        ) {
            self.counters.dropped_bandwidth += 1;
            return PeerHandled::Drop(DropReason::Bandwidth);
        }
        let client = client.five_tuple();
        let range = match channel {
            Some(number) => payload.start.checked_sub(4).and_then(|start| {
                let stream = client.transport.is_stream();
                write_channel_data(&mut buf[start..], number, len, stream).map(|n| start..start + n)
            }),
            // Only a Data indication needs a transaction id.
            None => write_data_indication(buf, payload.clone(), shown, next_random(&mut self.rng)),
        };
        let Some(range) = range else {
            self.counters.dropped_other += 1;
            return PeerHandled::Drop(DropReason::Internal);
        };
        counters.traffic.packets_to_client += 1;
        counters.traffic.bytes_to_client += len as u64;
        self.counters.packets_to_client += 1;
        self.counters.bytes_to_client += len as u64;
        PeerHandled::ToClient {
            client: self.with_scope(client, slot),
            range,
        }
    }

    /// The flat keys carry no IPv6 scope (they mirror kernel maps), and a link-local client
    /// is only reachable with its interface's: that one comes from its allocation. Every other
    /// client is exactly its key.
    fn with_scope(&self, client: FiveTuple, slot: Slot) -> FiveTuple {
        let link_local = |addr: SocketAddr| matches!(addr.ip(), std::net::IpAddr::V6(v6) if v6.is_unicast_link_local());
        if !link_local(client.client.addr()) && !link_local(client.server) {
            return client;
        }
        let id = AllocId {
            index: slot.index,
            generation: slot.generation,
        };
        self.table.get(id).map_or(client, |a| a.five_tuple)
    }

    /// The permission covering `peer` on `relay`: client, expiry, counters slot, and the
    /// address the client knows the peer by. A datagram from our own bound relay IP is
    /// looked up again as our advertised IP (the hairpin, see `Relay::hairpin_in`); that and
    /// a missing permission cost a lookup of the relay's allocation.
    fn permission_of(
        &mut self,
        now: Now,
        relay: RelayId,
        peer: SocketAddr,
    ) -> Result<(FiveTupleKey, Tick, super::keys::Slot, SocketAddr), DropReason> {
        let key = |peer: SocketAddr| PermissionKey::new(relay.0, peer.ip());
        if let Some(p) = self.table.flat.permissions.get(&key(peer)) {
            return Ok((p.client, p.expires, p.slot, peer));
        }
        let Some(id) = self.table.id_by_relay(relay) else {
            self.counters.dropped_other += 1;
            return Err(DropReason::NoAllocation);
        };
        let Some(allocation) = self.table.get(id).filter(|a| a.expires > now.mono) else {
            return Err(DropReason::NoAllocation);
        };
        let shown = allocation
            .relay_for(peer.ip())
            .map_or(peer, |r| r.hairpin_in(peer));
        match self.table.flat.permissions.get(&key(shown)) {
            Some(p) if shown != peer => Ok((p.client, p.expires, p.slot, shown)),
            _ => {
                self.counters.dropped_no_permission += 1;
                Err(DropReason::NoPermission)
            }
        }
    }
}

/// The worker-wide bandwidth cap, borrowed next to an allocation.
struct Caps<'a> {
    worker: &'a mut Option<TokenBucket>,
    limit: Option<Bandwidth>,
    now: std::time::Instant,
}

/// Admits and counts one client → peer datagram from relay `to.0` to peer `to.1`.
fn forward(
    slot: &mut SlotCounters,
    counters: &mut super::Counters,
    caps: Caps<'_>,
    to: (RelayId, SocketAddr),
    payload: Range<usize>,
) -> Handled {
    if !admit(
        &mut slot.bucket,
        caps.worker,
        caps.limit,
        caps.now,
        payload.len() as u64,
    ) {
        counters.dropped_bandwidth += 1;
        return Handled::Drop(DropReason::Bandwidth);
    }
    let (relay, peer) = to;
    // Defence in depth: the policy refuses unspecified peers, and nothing may turn one up.
    if peer.ip().is_unspecified() {
        return Handled::Drop(DropReason::Policy);
    }
    let len = payload.len() as u64;
    slot.traffic.packets_to_peer += 1;
    slot.traffic.bytes_to_peer += len;
    counters.packets_to_peer += 1;
    counters.bytes_to_peer += len;
    Handled::Forward {
        relay,
        peer: PeerAddr(peer),
        payload,
    }
}

/// Writes a Data indication (XOR-PEER-ADDRESS, DATA) around `buf[payload]` in place.
fn write_data_indication(
    buf: &mut [u8],
    payload: Range<usize>,
    peer: SocketAddr,
    txid: u64,
) -> Option<Range<usize>> {
    let len = payload.len();
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let head = HEADER_LEN + 4 + addr_len + 4;
    debug_assert!(head <= PEER_HEADROOM);
    let start = payload.start.checked_sub(head)?;
    let padded = (len + 3) & !3;
    let end = payload.start + padded;
    if end > buf.len() {
        return None;
    }
    buf[payload.end..end].fill(0);
    // A peer datagram too large to fit one STUN message is dropped.
    let body = u16::try_from(4 + addr_len + 4 + padded).ok()?;
    let mut id = [0u8; 12];
    id[4..].copy_from_slice(&txid.to_be_bytes());
    let tid = TransactionId(id);
    let h = &mut buf[start..payload.start];
    h[0..2].copy_from_slice(
        &MessageType::new(Method::DATA, Class::Indication)
            .to_u16()
            .to_be_bytes(),
    );
    h[2..4].copy_from_slice(&body.to_be_bytes());
    h[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    h[8..20].copy_from_slice(&tid.0);
    h[20..22].copy_from_slice(&attr::XOR_PEER_ADDRESS.to_be_bytes());
    h[22..24].copy_from_slice(&(addr_len as u16).to_be_bytes());
    crate::proto::encode_xor_address_into(peer, &tid, &mut h[24..24 + addr_len]);
    let d = 24 + addr_len;
    h[d..d + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    h[d + 2..d + 4].copy_from_slice(&(len as u16).to_be_bytes());
    Some(start..end)
}
