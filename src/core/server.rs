//! The per-worker server: dispatches client and peer input, owns the allocation table and timers.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::{CredentialStore, Nonces};
use crate::proto::{self, Class, Message, Method, error_code as ec};

use super::allocation::AllocId;
use super::authn::Authenticated;
pub use super::command::Command;
use super::connections::Connections;
use super::pending::Pending;
use super::quota::TokenBucket;
use super::relay::{RelayId, RelayToken};
use super::response_cache::ResponseCache;
use super::settings::Settings;
use super::shared::{AllocationLedger, Shared};
use super::stats::{Counters, EndReason, UsageRecord};
use super::table::Table;
use super::tcp::ConnectionId;
use super::tokens::TokenSource;
use super::{DropReason, FiveTuple, Handled, Now, PeerAddr, PeerHandled, Rejection, RelayAddr};

/// RFC 8656 §7.2: an unclaimed reservation lapses after about 30 s.
pub(crate) const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    Allocation(AllocIdKey),
    Reservation([u8; 8]),
    /// RFC 6062 §5.3: the bind window of an unbound peer data connection.
    Connection(ConnectionId),
}

/// `AllocId` ordered only so it can sit in the timer heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AllocIdKey(pub AllocId);

impl PartialOrd for AllocIdKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for AllocIdKey {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// 200 for a success response, else its ERROR-CODE.
fn response_code(response: &[u8]) -> u16 {
    match Message::parse(response) {
        Ok(m) if m.class() == Class::Error => {
            m.error_code().and_then(Result::ok).map_or(0, |e| e.code)
        }
        _ => 200,
    }
}

/// The sans-IO TURN server of one worker.
pub struct Server {
    pub(crate) settings: Settings,
    pub(crate) credentials: Arc<CredentialStore>,
    pub(crate) nonces: Nonces,
    pub(crate) shared: Shared,
    pub(crate) table: Table,
    pub(crate) timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Reservation tokens this worker issued, for releasing them at shutdown.
    pub(crate) reservations: Vec<[u8; 8]>,
    pub(crate) cache: ResponseCache,
    pub(crate) commands: VecDeque<Command>,
    /// Allocates waiting for their relay sockets, by client 5-tuple (see `pending`).
    pub(crate) pending: HashMap<FiveTuple, Pending>,
    /// Which pending Allocate each requested relay belongs to (`true`: the additional family).
    pub(crate) relay_tokens: HashMap<RelayToken, (FiveTuple, bool)>,
    pub(crate) next_relay_token: u64,
    pub(crate) counters: Counters,
    /// This worker's share of the total bandwidth cap.
    pub(crate) worker_bucket: Option<TokenBucket>,
    /// Refusing new allocations (SIGTERM drain).
    pub(crate) draining: bool,
    /// Data indication transaction ids (not secret: they only need to differ).
    pub(crate) rng: u64,
    /// Reservation tokens (secret: a token is the right to a reserved port).
    pub(crate) tokens: TokenSource,
    /// Peer data connections of TCP allocations (RFC 6062).
    pub(crate) connections: Connections,
    /// This worker's index and the worker count: CONNECTION-IDs are `index` modulo `count`.
    pub(crate) worker: (u32, u32),
}

impl Server {
    /// A server; `nonce_key` and `seed` come from OS randomness in production. `ledger` is
    /// the quota counts and port reservations every worker's server shares (io's is
    /// thread-safe; the test kit's is `TestLedger`).
    pub fn new(
        settings: Settings,
        credentials: Arc<CredentialStore>,
        nonce_key: [u8; 32],
        ledger: Arc<dyn AllocationLedger>,
        seed: u64,
    ) -> Self {
        let nonces = Nonces::new(nonce_key, settings.lifetimes.nonce.as_secs());
        Self {
            settings,
            credentials,
            nonces,
            shared: Shared::new(ledger),
            table: Table::default(),
            timers: BinaryHeap::new(),
            reservations: Vec::new(),
            cache: ResponseCache::new(1024),
            commands: VecDeque::new(),
            pending: HashMap::new(),
            relay_tokens: HashMap::new(),
            next_relay_token: 1,
            counters: Counters::default(),
            worker_bucket: None,
            draining: false,
            rng: seed,
            tokens: TokenSource::new(&nonce_key, seed),
            connections: Connections::default(),
            worker: (0, 1),
        }
    }

    /// Tells the core which of `count` workers it serves (default: the only one), so that the
    /// CONNECTION-IDs it hands out name it (RFC 6062 §5.4: a ConnectionBind arrives on a new
    /// connection, which the kernel may give to any worker; IO routes it by
    /// [`ConnectionId::worker`]).
    pub fn set_worker(&mut self, index: u32, count: u32) {
        let count = count.max(1);
        self.worker = (index % count, count);
    }

    /// Replaces users and secrets (SIGHUP reload); allocations keep their keys.
    pub fn set_credentials(&mut self, credentials: Arc<CredentialStore>) {
        self.credentials = credentials;
    }

    /// Replaces limits, lifetimes and peer policy (SIGHUP reload). Existing allocations keep
    /// their relays; permissions and channels the new policy refuses are revoked at once. A
    /// policy without the host's addresses (their read failed) keeps the ones in use.
    pub fn set_settings(&mut self, mut settings: Settings) {
        if !settings.policy.knows_host_ips() && self.settings.policy.knows_host_ips() {
            let known = self.settings.policy.host_ips().to_vec();
            settings.policy.set_host_ips(known);
        }
        self.nonces.set_lifetime(settings.lifetimes.nonce.as_secs());
        self.settings = settings;
        self.worker_bucket = None;
        self.revoke_refused();
    }

    /// Starts or stops draining: new Allocates are refused (300 to the alternate server when
    /// one is configured, else 508) while existing allocations keep relaying.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Handles bytes from a client: STUN or ChannelData (RFC 8656 §12). An Allocate is
    /// answered later, by [`Server::relay_opened`] ([`DropReason::Pending`] meanwhile).
    pub fn handle_client(
        &mut self,
        now: Now,
        from: FiveTuple,
        pkt: &[u8],
        out: &mut [u8],
    ) -> Handled {
        if proto::looks_like_channel_data(pkt) {
            return self.channel_data_from_client(now, from, pkt);
        }
        let Ok(msg) = Message::parse(pkt) else {
            self.counters.dropped_malformed += 1;
            return Handled::Drop(DropReason::Malformed);
        };
        match msg.class() {
            Class::Request => {
                let handled = self.handle_request(now, from, &msg, out);
                if let Handled::Reply(n) | Handled::ReplyFrom { len: n, .. } = handled {
                    let code = response_code(&out[..n]);
                    self.counters.count_response(msg.method().name(), code);
                }
                handled
            }
            // RFC 8489 §6.3.2: an indication with unknown comprehension-required
            // attributes is discarded.
            Class::Indication
                if msg.method() == Method::SEND && !msg.unknown_required().is_empty() =>
            {
                self.counters.dropped_malformed += 1;
                Handled::Drop(DropReason::Malformed)
            }
            Class::Indication if msg.method() == Method::SEND => {
                self.send_indication(now, from, &msg, pkt)
            }
            _ => Handled::Drop(DropReason::Ignored),
        }
    }

    /// Handles a datagram a peer sent to relay socket `relay`. The payload is `buf[payload]`;
    /// the IO layer leaves [`super::PEER_HEADROOM`] bytes before it and [`super::PEER_TAILROOM`] after.
    pub fn handle_peer(
        &mut self,
        now: Now,
        relay: RelayId,
        peer: PeerAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> PeerHandled {
        self.data_from_peer(now, relay, peer, buf, payload)
    }

    /// A TCP/TLS client connection closed: its allocation goes with it (RFC 8656 §5), and so
    /// does an Allocate still waiting for its relay.
    pub fn handle_connection_closed(&mut self, now: Now, five_tuple: FiveTuple) {
        self.abandon_pending(&five_tuple);
        if let Some(id) = self.table.id_by_five_tuple(&five_tuple) {
            self.end_allocation(now, id, EndReason::ConnectionClosed);
        }
    }

    /// Expires allocations and reservations whose time has come.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > now.mono {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Allocation(AllocIdKey(id)) => {
                    if self.table.get(id).is_some_and(|a| a.expires <= now.mono) {
                        self.end_allocation(now, id, EndReason::Expired);
                    }
                }
                Timer::Connection(id) => self.bind_window_ended(now, id),
                Timer::Reservation(token) => {
                    self.reservations.retain(|t| *t != token);
                    if let Some(rid) = self.shared.expire_reservation(&token, now.mono) {
                        self.commands
                            .push_back(Command::ReleaseReservation { reservation: rid });
                    }
                }
            }
        }
    }

    /// Ends every allocation (shutdown).
    pub fn close_all(&mut self, now: Now) {
        let waiting: Vec<FiveTuple> = self.pending.keys().copied().collect();
        for five_tuple in waiting {
            self.abandon_pending(&five_tuple);
        }
        for id in self.table.ids() {
            self.end_allocation(now, id, EndReason::Shutdown);
        }
        // Every connection belongs to an allocation, so none is left; defence in depth.
        for connection in self.connections.ids() {
            self.remove_connection(connection);
            self.commands
                .push_back(Command::CloseConnection { connection });
        }
        for token in std::mem::take(&mut self.reservations) {
            if let Some(rid) = self.shared.take_reservation(&token) {
                self.commands
                    .push_back(Command::ReleaseReservation { reservation: rid });
            }
        }
    }

    /// Adds a deadline. Refreshes and early deletions leave stale entries behind; when they
    /// outnumber the live ones the heap is rebuilt, so churn cannot grow it.
    pub(crate) fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
        let live = self.table.len() + self.reservations.len() + self.connections.len();
        if self.timers.len() > 1024 && self.timers.len() > 2 * live {
            let table = &self.table;
            let reservations = &self.reservations;
            let connections = &self.connections;
            self.timers.retain(|Reverse((at, timer))| match timer {
                Timer::Allocation(AllocIdKey(id)) => {
                    table.get(*id).is_some_and(|a| a.expires == *at)
                }
                Timer::Reservation(token) => reservations.contains(token),
                Timer::Connection(id) => connections
                    .get(*id)
                    .is_some_and(|c| c.deadline() == Some(*at)),
            });
            self.timers.shrink_to(2 * live);
        }
    }

    /// The next instant `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The next command for the IO layer: relay sockets to open or close, usage records.
    pub fn next_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// Counters since start.
    pub fn counters(&self) -> Counters {
        self.counters.clone()
    }

    /// Whether `five_tuple` holds a live allocation. Only an authenticated, successful
    /// Allocate creates one (RFC 8656 §7.2), so for a TCP/TLS connection this means "has
    /// authenticated, and what it sends now can belong to its allocation".
    pub fn has_allocation(&self, five_tuple: &FiveTuple) -> bool {
        self.table.id_by_five_tuple(five_tuple).is_some()
    }

    /// Live allocations on this worker.
    pub fn allocation_count(&self) -> usize {
        self.table.len()
    }

    /// Live allocations across all workers.
    pub fn shared_allocations(&self) -> u32 {
        self.shared.total()
    }

    pub(crate) fn end_allocation(&mut self, now: Now, id: AllocId, reason: EndReason) {
        let Some((allocation, traffic)) = self.table.remove(id) else {
            return;
        };
        // RFC 6062 §5: the peer data connections (and their client data connections) go
        // with their allocation.
        for &connection in &allocation.connections {
            self.connections.remove(connection);
            self.commands
                .push_back(Command::CloseConnection { connection });
        }
        for relay in allocation.relays.iter().flatten() {
            self.commands
                .push_back(Command::CloseRelay { relay: relay.id });
        }
        self.shared.release(&allocation.username);
        self.release_selftest(allocation.selftest_source.as_deref());
        self.counters.allocations_ended += 1;
        self.counters.ended_by_reason[reason.index()] += 1;
        tracing::debug!(target: "turnstone::relay", client = %allocation.five_tuple.client,
            user = %allocation.username, reason = reason.name(), "allocation ended");
        let record = UsageRecord {
            user: allocation.username.to_string(),
            five_tuple: allocation.five_tuple,
            relays: allocation
                .relays
                .iter()
                .flatten()
                .map(|r| RelayAddr(r.advertised))
                .collect(),
            tcp_relay: allocation.tcp,
            peers: allocation.peers_seen,
            traffic,
            started_unix: allocation.started_unix,
            ended_unix: now.unix_secs,
            reason,
        };
        match &mut self.table.flat.mirror {
            // What the kernel relayed since its last count is added before the record leaves.
            Some(mirror) => mirror.hold(Table::slot_of(id), record),
            None => self.commands.push_back(Command::Usage(record)),
        }
    }

    /// The allocation of `from`, checked to belong to the authenticated user (RFC 8656 §7: 437, 441).
    pub(crate) fn owned_allocation(
        &self,
        from: &FiveTuple,
        auth: &Authenticated<'_>,
        now: Now,
    ) -> Result<AllocId, Rejection> {
        let mismatch = Rejection::new(ec::ALLOCATION_MISMATCH, "no allocation for this 5-tuple");
        let id = self.table.id_by_five_tuple(from).ok_or(mismatch)?;
        let allocation = self.table.get(id).ok_or(mismatch)?;
        // An allocation past its lifetime is gone even if the timer has not run yet.
        if allocation.expires <= now.mono {
            return Err(mismatch);
        }
        if allocation.username.as_bytes() != auth.username {
            return Err(Rejection::new(
                ec::WRONG_CREDENTIALS,
                "allocation belongs to another username",
            ));
        }
        Ok(id)
    }
}

/// splitmix64: a pseudo-random 64-bit value from `state` (Data indication transaction ids).
pub(crate) fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
