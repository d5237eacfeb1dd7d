//! RFC 6062 TCP relays: what one worker holds for them under its lock, and what the core's
//! commands do to it. The tasks that use these sockets (accepting peers, connecting to them,
//! splicing a data connection to its peer) are in `tcp_tasks`; this module only keeps state,
//! so that the worker can own it without depending on the tasks.
//!
//! A peer data connection lives in one of four places: being connected (a task, abortable),
//! `waiting` for its ConnectionBind (a plain non-blocking socket nobody reads: RFC 6062 §5.3
//! has the server buffer the peer's data, and the kernel's receive buffer and window do that
//! without bound on our side), `ready` (handed to the data connection whose ConnectionBind
//! succeeded, for the instant between the core's answer and its task taking it), and
//! `spliced` (a task copies both ways; a `Notify` stops it).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::core::{ConnectionId, FiveTuple, PeerAddr, RelayId, RelayMap};

use super::conn_slots::Slot;
use super::ports::RelayPorts;

/// A peer data connection's socket and the connection slot it holds (peers count against the
/// per-source and server-wide TCP connection caps, keyed by the peer's address).
pub(crate) struct PeerSocket {
    pub stream: StdTcpStream,
    pub slot: Slot,
}

/// A TCP relay's port, held while its listening socket is open: dropping it (when the accept
/// task ends, aborted or not) clears the live mark and gives the port back, so the port is
/// never handed out again while the old listener still exists.
pub(crate) struct PortLease {
    pub ports: Arc<RelayPorts>,
    pub addr: SocketAddr,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.ports
            .live_tcp
            .close(self.addr.is_ipv6(), self.addr.port());
        self.ports.give_back(self.addr.is_ipv6(), self.addr.port());
    }
}

/// A task to start on the worker's runtime (the data-plane thread takes these once it has
/// released the lock, in `Datapath::unlocked_work`, and starts them with `tcp_tasks::spawn`).
pub(crate) enum Spawn {
    /// Accept peers on a TCP relay's listening socket.
    Accept {
        relay: RelayId,
        listener: StdTcpListener,
        lease: PortLease,
    },
    /// Connect from a TCP relay's address to a peer (RFC 6062 §5.2).
    Connect {
        connection: ConnectionId,
        local: SocketAddr,
        peer: PeerAddr,
    },
}

/// A peer connection handed to the data connection that bound it.
pub(crate) struct Ready {
    pub connection: ConnectionId,
    pub socket: PeerSocket,
    pub stop: Arc<Notify>,
    /// The allocation's control connection, whose idle timer the relayed bytes reset.
    pub control: Option<FiveTuple>,
}

/// One worker's TCP relay state.
#[derive(Default)]
pub(crate) struct TcpRelays {
    /// Open TCP relays: their address, and their accept task once started.
    listeners: RelayMap<(SocketAddr, Option<AbortHandle>)>,
    /// Tasks to start.
    spawns: Vec<Spawn>,
    connecting: HashMap<ConnectionId, Option<AbortHandle>>,
    waiting: HashMap<ConnectionId, PeerSocket>,
    ready: HashMap<FiveTuple, Ready>,
    spliced: HashMap<ConnectionId, Arc<Notify>>,
}

impl TcpRelays {
    /// A TCP relay was confirmed to the core: its accept task starts with the next spawns.
    pub fn add_listener(&mut self, relay: RelayId, listener: StdTcpListener, lease: PortLease) {
        self.listeners.insert(relay, (lease.addr, None));
        self.spawns.push(Spawn::Accept {
            relay,
            listener,
            lease,
        });
    }

    /// Its accept task started.
    pub fn accepting(&mut self, relay: RelayId, task: AbortHandle) {
        match self.listeners.get_mut(&relay) {
            Some((_, handle)) => *handle = Some(task),
            // Closed before the task started.
            None => task.abort(),
        }
    }

    /// `Command::CloseRelay` for a TCP relay: stops accepting (the lease frees the port once
    /// the task is gone). False when `relay` is no TCP relay.
    pub fn close_listener(&mut self, relay: RelayId) -> bool {
        let Some((_, task)) = self.listeners.remove(&relay) else {
            return false;
        };
        if let Some(task) = task {
            task.abort();
        }
        // Not started yet: dropping the listener and its lease is the close.
        self.spawns
            .retain(|s| !matches!(s, Spawn::Accept { relay: r, .. } if *r == relay));
        true
    }

    /// `Command::ConnectPeer`: a connect task to start. A relay that is gone makes nothing
    /// (the core forgets the connection with its allocation).
    pub fn connect(&mut self, connection: ConnectionId, relay: RelayId, peer: PeerAddr) {
        let Some((local, _)) = self.listeners.get(&relay) else {
            return;
        };
        self.connecting.insert(connection, None);
        self.spawns.push(Spawn::Connect {
            connection,
            local: *local,
            peer,
        });
    }

    /// Its connect task started.
    pub fn connect_started(&mut self, connection: ConnectionId, task: AbortHandle) {
        match self.connecting.get_mut(&connection) {
            Some(handle) => *handle = Some(task),
            None => task.abort(),
        }
    }

    /// The connect task finished (whatever the result): it is no longer abortable.
    pub fn connect_finished(&mut self, connection: ConnectionId) -> bool {
        self.connecting.remove(&connection).is_some()
    }

    /// A peer data connection waits for its ConnectionBind.
    pub fn wait(&mut self, connection: ConnectionId, socket: PeerSocket) {
        self.waiting.insert(connection, socket);
    }

    /// `Command::Splice`: the waiting peer connection goes to the data connection's task.
    pub fn splice(
        &mut self,
        data_connection: FiveTuple,
        connection: ConnectionId,
        control: Option<FiveTuple>,
    ) {
        let Some(socket) = self.waiting.remove(&connection) else {
            return;
        };
        let stop = Arc::new(Notify::new());
        self.spliced.insert(connection, Arc::clone(&stop));
        self.ready.insert(
            data_connection,
            Ready {
                connection,
                socket,
                stop,
                control,
            },
        );
    }

    /// The peer connection the data connection `ft` just bound, if its ConnectionBind succeeded.
    pub fn take_ready(&mut self, ft: &FiveTuple) -> Option<Ready> {
        self.ready.remove(ft)
    }

    /// A splice ended.
    pub fn unsplice(&mut self, connection: ConnectionId) {
        self.spliced.remove(&connection);
    }

    /// `Command::CloseConnection`: closes the peer connection wherever it is.
    pub fn close(&mut self, connection: ConnectionId) {
        if let Some(Some(task)) = self.connecting.remove(&connection) {
            task.abort();
        }
        self.spawns
            .retain(|s| !matches!(s, Spawn::Connect { connection: c, .. } if *c == connection));
        self.waiting.remove(&connection);
        self.ready.retain(|_, r| r.connection != connection);
        if let Some(stop) = self.spliced.remove(&connection) {
            stop.notify_one();
        }
    }

    /// Tasks to start (no allocation when there are none).
    pub fn take_spawns(&mut self) -> Vec<Spawn> {
        std::mem::take(&mut self.spawns)
    }

    /// Closes everything (worker shutdown).
    pub fn clear(&mut self) {
        let relays: Vec<RelayId> = self.listeners.keys().copied().collect();
        for relay in relays {
            self.close_listener(relay);
        }
        let connections: Vec<ConnectionId> = self
            .connecting
            .keys()
            .chain(self.waiting.keys())
            .chain(self.spliced.keys())
            .copied()
            .collect();
        for connection in connections {
            self.close(connection);
        }
        self.spawns.clear();
    }
}
