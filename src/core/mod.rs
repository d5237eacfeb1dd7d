//! The sans-IO TURN server (DESIGN.md §3): bytes, addresses and time in; replies, forwards and
//! commands out. No sockets, no clock, no threads.

mod allocate;
mod allocation;
mod authn;
mod binding;
pub mod cidr;
mod command;
mod confirm;
mod connect;
mod connection_bind;
mod connections;
mod data;
mod flat;
pub mod keys;
pub mod live_ports;
mod mirror;
mod mirror_sync;
mod nat_discovery;
mod own_addrs;
mod peer_addr;
mod pending;
mod permission;
pub mod policy;
mod quota;
mod relay;
mod reply;
mod request;
mod response_cache;
mod revoke;
mod roles;
mod selftest;
mod server;
mod settings;
mod shared;
mod stats;
mod table;
mod tcp;
mod tokens;

#[cfg(test)]
mod tests;
// Test support for the core's own tests and, with the `testkit` feature, for the fuzz
// targets, benches and integration tests; never in a shipped build.
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use allocation::AllocId;
pub use mirror::{MirrorOp, MirroredChannel};
pub use nat_discovery::NatDiscovery;
pub use quota::Bandwidth;
pub use relay::{
    OpenedRelay, RelayError, RelayId, RelayIdHasher, RelayMap, RelayRequest, RelayToken,
    ReservationId,
};
pub use roles::{ClientAddr, PeerAddr, RelayAddr};
pub(crate) use server::next_random;
pub use server::{Command, Server};
pub use settings::{Lifetimes, RelayFamily, SelftestLimits, Settings};
pub use shared::{AllocationLedger, Ledger, QuotaFull};
pub use stats::{Counters, EndReason, Traffic, UsageRecord};
pub use tcp::{Arrived, BIND_WINDOW, ConnectError, ConnectionId, Direction, TcpRelayed};

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

/// The current time, passed into every input: monotonic for lifetimes, Unix seconds for
/// REST credential expiry and nonces.
#[derive(Clone, Copy, Debug)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Seconds since the Unix epoch.
    pub unix_secs: u64,
}

/// The transport a client reached us over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// A TCP connection.
    Tcp,
    /// A TLS connection over TCP.
    Tls,
}

impl Transport {
    /// Whether messages travel on a byte stream (ChannelData must then be padded, RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// "udp", "tcp" or "tls".
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The client side of an allocation: client address, the server address it reached, transport
/// (RFC 8656 §2: the 5-tuple).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    /// The client's address as seen by the server.
    pub client: ClientAddr,
    /// The listener address the client reached.
    pub server: SocketAddr,
    /// The transport.
    pub transport: Transport,
}

/// Why an input produced nothing to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Not STUN or ChannelData, or broken framing.
    Malformed,
    /// A response or indication we do not act on.
    Ignored,
    /// No allocation for this 5-tuple or relay.
    NoAllocation,
    /// No permission for the peer.
    NoPermission,
    /// ChannelData on a channel that is not bound.
    NoChannel,
    /// The peer address is refused by policy.
    Policy,
    /// Over the allocation's or the server's bandwidth cap.
    Bandwidth,
    /// The reply did not fit the output buffer.
    Internal,
    /// An Allocate waits for its relay socket: [`Server::relay_opened`] answers it (or a
    /// Connect for its peer connection: [`Server::peer_connected`]).
    Pending,
    /// A peer connection over the allocation's cap on connections (RFC 6062).
    Capacity,
}

impl DropReason {
    /// A label for logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Ignored => "ignored",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::NoChannel => "no_channel",
            DropReason::Policy => "policy",
            DropReason::Bandwidth => "bandwidth",
            DropReason::Internal => "internal",
            DropReason::Pending => "pending",
            DropReason::Capacity => "capacity",
        }
    }
}

/// What to do with a client input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Nothing to send.
    Drop(DropReason),
    /// Send `out[..len]` back to the client on the same 5-tuple.
    Reply(usize),
    /// Send `out[..len]` over UDP from the local address `local` to `to`: a Binding answer
    /// that RFC 5780 sends from another of the server's addresses (CHANGE-REQUEST, §7.2) or
    /// to another port of the client's IP (RESPONSE-PORT, §7.5). Only for UDP clients; `to`
    /// has the client's IP, and `local` is one of [`Settings::nat_discovery`]'s addresses.
    ReplyFrom {
        /// The answer's length in the output buffer.
        len: usize,
        /// The server address (a UDP listening socket) to send from.
        local: SocketAddr,
        /// The destination: the client's IP, its port or the RESPONSE-PORT.
        to: SocketAddr,
    },
    /// Send `pkt[payload]` from relay socket `relay` to `peer`.
    Forward {
        /// The relay socket to send from.
        relay: RelayId,
        /// The destination peer.
        peer: PeerAddr,
        /// The payload's position in the input packet.
        payload: Range<usize>,
    },
}

/// The answer to an Allocate that waited for its relay: send `out[..len]` to `to` (over UDP
/// from the listener `to.server`, or on the TCP/TLS connection of `to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// The client that asked.
    pub to: FiveTuple,
    /// The answer's length in the output buffer.
    pub len: usize,
}

/// What to do with a datagram a peer sent to a relay address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerHandled {
    /// Nothing to send.
    Drop(DropReason),
    /// Send `buf[range]` (ChannelData or a Data indication built around the payload) to `client`.
    ToClient {
        /// Where to send it.
        client: FiveTuple,
        /// The message's position in the buffer.
        range: Range<usize>,
    },
}

/// Room the IO layer leaves in front of a peer payload so the core can write a ChannelData
/// header or a Data indication header (20 + 24 + 4 bytes) in place.
pub const PEER_HEADROOM: usize = 48;
/// Room after a peer payload for DATA attribute padding.
pub const PEER_TAILROOM: usize = 4;

/// A refused request: the error code and a plain-words reason for logs and the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// STUN error code.
    pub code: u16,
    /// Why, in plain words.
    pub reason: &'static str,
}

impl Rejection {
    /// A rejection.
    pub const fn new(code: u16, reason: &'static str) -> Self {
        Self { code, reason }
    }
}
