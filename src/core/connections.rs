//! The peer data connections of TCP allocations (RFC 6062) as the core tracks them: who
//! opened each, where it stands (connecting, waiting for its ConnectionBind, bound), and the
//! table of one worker's connections. The public types are in `tcp`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::auth::Key;
use crate::proto::TransactionId;

use super::FiveTuple;
use super::allocation::AllocId;
use super::reply::Macs;
use super::tcp::ConnectionId;

/// Who opened the peer connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The client's Connect (RFC 6062 §5.2).
    Connect,
    /// The peer connected in (RFC 6062 §5.3).
    Peer,
}

/// A Connect waiting for IO's connection attempt: what its answer needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Connecting {
    pub client: FiveTuple,
    pub tid: TransactionId,
    /// RFC 8489 §9.2.4: the answer is signed with the request's key and MAC kind.
    pub key: Key,
    pub macs: Macs,
}

/// Where a peer data connection stands.
#[derive(Clone, Copy, Debug)]
pub(crate) enum State {
    /// IO is connecting (Connect only).
    Connecting(Connecting),
    /// Connected, waiting for a ConnectionBind until the deadline.
    Unbound { deadline: Instant },
    /// Joined to a client data connection.
    Bound { data: FiveTuple },
}

/// One peer data connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Connection {
    pub allocation: AllocId,
    /// The peer as the client knows it (after the hairpin translation).
    pub peer: SocketAddr,
    pub origin: Origin,
    pub state: State,
}

impl Connection {
    /// The bind deadline, while unbound.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Unbound { deadline } => Some(deadline),
            _ => None,
        }
    }
}

/// Every peer data connection of one worker, by CONNECTION-ID. Each allocation also lists its
/// own (`Allocation::connections`), bounded by `Settings::max_tcp_connections`.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    map: HashMap<ConnectionId, Connection, foldhash::fast::RandomState>,
}

impl Connections {
    pub fn get(&self, id: ConnectionId) -> Option<&Connection> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: ConnectionId) -> Option<&mut Connection> {
        self.map.get_mut(&id)
    }

    pub fn contains(&self, id: ConnectionId) -> bool {
        self.map.contains_key(&id)
    }

    pub fn insert(&mut self, id: ConnectionId, connection: Connection) {
        self.map.insert(id, connection);
    }

    pub fn remove(&mut self, id: ConnectionId) -> Option<Connection> {
        self.map.remove(&id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Every connection id (shutdown).
    pub fn ids(&self) -> Vec<ConnectionId> {
        self.map.keys().copied().collect()
    }
}
