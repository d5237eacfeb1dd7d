//! Connect (RFC 6062 §5.2): the client asks the server to open a TCP connection from the
//! relayed transport address to a peer. The core checks the request and asks IO to connect
//! ([`Command::ConnectPeer`]); the answer, with the CONNECTION-ID or 447, is written once IO
//! confirms ([`Server::peer_connected`]), like an Allocate waits for its relay.

use std::net::SocketAddr;

use crate::proto::{Message, Method, TransactionId, attr, error_code as ec};

use super::allocation::AllocId;
use super::authn::Authenticated;
use super::confirm::answer;
use super::connections::{Connecting, Connection, Origin, State};
use super::permission::PeerRefusal;
use super::reply::Signer;
use super::server::{Command, Server, Timer};
use super::tcp::{BIND_WINDOW, ConnectError, ConnectionId};
use super::{Deferred, FiveTuple, Now, PeerAddr, Rejection};

impl Server {
    /// Checks an authenticated Connect and asks IO to connect; the answer follows
    /// [`Server::peer_connected`].
    pub(crate) fn connect(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
    ) -> Result<(), Rejection> {
        // RFC 6062 §5.2: no allocation on this connection is a 437.
        let id = self.owned_allocation(&from, auth, now)?;
        if !self.table.get(id).is_some_and(|a| a.tcp) {
            return Err(Rejection::new(
                ec::BAD_REQUEST,
                "Connect needs a TCP allocation",
            ));
        }
        let peer = match msg.xor_address(attr::XOR_PEER_ADDRESS) {
            Some(Ok(peer)) => peer,
            _ => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "XOR-PEER-ADDRESS missing or malformed",
                ));
            }
        };
        // RFC 6062 §5.2: a connection the local policy forbids is a 403 (port-aware: the
        // server's own listeners and host addresses are refused whatever the port).
        let peer = self.checked_tcp_peer(id, peer)?;
        let allocation = self
            .table
            .get(id)
            .ok_or(Rejection::new(ec::ALLOCATION_MISMATCH, "no allocation"))?;
        // RFC 6062 §5.2: one Connect per peer address while its connection is being made,
        // waits for its ConnectionBind or relays.
        let exists = allocation.connections.iter().any(|c| {
            self.connections
                .get(*c)
                .is_some_and(|c| c.origin == Origin::Connect && c.peer == peer)
        });
        if exists {
            return Err(Rejection::new(
                ec::CONNECTION_ALREADY_EXISTS,
                "a connection to this peer exists already",
            ));
        }
        // Like UDP relays (RFC 8656 §9), a TCP allocation reaches only the peers its client
        // installed a permission for: the same rule as for peers connecting in (RFC 6062 §5.3).
        if !allocation.permits(peer.ip(), now.mono) {
            return Err(Rejection::new(
                ec::FORBIDDEN,
                "no permission for this peer (CreatePermission first)",
            ));
        }
        if allocation.connections.len() >= self.settings.max_tcp_connections {
            return Err(Rejection::new(
                ec::INSUFFICIENT_CAPACITY,
                "too many peer connections on this allocation",
            ));
        }
        let relay = *allocation
            .relay_for(peer.ip())
            .ok_or(Rejection::new(ec::PEER_ADDRESS_FAMILY_MISMATCH, "no relay"))?;
        let connection = self.new_connection_id();
        let waiting = Connecting {
            client: from,
            tid: msg.transaction_id(),
            key: auth.key,
            macs: auth.macs,
        };
        self.add_connection(
            connection,
            id,
            peer,
            Origin::Connect,
            State::Connecting(waiting),
        );
        self.commands.push_back(Command::ConnectPeer {
            connection,
            relay: relay.id,
            peer: PeerAddr(relay.hairpin_out(peer)),
        });
        Ok(())
    }

    /// Whether `tid` from `from` is a Connect still waiting for IO's connection attempt.
    pub(crate) fn is_connecting(&self, from: &FiveTuple, tid: &TransactionId) -> bool {
        let Some(allocation) = self
            .table
            .id_by_five_tuple(from)
            .and_then(|id| self.table.get(id))
        else {
            return false;
        };
        allocation.connections.iter().any(|c| {
            matches!(self.connections.get(*c).map(|c| c.state),
                Some(State::Connecting(w)) if w.tid == *tid && w.client == *from)
        })
    }

    /// IO's confirmation of a [`Command::ConnectPeer`]: the Connect is answered, with its
    /// CONNECTION-ID or 447 (RFC 6062 §5.2), in `out`, for the control connection io sends it
    /// on. A connection the core forgot meanwhile (its allocation ended) gets a
    /// [`Command::CloseConnection`] instead.
    pub fn peer_connected(
        &mut self,
        now: Now,
        connection: ConnectionId,
        result: Result<(), ConnectError>,
        out: &mut [u8],
    ) -> Option<Deferred> {
        let waiting = match self.connections.get(connection).map(|c| c.state) {
            Some(State::Connecting(waiting)) => waiting,
            Some(_) => return None,
            None => {
                if result.is_ok() {
                    self.commands
                        .push_back(Command::CloseConnection { connection });
                }
                return None;
            }
        };
        let signer = Signer {
            key: &waiting.key,
            macs: waiting.macs,
        };
        // Owned: the arms below change the server (control plane: one copy per answer).
        let software = self.settings.software.clone();
        let software = software.as_deref();
        let (written, code) = match result {
            Ok(()) => {
                // RFC 6062 §5.2: the ConnectionBind has 30 s from now.
                let deadline = now.mono + BIND_WINDOW;
                if let Some(c) = self.connections.get_mut(connection) {
                    c.state = State::Unbound { deadline };
                }
                self.schedule(deadline, Timer::Connection(connection));
                self.counters.requests_ok += 1;
                let written = answer(
                    out,
                    Method::CONNECT,
                    waiting.tid,
                    None,
                    software,
                    signer,
                    |w| w.add_u32(attr::CONNECTION_ID, connection.0).map(drop),
                );
                (written, 200)
            }
            Err(error) => {
                self.remove_connection(connection);
                let rejection = Rejection::new(ec::CONNECTION_TIMEOUT_OR_FAILURE, reason(error));
                self.counters.requests_rejected += 1;
                tracing::info!(target: "turnstone::relay", client = %waiting.client.client,
                    method = Method::CONNECT.name(), code = rejection.code, reason = rejection.reason, "request rejected");
                let written = answer(
                    out,
                    Method::CONNECT,
                    waiting.tid,
                    Some(rejection),
                    software,
                    signer,
                    |_| Ok(()),
                );
                (written, rejection.code)
            }
        };
        // An answer that does not fit `out` is dropped, as for any request.
        let len = written.ok()?;
        self.counters.count_response(Method::CONNECT.name(), code);
        self.cache
            .insert(waiting.client, waiting.tid, &out[..len], now.mono);
        Some(Deferred {
            to: waiting.client,
            len,
        })
    }

    /// RFC 6062 §5.3: an unbound peer data connection is closed when its bind window ends.
    pub(crate) fn bind_window_ended(&mut self, now: Now, connection: ConnectionId) {
        let expired = self
            .connections
            .get(connection)
            .and_then(Connection::deadline)
            .is_some_and(|deadline| deadline <= now.mono);
        if expired {
            tracing::debug!(target: "turnstone::relay", connection = connection.0,
                "peer connection closed: no ConnectionBind within 30 s");
            self.remove_connection(connection);
            self.commands
                .push_back(Command::CloseConnection { connection });
        }
    }

    /// A fresh CONNECTION-ID naming this worker (see [`ConnectionId`]): unpredictable, not 0,
    /// not in use.
    pub(crate) fn new_connection_id(&mut self) -> ConnectionId {
        let (index, count) = self.worker;
        loop {
            let [a, b, c, d, ..] = self.tokens.next_token();
            let random = u32::from_be_bytes([a, b, c, d]);
            let Some(id) = (random - random % count).checked_add(index) else {
                continue;
            };
            let id = ConnectionId(id);
            if id.0 != 0 && !self.connections.contains(id) {
                return id;
            }
        }
    }

    /// Records a new peer data connection of allocation `id` (and schedules its bind window).
    pub(crate) fn add_connection(
        &mut self,
        connection: ConnectionId,
        id: AllocId,
        peer: SocketAddr,
        origin: Origin,
        state: State,
    ) {
        self.connections.insert(
            connection,
            Connection {
                allocation: id,
                peer,
                origin,
                state,
            },
        );
        if let Some(a) = self.table.get_mut(id) {
            a.connections.push(connection);
        }
        if let State::Unbound { deadline } = state {
            self.schedule(deadline, Timer::Connection(connection));
        }
    }

    /// Forgets a peer data connection (its allocation keeps no trace of it).
    pub(crate) fn remove_connection(&mut self, connection: ConnectionId) {
        if let Some(c) = self.connections.remove(connection)
            && let Some(a) = self.table.get_mut(c.allocation)
        {
            a.connections.retain(|&other| other != connection);
        }
    }

    /// The policy (403, port-aware, TCP listeners) and family (443) checks for a TCP peer.
    fn checked_tcp_peer(&self, id: AllocId, peer: SocketAddr) -> Result<SocketAddr, Rejection> {
        let refusal = match self.settings.policy.check_tcp(peer) {
            Ok(peer) => match self.table.get(id).map(|a| a.relay_for(peer.ip()).is_some()) {
                Some(true) => return Ok(peer),
                Some(false) => PeerRefusal::Other(Rejection::new(
                    ec::PEER_ADDRESS_FAMILY_MISMATCH,
                    "peer address family differs from the relayed address",
                )),
                None => {
                    PeerRefusal::Other(Rejection::new(ec::ALLOCATION_MISMATCH, "no allocation"))
                }
            },
            Err(p) => PeerRefusal::Policy(p),
        };
        if let PeerRefusal::Policy(p) = refusal
            && p.detail != p.reason
        {
            tracing::debug!(target: "turnstone::relay", detail = p.detail, "peer refused");
        }
        Err(refusal.into())
    }
}

/// The 447 reason phrase (RFC 6062 §5.2: the attempt failed or timed out).
fn reason(error: ConnectError) -> &'static str {
    match error {
        ConnectError::Timeout => "connection to the peer timed out",
        ConnectError::Failed => "connection to the peer failed",
    }
}
