//! Refresh (RFC 8656 §8.2), CreatePermission (§10.2) and ChannelBind (§12.2).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::proto::{MAX_CHANNEL, MIN_CHANNEL, Message, attr, error_code as ec};

use super::allocate::Answer;
use super::allocation::{AllocId, Channel};
use super::authn::Authenticated;
use super::policy::{PeerScope, PolicyRejection};
use super::reply;
use super::server::{AllocIdKey, Server, Timer};
use super::stats::EndReason;
use super::{FiveTuple, Now, Rejection};

/// At most this many XOR-PEER-ADDRESS attributes are honoured in one CreatePermission.
const MAX_PEERS_PER_REQUEST: usize = 16;

impl Server {
    pub(crate) fn refresh(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        out: &mut [u8],
    ) -> Answer {
        let id = self.owned_allocation(&from, auth, now)?;
        // RFC 8656 §8.2: a REQUESTED-ADDRESS-FAMILY the allocation lacks is a 443.
        if let Some(family) = msg.address_family(attr::REQUESTED_ADDRESS_FAMILY) {
            let v6 = matches!(family, Ok(0x02));
            let has = self
                .table
                .get(id)
                .is_some_and(|a| a.relays[usize::from(v6)].is_some());
            if !has {
                return Err(Rejection::new(
                    ec::PEER_ADDRESS_FAMILY_MISMATCH,
                    "allocation has no relay of that family",
                ));
            }
        }
        let requested = match msg.u32_attr(attr::LIFETIME) {
            Some(Err(_)) => return Err(Rejection::new(ec::BAD_REQUEST, "LIFETIME malformed")),
            Some(Ok(secs)) => Some(secs),
            None => None,
        };
        let lifetime = if requested == Some(0) {
            self.end_allocation(now, id, EndReason::Deleted);
            Duration::ZERO
        } else {
            let selftest = self
                .table
                .get(id)
                .is_some_and(|a| a.selftest_source.is_some());
            let lifetime = self.granted_lifetime(msg, selftest)?;
            let expires = now.mono + lifetime;
            self.table.set_expires(id, expires);
            self.schedule(expires, Timer::Allocation(AllocIdKey(id)));
            lifetime
        };
        Ok(self.signed_success(out, msg, auth, |w| {
            w.add_u32(attr::LIFETIME, lifetime.as_secs() as u32)?;
            Ok(())
        }))
    }

    pub(crate) fn create_permission(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        out: &mut [u8],
    ) -> Answer {
        let id = self.owned_allocation(&from, auth, now)?;
        let mut peers = [IpAddr::from([0, 0, 0, 0]); MAX_PEERS_PER_REQUEST];
        let mut count = 0;
        // RFC 8656 §10.2: every address is checked before any permission is installed.
        for peer in msg.peer_addresses() {
            let peer =
                peer.map_err(|_| Rejection::new(ec::BAD_REQUEST, "XOR-PEER-ADDRESS malformed"))?;
            if count == MAX_PEERS_PER_REQUEST {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "too many XOR-PEER-ADDRESS attributes",
                ));
            }
            peers[count] = self
                .checked_peer_ip(id, peer.ip())
                .inspect_err(log_refusal)?;
            count += 1;
        }
        if count == 0 {
            return Err(Rejection::new(ec::BAD_REQUEST, "XOR-PEER-ADDRESS missing"));
        }
        let expires = now.mono + self.settings.lifetimes.permission;
        let max = self.settings.max_permissions;
        let allocation = self
            .table
            .get(id)
            .ok_or(Rejection::new(ec::ALLOCATION_MISMATCH, "no allocation"))?;
        // RFC 8656 §10.2: a refused request installs nothing, so the cap is checked up front.
        let live = allocation.live_permissions(now.mono);
        let new = (0..count)
            .filter(|&i| !peers[..i].contains(&peers[i]))
            .filter(|&i| !allocation.permits(peers[i], now.mono))
            .count();
        if live + new > max {
            return Err(Rejection::new(
                ec::INSUFFICIENT_CAPACITY,
                "too many permissions on this allocation",
            ));
        }
        for ip in &peers[..count] {
            if !self.table.permit(id, *ip, expires, now.mono, max) {
                return Err(Rejection::new(
                    ec::INSUFFICIENT_CAPACITY,
                    "too many permissions on this allocation",
                ));
            }
        }
        Ok(self.signed_success(out, msg, auth, reply::nothing))
    }

    pub(crate) fn channel_bind(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        out: &mut [u8],
    ) -> Answer {
        let id = self.owned_allocation(&from, auth, now)?;
        // RFC 6062 §5.1: a TCP allocation relays through peer data connections, not channels.
        if self.table.get(id).is_some_and(|a| a.tcp) {
            return Err(Rejection::new(
                ec::BAD_REQUEST,
                "a TCP allocation has no channels",
            ));
        }
        let number = match msg.channel_number() {
            Some(Ok(n)) if (MIN_CHANNEL..=MAX_CHANNEL).contains(&n) => n,
            Some(Ok(_)) => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "channel number outside 0x4000-0x7FFE",
                ));
            }
            _ => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "CHANNEL-NUMBER missing or malformed",
                ));
            }
        };
        let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
            Some(Ok(p)) => p,
            _ => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "XOR-PEER-ADDRESS missing or malformed",
                ));
            }
        };
        let peer = self.checked_peer(id, peer).inspect_err(log_refusal)?;
        let scope = self.table.get(id).map(|a| a.scope()).unwrap_or_default();
        let live_gated = self.settings.policy.is_live_gated_for(peer, scope);
        let lifetimes = self.settings.lifetimes;
        let (max_channels, max_permissions) =
            (self.settings.max_channels, self.settings.max_permissions);
        let allocation = self
            .table
            .get(id)
            .ok_or(Rejection::new(ec::ALLOCATION_MISMATCH, "no allocation"))?;
        // RFC 8656 §12.2: a number stays with its peer and a peer with its number.
        let by_number = allocation.channel(number, now.mono).map(|c| c.peer);
        let by_peer = allocation.channel_to(peer, now.mono).map(|c| c.number);
        if by_number.is_some_and(|p| p != peer) || by_peer.is_some_and(|n| n != number) {
            return Err(Rejection::new(
                ec::BAD_REQUEST,
                "channel or peer already bound differently",
            ));
        }
        self.table.expire_channels(id, now.mono);
        // Live channels only are left: the same rule where our advertised and bound
        // addresses meet on the wire (the hairpin).
        if self
            .table
            .wire_channel(id, peer)
            .is_some_and(|n| n != number)
        {
            return Err(Rejection::new(
                ec::BAD_REQUEST,
                "channel or peer already bound differently",
            ));
        }
        let expires = now.mono + lifetimes.channel;
        let is_new = self
            .table
            .get(id)
            .is_some_and(|a| !a.channels.iter().any(|c| c.number == number));
        let count = self.table.get(id).map_or(0, |a| a.channels.len());
        if is_new && count >= max_channels {
            return Err(Rejection::new(
                ec::INSUFFICIENT_CAPACITY,
                "too many channels on this allocation",
            ));
        }
        // RFC 8656 §12.2: binding a channel installs or refreshes the peer's permission. Done
        // before touching the channel, so a refusal leaves no channel behind.
        let permission_expires = now.mono + lifetimes.permission;
        if !self
            .table
            .permit(id, peer.ip(), permission_expires, now.mono, max_permissions)
        {
            return Err(Rejection::new(
                ec::INSUFFICIENT_CAPACITY,
                "too many permissions on this allocation",
            ));
        }
        let channel = Channel {
            number,
            peer,
            expires,
            live_gated,
        };
        self.table.bind_channel(id, channel, now.mono);
        Ok(self.signed_success(out, msg, auth, reply::nothing))
    }

    /// The peers allocation `id` may reach (a self-test allocation: our own relays only).
    fn scope_of(&self, id: AllocId) -> Result<PeerScope, PeerRefusal> {
        self.table
            .get(id)
            .map(|a| a.scope())
            .ok_or(PeerRefusal::Other(Rejection::new(
                ec::ALLOCATION_MISMATCH,
                "no allocation",
            )))
    }

    /// Policy (403) and family (443) checks for a peer IP; returns the canonical IP.
    fn checked_peer_ip(&self, id: AllocId, ip: IpAddr) -> Result<IpAddr, PeerRefusal> {
        let scope = self.scope_of(id)?;
        let ip = self
            .settings
            .policy
            .check_ip_for(ip, scope)
            .map_err(PeerRefusal::Policy)?;
        self.family_check(id, ip)?;
        Ok(ip)
    }

    /// Policy (403, port-aware) and family (443) checks for a peer address; returns it canonical.
    pub(crate) fn checked_peer(
        &self,
        id: AllocId,
        peer: SocketAddr,
    ) -> Result<SocketAddr, PeerRefusal> {
        let scope = self.scope_of(id)?;
        let peer = self
            .settings
            .policy
            .check_for(peer, scope)
            .map_err(PeerRefusal::Policy)?;
        self.family_check(id, peer.ip())?;
        Ok(peer)
    }

    fn family_check(&self, id: AllocId, ip: IpAddr) -> Result<(), PeerRefusal> {
        let allocation = self
            .table
            .get(id)
            .ok_or(Rejection::new(ec::ALLOCATION_MISMATCH, "no allocation"))?;
        if allocation.relay_for(ip).is_none() {
            return Err(PeerRefusal::Other(Rejection::new(
                ec::PEER_ADDRESS_FAMILY_MISMATCH,
                "peer address family differs from the relayed address",
            )));
        }
        Ok(())
    }
}

/// Why a peer was refused: by the peer policy (whose log detail may say more than the client
/// is told) or for another reason.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PeerRefusal {
    /// The peer policy refused it (403).
    Policy(PolicyRejection),
    /// Another rejection (allocation or family mismatch).
    Other(Rejection),
}

impl From<Rejection> for PeerRefusal {
    fn from(r: Rejection) -> Self {
        Self::Other(r)
    }
}

impl From<PeerRefusal> for Rejection {
    fn from(r: PeerRefusal) -> Self {
        match r {
            // What the client is told; `log_refusal` logs the detail.
            PeerRefusal::Policy(p) => Rejection::new(ec::FORBIDDEN, p.reason),
            PeerRefusal::Other(r) => r,
        }
    }
}

/// Logs the internal reason of a policy refusal on the control plane (ChannelBind,
/// CreatePermission), when the client's reason hides it (one of our own addresses).
fn log_refusal(r: &PeerRefusal) {
    if let PeerRefusal::Policy(p) = r
        && p.detail != p.reason
    {
        tracing::debug!(target: "turnstone::relay", detail = p.detail, "peer refused");
    }
}
