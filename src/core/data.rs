//! The data plane (RFC 8656 §11–12): ChannelData and Send indications out, peer datagrams in.
//! No heap allocation, no lock, no log above `trace`.

use std::net::SocketAddr;
use std::ops::Range;

use crate::proto::{
    ChannelData, Class, HEADER_LEN, MAGIC_COOKIE, Message, MessageType, Method, TransactionId,
    attr, write_channel_data,
};

use super::allocation::Allocation;
use super::quota::{Bandwidth, TokenBucket, admit};
use super::relay::RelayId;
use super::server::{Server, next_random};
use super::{DropReason, FiveTuple, Handled, Now, PEER_HEADROOM, PeerHandled};

impl Server {
    /// RFC 8656 §12.6: ChannelData from the client goes to the channel's peer.
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
        let Some(id) = self.table.id_by_five_tuple(&from) else {
            self.counters.dropped_other += 1;
            return Handled::Drop(DropReason::NoAllocation);
        };
        let Some(allocation) = self.table.get_mut(id).filter(|a| a.expires > now.mono) else {
            return Handled::Drop(DropReason::NoAllocation);
        };
        let Some((peer, live_gated)) = allocation
            .channel(cd.channel(), now.mono)
            .map(|c| (c.peer, c.live_gated))
        else {
            self.counters.dropped_other += 1;
            return Handled::Drop(DropReason::NoChannel);
        };
        if !allocation.permits(peer.ip(), now.mono) {
            self.counters.dropped_no_permission += 1;
            return Handled::Drop(DropReason::NoPermission);
        }
        // A channel to another allocation's relay outlives that relay socket, whose port the
        // kernel may then give to any local process. Only such channels pay this load.
        if live_gated && !self.settings.policy.relay_port_live(peer) {
            self.counters.dropped_policy += 1;
            return Handled::Drop(DropReason::Policy);
        }
        let caps = Caps {
            worker: &mut self.worker_bucket,
            limit: self.settings.worker_bandwidth,
            now: now.mono,
        };
        forward(
            allocation,
            &mut self.counters,
            caps,
            peer,
            4..4 + cd.data().len(),
        )
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
        let Some(allocation) = self.table.get_mut(id).filter(|a| a.expires > now.mono) else {
            return Handled::Drop(DropReason::NoAllocation);
        };
        if !allocation.permits(peer.ip(), now.mono) {
            self.counters.dropped_no_permission += 1;
            return Handled::Drop(DropReason::NoPermission);
        }
        // `data` borrows `pkt`; its offset is where the payload starts.
        let start = data.as_ptr() as usize - pkt.as_ptr() as usize;
        let caps = Caps {
            worker: &mut self.worker_bucket,
            limit: self.settings.worker_bandwidth,
            now: now.mono,
        };
        forward(
            allocation,
            &mut self.counters,
            caps,
            peer,
            start..start + data.len(),
        )
    }

    /// RFC 8656 §11.3 and §12.7: a peer datagram becomes ChannelData when a channel is bound,
    /// else a Data indication; without a permission it is dropped.
    pub(crate) fn data_from_peer(
        &mut self,
        now: Now,
        relay: RelayId,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> PeerHandled {
        let Some(id) = self.table.id_by_relay(relay) else {
            self.counters.dropped_other += 1;
            return PeerHandled::Drop(DropReason::NoAllocation);
        };
        let Some(allocation) = self.table.get_mut(id).filter(|a| a.expires > now.mono) else {
            return PeerHandled::Drop(DropReason::NoAllocation);
        };
        let peer = hairpin_in(allocation, peer);
        if !allocation.permits(peer.ip(), now.mono) {
            self.counters.dropped_no_permission += 1;
            return PeerHandled::Drop(DropReason::NoPermission);
        }
        let len = payload.len();
        let (limit, now_mono) = (self.settings.worker_bandwidth, now.mono);
        if !admit(
            &mut allocation.bucket,
            &mut self.worker_bucket,
            limit,
            now_mono,
            len as u64,
        ) {
            self.counters.dropped_bandwidth += 1;
            return PeerHandled::Drop(DropReason::Bandwidth);
        }
        let stream = allocation.five_tuple.transport.is_stream();
        let range = match allocation.channel_to(peer, now.mono).map(|c| c.number) {
            Some(number) => payload.start.checked_sub(4).and_then(|start| {
                write_channel_data(&mut buf[start..], number, len, stream).map(|n| start..start + n)
            }),
            // Only a Data indication needs a transaction id.
            None => write_data_indication(buf, payload.clone(), peer, next_random(&mut self.rng)),
        };
        let Some(range) = range else {
            self.counters.dropped_other += 1;
            return PeerHandled::Drop(DropReason::Internal);
        };
        allocation.traffic.packets_to_client += 1;
        allocation.traffic.bytes_to_client += len as u64;
        self.counters.packets_to_client += 1;
        self.counters.bytes_to_client += len as u64;
        PeerHandled::ToClient {
            client: allocation.five_tuple,
            range,
        }
    }
}

/// The worker-wide bandwidth cap, borrowed next to an allocation.
struct Caps<'a> {
    worker: &'a mut Option<TokenBucket>,
    limit: Option<Bandwidth>,
    now: std::time::Instant,
}

fn forward(
    allocation: &mut Allocation,
    counters: &mut super::Counters,
    caps: Caps<'_>,
    peer: SocketAddr,
    payload: Range<usize>,
) -> Handled {
    if allocation.relay_for(peer.ip()).is_none() {
        return Handled::Drop(DropReason::NoPermission);
    }
    if !admit(
        &mut allocation.bucket,
        caps.worker,
        caps.limit,
        caps.now,
        payload.len() as u64,
    ) {
        counters.dropped_bandwidth += 1;
        return Handled::Drop(DropReason::Bandwidth);
    }
    let Some(relay) = allocation.relay_for(peer.ip()) else {
        return Handled::Drop(DropReason::NoPermission);
    };
    let relay_id = relay.id;
    let peer = hairpin_out(relay, peer);
    // Defence in depth: the policy refuses unspecified peers, and nothing may turn one up.
    if peer.ip().is_unspecified() {
        return Handled::Drop(DropReason::Policy);
    }
    let len = payload.len() as u64;
    allocation.traffic.packets_to_peer += 1;
    allocation.traffic.bytes_to_peer += len;
    counters.packets_to_peer += 1;
    counters.bytes_to_peer += len;
    Handled::Forward {
        relay: relay_id,
        peer,
        payload,
    }
}

/// A peer at our own advertised (external) address is really our own relay socket: send to
/// the bound address, since 1:1 NAT often does not hairpin. Never to an unspecified bound
/// address: Linux delivers a datagram sent to 0.0.0.0 to loopback.
fn hairpin_out(relay: &super::allocation::Relay, peer: SocketAddr) -> SocketAddr {
    if peer.ip() == relay.advertised.ip()
        && relay.advertised.ip() != relay.bound.ip()
        && !relay.bound.ip().is_unspecified()
    {
        SocketAddr::new(relay.bound.ip(), peer.port())
    } else {
        peer
    }
}

/// The reverse of [`hairpin_out`]: traffic from our own bound relay IP is shown as coming from
/// the advertised address the client used in its permission.
fn hairpin_in(allocation: &Allocation, peer: SocketAddr) -> SocketAddr {
    match allocation.relay_for(peer.ip()) {
        Some(r) if peer.ip() == r.bound.ip() && r.advertised.ip() != r.bound.ip() => {
            SocketAddr::new(r.advertised.ip(), peer.port())
        }
        _ => peer,
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
