//! Peer data connections after they exist (RFC 6062 §5.3–§5.5): peers connecting in to a
//! relayed transport address (ConnectionAttempt), ConnectionBind joining a new client
//! connection to one, the bytes IO relays between them, and their end.

use crate::proto::error_code as ec;
use crate::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId, attr};

use super::allocate::Answer;
use super::authn::Authenticated;
use super::connections::{Origin, State};
use super::quota::charge;
use super::relay::RelayId;
use super::reply;
use super::server::{Command, Server, next_random};
use super::table::Table;
use super::tcp::{Arrived, BIND_WINDOW, ConnectionId, Direction, TcpRelayed};
use super::{Deferred, DropReason, FiveTuple, Now, PeerAddr, Rejection};

/// The 400 of a ConnectionBind naming no connection this client may bind: unknown, already
/// bound, past its window, or another user's (the same answer for all, so a CONNECTION-ID
/// cannot be probed).
const NOT_WAITING: Rejection = Rejection::new(
    ec::BAD_REQUEST,
    "CONNECTION-ID names no connection waiting for a ConnectionBind",
);

impl Server {
    /// A peer connected to the TCP relay `relay` from `peer` (RFC 6062 §5.3). Accepted when
    /// the allocation has a permission for the peer's IP and room for another connection:
    /// the ConnectionAttempt indication for the control connection is then in `out`, and IO
    /// keeps the socket, unread (RFC 6062 §5.3: its data waits in the kernel, whose receive
    /// window tells the peer to stop), under the CONNECTION-ID for up to 30 s. Refused
    /// otherwise: IO closes the connection at once, and the client hears nothing.
    pub fn peer_connection_arrived(
        &mut self,
        now: Now,
        relay: RelayId,
        peer: PeerAddr,
        out: &mut [u8],
    ) -> Result<Arrived, DropReason> {
        let Some(id) = self.table.id_by_relay(relay) else {
            self.counters.dropped_other += 1;
            return Err(DropReason::NoAllocation);
        };
        let Some(allocation) = self.table.get(id).filter(|a| a.tcp && a.expires > now.mono) else {
            return Err(DropReason::NoAllocation);
        };
        let Some(bound) = allocation.relays.iter().flatten().find(|r| r.id == relay) else {
            return Err(DropReason::NoAllocation);
        };
        // The address the client knows the peer by (our own relay seen from inside).
        let shown = bound.hairpin_in(peer.0);
        // A reload may have tightened the policy since the permission was made.
        let Ok(ip) = self.settings.policy.check_ip(shown.ip()) else {
            self.counters.dropped_policy += 1;
            return Err(DropReason::Policy);
        };
        if !allocation.permits(ip, now.mono) {
            self.counters.dropped_no_permission += 1;
            return Err(DropReason::NoPermission);
        }
        if allocation.connections.len() >= self.settings.max_tcp_connections {
            self.counters.dropped_other += 1;
            return Err(DropReason::Capacity);
        }
        let client = allocation.five_tuple;
        let connection = self.new_connection_id();
        let Some(len) = write_connection_attempt(out, shown, connection, &mut self.rng) else {
            return Err(DropReason::Internal);
        };
        let deadline = now.mono + BIND_WINDOW;
        let state = State::Unbound { deadline };
        self.add_connection(connection, id, shown, Origin::Peer, state);
        tracing::debug!(target: "turnstone::relay", client = %client.client, peer = %shown,
            connection = connection.0, "peer connected to a TCP relay");
        Ok(Arrived {
            connection,
            indication: Deferred { to: client, len },
        })
    }

    /// ConnectionBind (RFC 6062 §5.4) on a new client connection: it becomes the client data
    /// connection of the peer data connection its CONNECTION-ID names, which must be waiting
    /// and belong to an allocation of the same user. After the success response IO splices
    /// the two ([`Command::Splice`]).
    pub(crate) fn connection_bind(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        out: &mut [u8],
    ) -> Answer {
        if !from.transport.is_stream() {
            return Err(Rejection::new(
                ec::BAD_REQUEST,
                "ConnectionBind needs a TCP or TLS connection",
            ));
        }
        // A control connection stays one: its allocation's messages must keep their framing.
        if self.table.id_by_five_tuple(&from).is_some() || self.pending.contains_key(&from) {
            return Err(Rejection::new(
                ec::BAD_REQUEST,
                "ConnectionBind must come on a new connection, not a control connection",
            ));
        }
        let connection = match msg.u32_attr(attr::CONNECTION_ID) {
            Some(Ok(raw)) => ConnectionId(raw),
            _ => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "CONNECTION-ID missing or malformed",
                ));
            }
        };
        let c = self.connections.get(connection).ok_or(NOT_WAITING)?;
        let waiting = c.deadline().is_some_and(|d| d > now.mono);
        // RFC 6062 §5.4: the same credentials as the control connection.
        let control = self
            .table
            .get(c.allocation)
            .filter(|a| a.expires > now.mono && a.username.as_bytes() == auth.username)
            .map(|a| a.five_tuple);
        let Some(control) = control.filter(|_| waiting) else {
            return Err(NOT_WAITING);
        };
        if let Some(c) = self.connections.get_mut(connection) {
            c.state = State::Bound { data: from };
        }
        self.commands.push_back(Command::Splice {
            data_connection: from,
            connection,
            control,
        });
        tracing::debug!(target: "turnstone::relay", client = %from.client,
            connection = connection.0, "client data connection bound");
        Ok(self.signed_success(out, msg, auth, reply::nothing))
    }

    /// IO relayed `bytes` (one read) on the spliced connection `connection` in `direction`:
    /// counted like a relayed datagram (RFC 6062 has no packets, so one read is one packet)
    /// and charged to the bandwidth caps. A stream cannot drop what it read, so a cap turns
    /// into a pause: [`TcpRelayed::Wait`] says how long to leave that side unread.
    pub fn handle_tcp_relayed(
        &mut self,
        now: Now,
        connection: ConnectionId,
        direction: Direction,
        bytes: usize,
    ) -> TcpRelayed {
        let Some(c) = self.connections.get(connection) else {
            return TcpRelayed::Closed;
        };
        let tick = self.table.tick_now(now.mono);
        let Some(slot) = self
            .table
            .counters_mut(Table::slot_of(c.allocation))
            .filter(|s| s.expires > tick)
        else {
            return TcpRelayed::Closed;
        };
        let len = bytes as u64;
        match direction {
            Direction::ToPeer => {
                slot.traffic.packets_to_peer += 1;
                slot.traffic.bytes_to_peer += len;
                self.counters.packets_to_peer += 1;
                self.counters.bytes_to_peer += len;
            }
            Direction::ToClient => {
                slot.traffic.packets_to_client += 1;
                slot.traffic.bytes_to_client += len;
                self.counters.packets_to_client += 1;
                self.counters.bytes_to_client += len;
            }
        }
        let limit = self.settings.worker_bandwidth;
        let wait = charge(
            &mut slot.bucket,
            &mut self.worker_bucket,
            limit,
            now.mono,
            len,
        );
        if wait.is_zero() {
            TcpRelayed::Continue
        } else {
            TcpRelayed::Wait(wait)
        }
    }

    /// IO closed a peer data connection, or it closed by itself, or its client data
    /// connection did (RFC 6062 §5.5: each closes the other): the core forgets it.
    pub fn handle_peer_connection_closed(&mut self, _now: Now, connection: ConnectionId) {
        if let Some(State::Bound { data }) = self.connections.get(connection).map(|c| c.state) {
            tracing::debug!(target: "turnstone::relay", client = %data.client,
                connection = connection.0, "peer data connection closed");
        }
        self.remove_connection(connection);
    }

    /// Peer data connections of this worker (connecting, waiting or spliced).
    pub fn peer_connection_count(&self) -> usize {
        self.connections.len()
    }
}

/// A ConnectionAttempt indication (RFC 6062 §6.1.3: XOR-PEER-ADDRESS and CONNECTION-ID),
/// with FINGERPRINT; its length in `out`, or `None` when it does not fit.
fn write_connection_attempt(
    out: &mut [u8],
    peer: std::net::SocketAddr,
    connection: ConnectionId,
    rng: &mut u64,
) -> Option<usize> {
    let mut id = [0u8; 12];
    id[4..].copy_from_slice(&next_random(rng).to_be_bytes());
    let ty = MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication);
    let mut w = MessageWriter::new(out, ty, TransactionId(id)).ok()?;
    w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).ok()?;
    w.add_u32(attr::CONNECTION_ID, connection.0).ok()?;
    w.add_fingerprint().ok()?;
    Some(w.finish())
}
