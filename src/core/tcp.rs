//! TCP relays (RFC 6062): the peer data connections of TCP allocations, as the core tracks
//! them. The sockets themselves belong to the IO layer, which opens and closes them on the
//! core's commands (DESIGN.md §3, request and confirm):
//!
//! - an Allocate with REQUESTED-TRANSPORT TCP asks for a listening socket on the relayed
//!   address ([`super::Command::OpenTcpRelay`], confirmed with [`super::Server::relay_opened`]);
//! - a Connect asks IO to connect from the relayed address to a peer
//!   ([`super::Command::ConnectPeer`], confirmed with [`super::Server::peer_connected`]);
//! - a peer connecting in is reported with [`super::Server::peer_connection_arrived`], which
//!   accepts it (and writes the ConnectionAttempt indication) or refuses it;
//! - a ConnectionBind on a new client connection joins it to its peer connection
//!   ([`super::Command::Splice`]); from then on IO copies raw bytes both ways and reports them
//!   with [`super::Server::handle_tcp_relayed`] (counters, usage, bandwidth caps);
//! - [`super::Command::CloseConnection`] ends a peer connection (and its client data
//!   connection): the 30 s bind window ran out (RFC 6062 §5.3), or its allocation ended.

use std::time::Duration;

/// RFC 6062 §5.3 and §5.2: a peer data connection not bound by a ConnectionBind within 30 s
/// is closed.
pub const BIND_WINDOW: Duration = Duration::from_secs(30);

/// REQUESTED-TRANSPORT of a TCP allocation (RFC 6062 §6.1: the IANA protocol number of TCP).
pub(crate) const TCP: u8 = 6;

/// CONNECTION-ID (RFC 6062 §6.2.1): names one peer data connection across the control
/// connection, the data connection and the IO layer. Unpredictable (the ConnectionBind that
/// names it must also carry the allocation's credentials), and the owning worker is
/// `id % workers` so a data connection reaching another worker finds it
/// ([`super::Server::set_worker`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

impl ConnectionId {
    /// The worker that owns this connection, among `workers`.
    pub fn worker(self, workers: u32) -> u32 {
        self.0 % workers.max(1)
    }
}

/// Why IO could not connect to a peer (answered 447, RFC 6062 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// No answer within the connect timeout.
    #[error("connection to the peer timed out")]
    Timeout,
    /// Refused, unreachable, or the socket could not be set up.
    #[error("connection to the peer failed")]
    Failed,
}

/// A peer connection the core accepted ([`super::Server::peer_connection_arrived`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrived {
    /// Its CONNECTION-ID: IO keeps the socket under it until a ConnectionBind or a close.
    pub connection: ConnectionId,
    /// The ConnectionAttempt indication to send on the control connection, in the output buffer.
    pub indication: super::Deferred,
}

/// What IO does after relaying bytes on a spliced pair ([`super::Server::handle_tcp_relayed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpRelayed {
    /// Carry on.
    Continue,
    /// Over a bandwidth cap: read nothing more from that side for this long (a byte stream
    /// cannot drop, so the cap slows the sender down through TCP flow control instead).
    Wait(Duration),
    /// The connection is gone (its allocation ended): close both sides.
    Closed,
}

/// Which way bytes went on a spliced pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client data connection to the peer.
    ToPeer,
    /// From the peer to the client data connection.
    ToClient,
}
