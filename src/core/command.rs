//! What the core asks of the IO layer besides replies (DESIGN.md §3): sockets to open and
//! close, connections to make and join (RFC 6062), usage records to write.

use super::relay::{RelayId, RelayRequest, RelayToken, ReservationId};
use super::stats::UsageRecord;
use super::tcp::ConnectionId;
use super::{FiveTuple, PeerAddr};

/// Work for the IO layer that is not a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// An allocation ended: write its usage record.
    Usage(UsageRecord),
    /// Open a relay socket, then confirm it with [`super::Server::relay_opened`] under `token`, also
    /// when it failed: the Allocate waiting for it is answered only then (DESIGN.md §3).
    OpenRelay {
        /// Names this request in the confirmation.
        token: RelayToken,
        /// Family (the IP to bind), EVEN-PORT and its R bit, or a reservation to claim.
        request: RelayRequest,
        /// Set the DF bit on what the relay sends (RFC 8656 §7.2, DONT-FRAGMENT).
        dont_fragment: bool,
    },
    /// Close a relay socket and give its port back (its allocation ended, or nobody waits
    /// for it any more).
    CloseRelay {
        /// The relay, as confirmed.
        relay: RelayId,
    },
    /// Close a held port (RFC 8656 §7.2 EVEN-PORT R bit) whose reservation lapsed or was never
    /// handed out.
    ReleaseReservation {
        /// The reservation, as confirmed.
        reservation: ReservationId,
    },
    /// RFC 6062 §5.1: open a TCP listening socket on a free relay port of `ip` for a TCP
    /// allocation, then confirm it with [`super::Server::relay_opened`] under `token` (like
    /// [`Command::OpenRelay`]); [`Command::CloseRelay`] closes it. Peers connecting to it are
    /// reported with [`super::Server::peer_connection_arrived`].
    OpenTcpRelay {
        /// Names this request in the confirmation.
        token: RelayToken,
        /// The IP to listen on.
        ip: std::net::IpAddr,
    },
    /// RFC 6062 §5.2: connect from the relayed transport address of `relay` to `peer` (within
    /// IO's connect timeout), then confirm with [`super::Server::peer_connected`], also on failure.
    ConnectPeer {
        /// Names the peer data connection from now on.
        connection: ConnectionId,
        /// The TCP relay whose address is the local end.
        relay: RelayId,
        /// The remote end.
        peer: PeerAddr,
    },
    /// RFC 6062 §5.4: a ConnectionBind succeeded on `data_connection`: after its success
    /// response, that client connection carries raw bytes to and from the peer connection.
    Splice {
        /// The client data connection.
        data_connection: FiveTuple,
        /// The peer data connection.
        connection: ConnectionId,
        /// The allocation's control connection: what is relayed is its allocation's traffic
        /// (TCP/TLS idle timeout), though it never crosses it.
        control: FiveTuple,
    },
    /// Close a peer data connection and, once spliced, its client data connection (RFC 6062
    /// §5.3: not bound in time; or its allocation ended). Also sent for a connection IO
    /// confirmed after the core forgot it.
    CloseConnection {
        /// The peer data connection.
        connection: ConnectionId,
    },
}
