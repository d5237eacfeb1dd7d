//! Allocates waiting for their relay sockets (DESIGN.md §3: request and confirm).
//!
//! An accepted Allocate has taken its quota and emitted one [`Command::OpenRelay`] per relay
//! (two for dual stack, RFC 8656 §7.2 / RFC 6156). It waits here, keyed by its 5-tuple, with
//! what the success response needs (transaction id, the request's key and MAC kind, lifetime),
//! until IO confirms every relay through [`Server::relay_opened`]; then it becomes an
//! allocation and is answered once, and the answer goes into the response cache for later
//! retransmissions (RFC 8489 §6.3.1). A retransmission while it waits is not answered (the
//! confirmation answers it) and opens nothing.
//!
//! A relay confirmed for nobody (the client left, the server shut down) is closed again.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proto::{
    Class, MessageType, MessageWriter, Method, TransactionId, WriteError, attr, error_code as ec,
};

use super::allocate::{FAMILY_V6, add_address_error};
use super::allocation::{Allocation, Relay};
use super::pending::Pending;
use super::quota::TokenBucket;
use super::relay::{OpenedRelay, RelayError, RelayToken};
use super::reply::{self, Signer};
use super::server::{AllocIdKey, Command, RESERVATION_LIFETIME, Server, Timer};
use super::{Deferred, FiveTuple, Now, Rejection};

/// RFC 8656 §7.2: "If the server cannot allocate a relayed transport address [...] 508
/// (Insufficient Capacity)". Exhaustion is exactly that; an unknown reservation is answered
/// like an unknown token (§7.2 step 5, 508); other bind failures are a lack of capacity to
/// the client too — it can retry, possibly elsewhere — so they are 508 rather than 500, which
/// would suggest something wrong with the request.
fn rejection_of(error: RelayError) -> Rejection {
    match error {
        RelayError::Exhausted => Rejection::new(ec::INSUFFICIENT_CAPACITY, "no free relay port"),
        RelayError::UnknownReservation => Rejection::new(
            ec::INSUFFICIENT_CAPACITY,
            "unknown or expired RESERVATION-TOKEN",
        ),
        RelayError::Failed => Rejection::new(
            ec::INSUFFICIENT_CAPACITY,
            "relay socket could not be opened",
        ),
    }
}

impl Server {
    /// Whether `tid` from `from` is an Allocate still waiting for its relay.
    pub(crate) fn is_pending(&self, from: &FiveTuple, tid: &TransactionId) -> bool {
        self.pending.get(from).is_some_and(|p| p.tid == *tid)
    }

    /// Emits the command `open` builds (an OpenRelay, or an OpenTcpRelay for a TCP
    /// allocation) for `pending` (`additional`: the IPv6 relay of a dual stack).
    pub(crate) fn request_relay(
        &mut self,
        from: FiveTuple,
        pending: &mut Pending,
        additional: bool,
        open: impl FnOnce(RelayToken) -> Command,
    ) {
        let token = RelayToken(self.next_relay_token);
        self.next_relay_token += 1;
        self.relay_tokens.insert(token, (from, additional));
        pending.waiting += 1;
        self.commands.push_back(open(token));
    }

    /// IO's confirmation of an [`Command::OpenRelay`]. When it was the last one an Allocate
    /// waited for, the answer is written to `out` and returned with its client; io sends it
    /// like any reply. A relay nobody waits for any more is closed again (a
    /// [`Command::CloseRelay`] follows).
    pub fn relay_opened(
        &mut self,
        now: Now,
        token: RelayToken,
        result: Result<OpenedRelay, RelayError>,
        out: &mut [u8],
    ) -> Option<Deferred> {
        let waiting = self
            .relay_tokens
            .remove(&token)
            .filter(|(from, _)| self.pending.contains_key(from));
        let Some((from, additional)) = waiting else {
            if let Ok(opened) = result {
                self.give_back(opened);
            }
            return None;
        };
        let relay = result.map(|opened| (self.relay_of(opened), opened.reservation));
        let pending = self.pending.get_mut(&from)?;
        match relay {
            Ok((relay, reservation)) => {
                pending.opened[usize::from(relay.bound.is_ipv6())] = Some(relay);
                if !additional {
                    pending.reservation = reservation;
                }
            }
            Err(error) if additional => pending.v6_error = Some(rejection_of(error)),
            Err(error) => pending.failed = Some(rejection_of(error)),
        }
        pending.waiting = pending.waiting.saturating_sub(1);
        if pending.waiting > 0 {
            return None;
        }
        let pending = self.pending.remove(&from)?;
        let len = self.finish(now, from, pending, out)?;
        Some(Deferred { to: from, len })
    }

    /// Drops the Allocate `from` waits with (its client left): quota back now, relays closed
    /// when (or since) they are confirmed.
    pub(crate) fn abandon_pending(&mut self, from: &FiveTuple) {
        let Some(pending) = self.pending.remove(from) else {
            return;
        };
        self.relay_tokens.retain(|_, (owner, _)| owner != from);
        for relay in pending.opened.iter().flatten() {
            self.commands
                .push_back(Command::CloseRelay { relay: relay.id });
        }
        if let Some(reservation) = pending.reservation {
            self.commands
                .push_back(Command::ReleaseReservation { reservation });
        }
        for _ in 0..pending.slots {
            self.shared.release(&pending.username);
        }
        self.release_selftest(pending.selftest.as_ref().map(|s| &*s.source));
    }

    /// Closes what IO opened for a request nobody waits for.
    fn give_back(&mut self, opened: OpenedRelay) {
        self.commands
            .push_back(Command::CloseRelay { relay: opened.id });
        if let Some(reservation) = opened.reservation {
            self.commands
                .push_back(Command::ReleaseReservation { reservation });
        }
    }

    /// The relay as the allocation keeps it: bound and advertised address (behind NAT the
    /// client is told the external IP).
    fn relay_of(&self, opened: OpenedRelay) -> Relay {
        let bound = opened.addr.0;
        let advertised_ip = self
            .settings
            .relay_family(bound.is_ipv6())
            .map_or(bound.ip(), |f| {
                if f.bind == bound.ip() {
                    f.advertised
                } else {
                    bound.ip()
                }
            });
        Relay {
            id: opened.id,
            bound,
            advertised: SocketAddr::new(advertised_ip, bound.port()),
        }
    }

    /// Every relay is confirmed: creates the allocation and writes the success response, or
    /// gives everything back and writes the error; either answer is signed (RFC 8489 §9.2.4)
    /// and remembered for retransmissions.
    fn finish(&mut self, now: Now, from: FiveTuple, p: Pending, out: &mut [u8]) -> Option<usize> {
        let signer = Signer {
            key: &p.key,
            macs: p.macs,
        };
        let written = match p.failed {
            Some(rejection) => {
                for relay in p.opened.iter().flatten() {
                    self.commands
                        .push_back(Command::CloseRelay { relay: relay.id });
                }
                for _ in 0..p.slots {
                    self.shared.release(&p.username);
                }
                self.release_selftest(p.selftest.as_ref().map(|s| &*s.source));
                self.counters.requests_rejected += 1;
                tracing::info!(target: "turnstone::relay", client = %from.client, user = %p.username,
                    method = Method::ALLOCATE.name(), code = rejection.code, reason = rejection.reason, "request rejected");
                let software = self.settings.software.as_deref();
                answer(
                    out,
                    Method::ALLOCATE,
                    p.tid,
                    Some(rejection),
                    software,
                    signer,
                    |_| Ok(()),
                )
            }
            None => {
                let (lifetime, token) = self.create(now, from, &p);
                self.counters.requests_ok += 1;
                let software = self.settings.software.as_deref();
                answer(out, Method::ALLOCATE, p.tid, None, software, signer, |w| {
                    for relay in p.opened.iter().flatten() {
                        w.add_xor_address(attr::XOR_RELAYED_ADDRESS, relay.advertised)?;
                    }
                    w.add_u32(attr::LIFETIME, lifetime)?;
                    if let Some(token) = token {
                        w.add(attr::RESERVATION_TOKEN, &token)?;
                    }
                    w.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.client.addr())?;
                    if let Some(rejection) = p.v6_error {
                        add_address_error(w, FAMILY_V6, rejection)?;
                    }
                    Ok(())
                })
            }
        };
        // An answer that does not fit `out` is dropped, as for any request.
        let len = written.ok()?;
        let code = p.failed.map_or(200, |r| r.code);
        self.counters.count_response(Method::ALLOCATE.name(), code);
        self.cache.insert(from, p.tid, &out[..len], now.mono);
        Some(len)
    }

    /// Inserts the allocation of a fully confirmed Allocate; returns its lifetime in seconds
    /// and the reservation token it hands out (RFC 8656 §7.2 EVEN-PORT R bit).
    fn create(&mut self, now: Now, from: FiveTuple, p: &Pending) -> (u32, Option<[u8; 8]>) {
        // IO could not hold port + 1: the slot taken for it goes back.
        if p.reserving && p.reservation.is_none() {
            self.shared.release(&p.username);
        }
        let token = p.reservation.map(|rid| {
            let token = self.tokens.next_token();
            let expires = now.mono + RESERVATION_LIFETIME;
            self.shared
                .add_reservation(token, rid, expires, &p.username);
            self.reservations.push(token);
            self.schedule(expires, Timer::Reservation(token));
            token
        });
        let expires = now.mono + p.lifetime;
        let allocation = Allocation {
            five_tuple: from,
            username: Arc::clone(&p.username),
            relays: p.opened,
            expires,
            started_unix: now.unix_secs,
            permissions: Vec::new(),
            channels: Vec::new(),
            peers_seen: 0,
            selftest_source: p.selftest.as_ref().map(|s| Arc::clone(&s.source)),
            tcp: p.tcp,
            connections: Vec::new(),
        };
        // A self-test allocation has its own cap, never more than any allocation's.
        let cap = match (&p.selftest, self.settings.allocation_bandwidth) {
            (Some(s), Some(b)) if b.bytes_per_sec < s.bandwidth.bytes_per_sec => Some(b),
            (Some(s), _) => Some(s.bandwidth),
            (None, b) => b,
        };
        let bucket = cap.map(|b| TokenBucket::new(b, now.mono));
        let id = self.table.insert(allocation, bucket, now.mono);
        self.schedule(expires, Timer::Allocation(AllocIdKey(id)));
        self.counters.allocations_created += 1;
        tracing::debug!(target: "turnstone::relay", client = %from.client,
            relays = ?p.opened.iter().flatten().map(|r| r.advertised).collect::<Vec<_>>(), "allocation created");
        (p.lifetime.as_secs() as u32, token)
    }
}

/// Writes the answer of a request that waited for IO (Allocate, RFC 6062 Connect) for
/// transaction `tid`: a success when `error` is `None`.
pub(crate) fn answer(
    out: &mut [u8],
    method: Method,
    tid: TransactionId,
    error: Option<Rejection>,
    software: Option<&str>,
    signer: Signer<'_>,
    body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let class = if error.is_some() {
        Class::Error
    } else {
        Class::Success
    };
    let mut w = MessageWriter::new(out, MessageType::new(method, class), tid)?;
    if let Some(rejection) = error {
        w.add_error_code_with(rejection.code, rejection.reason)?;
    }
    body(&mut w)?;
    reply::seal(w, software, signer)
}
