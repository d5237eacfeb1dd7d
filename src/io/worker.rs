//! One worker's shared state: the sans-IO core, its relay sockets and its TCP/TLS client
//! connections, behind one per-worker mutex. Two threads use it: the data-plane thread (UDP
//! listeners, relay sockets and TCP/TLS client connections on one raw epoll loop, see
//! `datapath`), which holds it while it serves a wake-up's batch, and the stream thread (a
//! current_thread tokio runtime), which takes it for what is rare: a connection accepted or a
//! TLS handshake finished (handed over in [`Core::incoming`]), reloads, and RFC 6062 TCP
//! relays. On a running relay the stream thread sleeps, so the lock is uncontended: two
//! atomic operations per wake-up.
//!
//! Relay sockets are opened on the core's request (DESIGN.md §3): the data-plane thread takes
//! the `OpenRelay` commands out under the lock, binds them from the shared port pool after
//! releasing it, and takes the lock once more to watch the sockets and confirm them
//! ([`Worker::open_relays`]); the core then writes the Allocate's answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::core::{Command, FiveTuple, Now, Server, Transport};

use super::fastpath::WorkerMirror;
use super::forward::{FORWARD_BATCH, FORWARD_MAX, ForwardBatch};
use super::relay::{self, Open, Relays};
use super::shared::{Control, IoShared};
use super::spec::{StreamLimits, UsageSink};
use super::streams::{Adopted, Streams};
use super::tcp_relay::{PortLease, TcpRelays};
use crate::sys::poller::{Poller, Waker};

/// What both threads of a worker change: the core, its relays and its stream clients.
pub(crate) struct Core {
    pub server: Server,
    pub relays: Relays,
    /// TCP/TLS client connections (served by the data-plane thread).
    pub streams: Streams,
    /// Connections the stream thread accepted (and negotiated TLS with), for the data-plane
    /// thread to take over at its next wake-up.
    pub incoming: Vec<Adopted>,
    /// Forwards from TCP/TLS clients, collected while one connection's frames are handled
    /// and sent before the next (one per worker: one connection is served at a time).
    pub stream_forwards: ForwardBatch,
    /// Stream connections whose writes failed at the last flush, to close.
    broken: Vec<usize>,
    usage: UsageSink,
    /// Relay sockets the core asked for, to bind once the lock is released
    /// ([`Worker::open_relays`]).
    opens: Vec<Open>,
    /// The kernel fast path's copy of this worker's flat tables, when it is active.
    pub mirror: Option<WorkerMirror>,
    /// RFC 6062 TCP relays: listeners, peer data connections, tasks to start.
    pub tcp: TcpRelays,
}

impl Core {
    /// Peer data for a stream client: dropped when the client has too much waiting (a
    /// stalled client), otherwise written at the next [`Core::flush_streams`].
    pub fn send_to_stream(&mut self, client: &FiveTuple, data: &[u8]) {
        self.streams.push(client, data);
    }

    /// An answer to a stream client's request (an Allocate confirmed, a Connect finished):
    /// never dropped.
    pub fn answer_stream(&mut self, client: &FiveTuple, data: &[u8]) {
        if let Some(index) = self.streams.index_of(client) {
            if let Some(conn) = self.streams.get_mut(index) {
                conn.reply(data);
                conn.traffic_seen = true;
            }
            self.streams.schedule(index);
        }
    }

    /// Writes what the stream clients were given: one `send` per client per batch. Call it
    /// before releasing the lock; connections whose writes failed are closed.
    pub fn flush_streams(&mut self) {
        if !self.streams.has_flushes() {
            return;
        }
        let now = super::clock::now().mono;
        let mut broken = std::mem::take(&mut self.broken);
        self.streams.flush(now, &mut broken);
        for index in broken.drain(..) {
            self.close_stream(index, "write failed");
        }
        self.broken = broken;
    }

    /// Closes stream connection `index`: its allocation ends with it (RFC 8656 §3.1).
    pub fn close_stream(&mut self, index: usize, why: &'static str) {
        let Some(mut conn) = self.streams.take(index) else {
            return;
        };
        conn.say_goodbye();
        self.streams.forget(index, &conn);
        tracing::debug!(target: "turnstone::io", client = %conn.ft.client, reason = why, "connection closed");
        if conn.dropped > 0 {
            tracing::debug!(target: "turnstone::io", client = %conn.ft.client, dropped = conn.dropped, "peer data dropped: the client read too slowly");
        }
        self.server
            .handle_connection_closed(super::clock::now(), conn.ft);
        self.drain_commands();
    }

    /// Whether the core asked for relays that are not bound yet.
    pub fn has_opens(&mut self) -> bool {
        self.drain_commands();
        !self.opens.is_empty()
    }

    /// Carries out the core's commands: closes relays and held ports and hands usage records
    /// to the sink now; relays to open are kept for [`Core::take_opens`], since binding waits
    /// until the lock is released.
    pub fn drain_commands(&mut self) {
        // First: mirror changes read the kernel's last counts into ended allocations' usage
        // records, which then join the commands.
        if let Some(mirror) = &mut self.mirror {
            mirror.sync(&mut self.server);
        }
        while let Some(command) = self.server.next_command() {
            match command {
                Command::Usage(record) => (self.usage)(record),
                Command::OpenRelay {
                    token,
                    request,
                    dont_fragment,
                } => self.opens.push(Open {
                    token,
                    request,
                    dont_fragment,
                    tcp: false,
                }),
                Command::OpenTcpRelay { token, ip } => self.opens.push(Open {
                    token,
                    request: crate::core::RelayRequest::Any { ip },
                    dont_fragment: false,
                    tcp: true,
                }),
                Command::CloseRelay { relay } => {
                    if !self.tcp.close_listener(relay) {
                        self.relays.close(relay);
                    }
                }
                Command::ConnectPeer {
                    connection,
                    relay,
                    peer,
                } => self.tcp.connect(connection, relay, peer),
                Command::Splice {
                    data_connection,
                    connection,
                    control,
                } => self.tcp.splice(data_connection, connection, Some(control)),
                Command::CloseConnection { connection } => self.tcp.close(connection),
                Command::ReleaseReservation { reservation } => self.relays.release(reservation),
            }
        }
    }

    /// The relays to open (see [`Worker::open_relays`]); no allocation when there are none.
    pub fn take_opens(&mut self) -> Vec<Open> {
        self.drain_commands();
        std::mem::take(&mut self.opens)
    }

    /// Expires allocations; returns how long until the core's next deadline.
    pub fn tick(&mut self, now: Now) -> Option<Duration> {
        self.server.handle_timeout(now);
        self.drain_commands();
        self.server
            .poll_timeout()
            .map(|at| at.saturating_duration_since(now.mono))
    }

    /// Ends every allocation and closes every relay and connection (shutdown).
    pub fn close_all(&mut self, now: Now) {
        for index in self.streams.indices() {
            if let Some(conn) = self.streams.take(index) {
                self.streams.forget(index, &conn);
            }
        }
        self.server.close_all(now);
        self.drain_commands();
        self.relays.clear();
        self.tcp.clear();
    }
}

/// State shared by the two threads of one worker.
pub(crate) struct Worker {
    core: Mutex<Core>,
    pub limits: StreamLimits,
    pub shared: Arc<IoShared>,
    /// Worker 0 also publishes process-wide metrics and does limiter housekeeping.
    pub index: usize,
    /// Wakes the data-plane thread (shutdown).
    pub waker: Waker,
    stop: AtomicBool,
    /// Signalled when the data-plane thread ends, so the stream side does not outlive it
    /// (its allocations' timers run there).
    pub data_plane_ended: Notify,
    /// Every worker, for ConnectionBinds naming another worker's connection (RFC 6062).
    pub set: Arc<WorkerSet>,
    /// The worker's stream runtime, for tasks the data-plane thread starts (RFC 6062).
    pub runtime: tokio::runtime::Handle,
}

impl Worker {
    #[allow(
        clippy::too_many_arguments,
        reason = "one constructor, called once per worker"
    )]
    pub fn new(
        mut server: Server,
        poller: Poller,
        usage: UsageSink,
        limits: StreamLimits,
        shared: Arc<IoShared>,
        index: usize,
        waker: Waker,
        set: Arc<WorkerSet>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        server.set_worker(
            u32::try_from(index).unwrap_or(0),
            u32::try_from(set.count()).unwrap_or(1),
        );
        let worker = Arc::new(Worker {
            core: Mutex::new(Core {
                server,
                relays: Relays::new(Arc::clone(&shared.ports), poller.clone()),
                streams: Streams::new(poller, limits),
                incoming: Vec::new(),
                stream_forwards: ForwardBatch::new(FORWARD_BATCH, FORWARD_MAX),
                broken: Vec::new(),
                usage,
                opens: Vec::new(),
                mirror: None,
                tcp: TcpRelays::default(),
            }),
            limits,
            shared,
            index,
            waker,
            stop: AtomicBool::new(false),
            data_plane_ended: Notify::new(),
            set: Arc::clone(&set),
            runtime,
        });
        set.register(index, &worker);
        worker
    }

    /// The core, for one batch of work. parking_lot's mutex: the data-plane thread hands it
    /// over fairly between sockets (`MutexGuard::bump`), so a saturated UDP load cannot starve
    /// TCP/TLS clients and reloads.
    pub fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock()
    }

    /// Opens the relays the core asked for (DESIGN.md §3): binds them from the port pool
    /// *without* the worker lock — call it after releasing the lock — then takes the lock once
    /// to watch them and confirm them to the core. Answers to UDP clients are returned as
    /// (5-tuple, bytes); answers to TCP/TLS clients go to their output.
    pub fn open_relays(&self, now: Now, opens: Vec<Open>) -> Vec<(FiveTuple, Vec<u8>)> {
        let mut answers = Vec::new();
        if opens.is_empty() {
            return answers;
        }
        let ports = &self.shared.ports;
        let (tcp, udp): (Vec<Open>, Vec<Open>) = opens.into_iter().partition(|o| o.tcp);
        let bound: Vec<relay::Bound> = udp.into_iter().map(|o| relay::bind(ports, o)).collect();
        let bound_tcp: Vec<relay::BoundTcp> =
            tcp.into_iter().map(|o| relay::bind_tcp(ports, o)).collect();
        let mut core = self.lock();
        let core = &mut *core;
        let mut confirmations = Vec::with_capacity(bound.len() + bound_tcp.len());
        for bound in bound {
            confirmations.push((bound.token, core.relays.register(bound)));
        }
        for bound in bound_tcp {
            confirmations.push((bound.token, register_tcp(core, bound.result)));
        }
        // Room for any Allocate answer (two relayed addresses, a token, an address error).
        let mut out = [0u8; 1024];
        for (token, result) in confirmations {
            let Some(answer) = core.server.relay_opened(now, token, result, &mut out) else {
                continue;
            };
            let bytes = &out[..answer.len];
            match answer.to.transport {
                Transport::Udp => answers.push((answer.to, bytes.to_vec())),
                Transport::Tcp | Transport::Tls => core.answer_stream(&answer.to, bytes),
            }
        }
        core.flush_streams();
        // Relays confirmed for nobody (the client left meanwhile) are closed right away.
        core.drain_commands();
        answers
    }

    /// Hands a connection the stream thread accepted (and negotiated TLS with) to the
    /// data-plane thread.
    pub fn adopt(&self, adopted: Adopted) {
        self.lock().incoming.push(adopted);
        self.waker.wake();
    }

    /// Asks the data-plane thread to end every allocation and exit.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether [`Worker::stop`] was called.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// Registers a TCP relay's listening socket (RFC 6062 §5.1): a relay id, its port marked
/// live for TCP peers, its accept task queued for the stream thread.
fn register_tcp(
    core: &mut Core,
    bound: Result<std::net::TcpListener, crate::core::RelayError>,
) -> Result<crate::core::OpenedRelay, crate::core::RelayError> {
    let listener = bound?;
    let ports = std::sync::Arc::clone(core.relays.ports());
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(_) => return Err(crate::core::RelayError::Failed),
    };
    // From here the lease gives the port back whatever happens to the listener.
    let lease = PortLease { ports, addr };
    lease.ports.live_tcp.open(addr.is_ipv6(), addr.port());
    let id = core.relays.next_id();
    core.tcp.add_listener(id, listener, lease);
    Ok(crate::core::OpenedRelay {
        id,
        addr: crate::core::RelayAddr(addr),
        reservation: None,
    })
}

/// Every worker of the server, by index: a ConnectionBind reaches whichever worker the kernel
/// picked for its new connection, and is handed to the worker whose core made the
/// CONNECTION-ID it names (RFC 6062 §5.4, [`crate::core::ConnectionId::worker`]).
pub(crate) struct WorkerSet {
    workers: parking_lot::RwLock<Vec<Option<std::sync::Weak<Worker>>>>,
    count: usize,
}

impl WorkerSet {
    /// A set for `count` workers.
    pub fn new(count: usize) -> Self {
        Self {
            workers: parking_lot::RwLock::new(vec![None; count]),
            count: count.max(1),
        }
    }

    /// How many workers the server runs.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Records worker `index` (each worker at its start).
    pub fn register(&self, index: usize, worker: &Arc<Worker>) {
        let mut workers = self.workers.write();
        if workers.len() <= index {
            workers.resize(index + 1, None);
        }
        workers[index] = Some(Arc::downgrade(worker));
    }

    /// Worker `index`, while it runs.
    pub fn get(&self, index: usize) -> Option<Arc<Worker>> {
        self.workers.read().get(index)?.as_ref()?.upgrade()
    }
}

/// Applies reloads and drain requests to this worker's core.
pub(crate) async fn control_loop(worker: Arc<Worker>, mut control: watch::Receiver<Control>) {
    while control.changed().await.is_ok() {
        let update = control.borrow_and_update().clone();
        let mut core = worker.lock();
        core.server.set_settings(update.settings);
        core.server.set_credentials(update.credentials);
        core.server.set_draining(update.draining);
        // What a tightened policy revoked takes effect now, not at the next wake-up: the
        // kernel fast path's copy of the tables, and the RFC 6062 peer connections it closes.
        core.drain_commands();
    }
}
