//! The boundary to the IO layer's relay sockets (DESIGN.md §3): the core *requests* a socket
//! with [`super::Command::OpenRelay`] and the IO layer *confirms* it with
//! [`super::Server::relay_opened`]; sockets are given back with [`super::Command::CloseRelay`].
//!
//! Request and confirm keep every `bind()` out of the core and out of the worker lock, and let
//! tests script port exhaustion, bind failures and slow binds (see `core::testkit::ScriptedRelays`).

use std::net::IpAddr;

use super::RelayAddr;

/// An IO-assigned id of one relay socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub u64);

/// An IO-assigned id of a port held for a later allocation (RFC 8656 §7.2 EVEN-PORT R bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationId(pub u64);

/// Names one requested relay socket until it is confirmed (unique per worker, never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayToken(pub u64);

/// What relay socket to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayRequest {
    /// Any port in the range, on `ip`.
    Any {
        /// The IP to bind.
        ip: IpAddr,
    },
    /// An even port; with `reserve_next`, also hold port + 1 (RFC 8656 §7.2).
    Even {
        /// The IP to bind.
        ip: IpAddr,
        /// Whether to reserve the next higher port.
        reserve_next: bool,
    },
    /// The port held by an earlier reservation.
    Reserved(ReservationId),
}

/// A relay socket the IO layer opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedRelay {
    /// Its id, used in forwards and in peer input.
    pub id: RelayId,
    /// The bound address.
    pub addr: RelayAddr,
    /// The reservation of port + 1, when asked for.
    pub reservation: Option<ReservationId>,
}

/// Why a relay socket could not be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// Every port in the range is taken (answered 508, RFC 8656 §7.2).
    #[error("no free relay port")]
    Exhausted,
    /// The reservation does not exist (any more).
    #[error("unknown reservation")]
    UnknownReservation,
    /// Another failure from the operating system.
    #[error("relay socket could not be opened")]
    Failed,
}

/// A hasher for [`RelayId`] keys: they are our own sequential numbers, not attacker-chosen,
/// so a multiplicative hash is enough and cheaper than SipHash on the relay path.
#[derive(Clone, Copy, Debug, Default)]
pub struct RelayIdHasher(u64);

impl std::hash::Hasher for RelayIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by relay id.
pub type RelayMap<V> =
    std::collections::HashMap<RelayId, V, std::hash::BuildHasherDefault<RelayIdHasher>>;
