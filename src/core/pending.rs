//! An Allocate waiting for its relay sockets (DESIGN.md §3: request and confirm): what its
//! answer needs once IO confirms every relay. The confirmation itself is [`super::confirm`].

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Key;
use crate::proto::TransactionId;

use super::Rejection;
use super::ReservationId;
use super::allocation::Relay;
use super::authn::Authenticated;
use super::quota::Bandwidth;
use super::reply::Macs;

/// One Allocate waiting for its relays.
pub(crate) struct Pending {
    pub tid: TransactionId,
    pub username: Arc<str>,
    /// RFC 8489 §9.2.4: the answer is signed with the request's key and MAC kind.
    pub key: Key,
    pub macs: Macs,
    pub lifetime: Duration,
    /// Quota slots taken for this request: the allocation's, plus one for a reserved port.
    pub slots: usize,
    /// EVEN-PORT with the R bit (RFC 8656 §7.2).
    pub reserving: bool,
    /// Confirmed relays, by family (IPv4, IPv6).
    pub opened: [Option<Relay>; 2],
    /// The port + 1 IO holds for a later allocation (R bit).
    pub reservation: Option<ReservationId>,
    /// Confirmations still to come.
    pub waiting: u8,
    /// Why the primary relay failed: the whole Allocate fails.
    pub failed: Option<Rejection>,
    /// Why the additional (IPv6) relay of a dual-stack Allocate failed: ADDRESS-ERROR-CODE.
    pub v6_error: Option<Rejection>,
    /// A self-test Allocate: the slots it took and its bandwidth cap.
    pub selftest: Option<SelftestSlot>,
    /// A TCP allocation (RFC 6062 §5.1): its relays are listening sockets.
    pub tcp: bool,
}

impl Pending {
    pub fn new(
        tid: TransactionId,
        username: Arc<str>,
        auth: &Authenticated<'_>,
        lifetime: Duration,
    ) -> Self {
        Self {
            tid,
            username,
            key: auth.key,
            macs: auth.macs,
            lifetime,
            slots: 1,
            reserving: false,
            opened: [None, None],
            reservation: None,
            waiting: 0,
            failed: None,
            v6_error: None,
            selftest: None,
            tcp: false,
        }
    }
}

/// The slots a self-test Allocate holds while its relay is opened.
#[derive(Clone, Debug)]
pub(crate) struct SelftestSlot {
    /// Its per-source quota key.
    pub source: Arc<str>,
    /// Its bandwidth cap, fixed when it was accepted (a reload cannot lift it).
    pub bandwidth: Bandwidth,
}
