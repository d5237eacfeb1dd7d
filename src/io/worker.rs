//! One worker: a current_thread runtime that owns a `core::Server`, its relay sockets and its
//! share of the listening sockets. Everything here runs on one thread, so `RefCell`s suffice.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::core::{
    Command, FiveTuple, PEER_HEADROOM, PEER_TAILROOM, PeerHandled, RelayId, Server, Transport,
};

use super::clock;
use super::mmsg::{RecvBatch, SendBatch};
use super::publish::{Publisher, publish_global};
use super::relay::Relays;
use super::relay_poll::ReadyList;
use super::runtime::{Control, IoShared, StreamLimits, UsageSink};

/// Datagrams per recvmmsg/sendmmsg batch.
pub(crate) const BATCH: usize = 32;
/// Largest datagram handled on a UDP socket (client or peer side), headroom included.
pub(crate) const MAX_DATAGRAM: usize = 4096;
/// Largest peer payload: a datagram buffer minus the room for a ChannelData or Data header.
const PEER_MAX: usize = MAX_DATAGRAM - PEER_HEADROOM - PEER_TAILROOM;
/// recvmmsg rounds on one relay socket before yielding to other tasks.
const ROUNDS_PER_WAKE: usize = 8;

/// A listening UDP socket and its send batch, shared by the listener task (replies) and the
/// relay readers (peer data to clients), flushed with one sendmmsg at the end of each batch.
pub(crate) struct UdpOut {
    pub socket: Rc<UdpSocket>,
    pub batch: RefCell<SendBatch>,
}

impl UdpOut {
    pub fn new(socket: Rc<UdpSocket>) -> Self {
        Self {
            socket,
            batch: RefCell::new(SendBatch::new(BATCH, MAX_DATAGRAM)),
        }
    }

    /// Sends what is queued without waiting; a socket that stays full drops the rest (UDP).
    pub fn flush(&self) {
        let mut batch = self.batch.borrow_mut();
        if batch.is_empty() {
            return;
        }
        // Directly on the non-blocking socket (see `Relays::send`); EAGAIN drops the rest.
        if let Err(e) = batch.flush(self.socket.as_fd()) {
            if e.kind() != io::ErrorKind::WouldBlock {
                tracing::debug!(target: "turnstone::io", error = %e, "udp send error");
            }
            batch.clear();
        }
    }
}

/// State shared by the tasks of one worker.
pub(crate) struct Worker {
    pub server: RefCell<Server>,
    pub relays: RefCell<Relays>,
    /// Listening UDP sockets by local address.
    pub udp: RefCell<HashMap<SocketAddr, Rc<UdpOut>>>,
    /// Outgoing queues of TCP/TLS client connections.
    pub streams: RefCell<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    /// recvmmsg batch for relay sockets (one task runs at a time on this thread).
    relay_rx: RefCell<RecvBatch>,
    /// Scratch room for peer data bound to TCP/TLS clients.
    peer_buf: RefCell<Vec<u8>>,
    pub usage: UsageSink,
    pub limits: StreamLimits,
    pub shared: Arc<IoShared>,
    /// Worker 0 also publishes process-wide metrics and does limiter housekeeping.
    pub index: usize,
    publisher: RefCell<Publisher>,
    last_publish: Cell<Option<Instant>>,
    last_trim: Cell<Option<Instant>>,
}

impl Worker {
    pub fn new(
        server: Server,
        relays: Relays,
        usage: UsageSink,
        limits: StreamLimits,
        shared: Arc<IoShared>,
        index: usize,
    ) -> Rc<Self> {
        Rc::new(Worker {
            server: RefCell::new(server),
            relays: RefCell::new(relays),
            udp: RefCell::new(HashMap::new()),
            streams: RefCell::new(HashMap::new()),
            relay_rx: RefCell::new(RecvBatch::new(BATCH, PEER_MAX)),
            peer_buf: RefCell::new(vec![0; MAX_DATAGRAM]),
            usage,
            limits,
            shared,
            index,
            publisher: RefCell::new(Publisher::default()),
            last_publish: Cell::new(None),
            last_trim: Cell::new(None),
        })
    }

    /// Queues a message to a stream client; a full queue means a stalled client, so the
    /// message is dropped rather than buffered without bound.
    fn send_to_stream(&self, client: &FiveTuple, data: &[u8]) {
        if let Some(tx) = self.streams.borrow().get(client) {
            let _ = tx.try_send(data.to_vec());
        }
    }

    /// Relays one recvmmsg batch read from relay socket `id` to its client.
    fn relay_batch(&self, id: RelayId, rx: &RecvBatch) {
        let now = clock::now();
        let mut server = self.server.borrow_mut();
        let Some(client) = server.relay_client(id) else {
            return;
        };
        let out = match client.transport {
            Transport::Udp => self.udp.borrow().get(&client.server).cloned(),
            Transport::Tcp | Transport::Tls => None,
        };
        for i in 0..rx.len() {
            let (payload, peer) = rx.datagram(i);
            if payload.is_empty() {
                continue;
            }
            let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
            match &out {
                Some(out) => {
                    // Copy once into the send slot; the core writes its header in front.
                    if out.batch.borrow_mut().next_buf().is_none() {
                        out.flush();
                    }
                    let mut batch = out.batch.borrow_mut();
                    let Some(buf) = batch.next_buf() else {
                        continue;
                    };
                    buf[range.clone()].copy_from_slice(payload);
                    if let PeerHandled::ToClient { client, range } =
                        server.handle_peer(now, id, peer, buf, range)
                    {
                        batch.commit_at(range.start, range.len(), client.client);
                    }
                }
                None => {
                    let mut buf = self.peer_buf.borrow_mut();
                    buf[range.clone()].copy_from_slice(payload);
                    if let PeerHandled::ToClient { client, range } =
                        server.handle_peer(now, id, peer, &mut buf, range)
                    {
                        self.send_to_stream(&client, &buf[range]);
                    }
                }
            }
        }
        drop(server);
    }

    /// Reads relay socket `id` until it is empty (or for a bounded number of batches); true
    /// when it may still hold data.
    fn drain_relay(&self, id: RelayId) -> bool {
        for _ in 0..ROUNDS_PER_WAKE {
            let mut rx = self.relay_rx.borrow_mut();
            let received = {
                let relays = self.relays.borrow();
                let Some(fd) = relays.socket(id) else {
                    return false;
                };
                rx.recv(fd)
            };
            match received {
                Ok(n) => {
                    self.relay_batch(id, &rx);
                    // A short batch emptied the queue; anything newer wakes the poller again,
                    // so the extra recvmmsg that would only see EAGAIN is skipped.
                    if n < BATCH {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                // ICMP errors from earlier sends surface here on Linux; keep reading.
                Err(_) => {}
            }
        }
        true
    }

    /// Sends what the relay path queued on every listening UDP socket.
    fn flush_udp(&self) {
        for out in self.udp.borrow().values() {
            out.flush();
        }
    }

    /// Hands finished-allocation records to the usage sink.
    pub fn drain_commands(&self) {
        let mut server = self.server.borrow_mut();
        while let Some(command) = server.next_command() {
            match command {
                Command::Usage(record) => (self.usage)(record),
            }
        }
    }

    /// Expires allocations; returns how long to sleep before the next check.
    pub fn tick(&self) -> Duration {
        let now = clock::now();
        let next = {
            let mut server = self.server.borrow_mut();
            let mut relays = self.relays.borrow_mut();
            server.handle_timeout(now, &mut *relays);
            server.poll_timeout()
        };
        self.drain_commands();
        self.publish_metrics(now.mono);
        // Wake at least once a second: new allocations may add earlier deadlines.
        let second = Duration::from_secs(1);
        next.map_or(second, |at| at.saturating_duration_since(now.mono))
            .min(second)
    }

    /// About once a second: counters to the metrics facade, limiter housekeeping.
    fn publish_metrics(&self, now: Instant) {
        let recent = self
            .last_publish
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1));
        if recent {
            return;
        }
        self.last_publish.set(Some(now));
        let counters = self.server.borrow().counters();
        self.publisher.borrow_mut().publish(&counters);
        if self.index == 0 {
            self.shared.admission.housekeeping();
            self.trim_heap(now);
            let (rate_limited, tls_failures) = self.shared.take_global_deltas();
            let allocations = self.server.borrow().shared_allocations();
            let streams = self.shared.open_streams.load(Ordering::Relaxed);
            publish_global(allocations, streams, rate_limited, tls_failures);
        }
    }

    /// Every few seconds, returns freed heap pages to the OS: after a flood or an allocation
    /// churn the allocator would otherwise keep the high-water mark resident.
    fn trim_heap(&self, now: Instant) {
        const EVERY: Duration = Duration::from_secs(5);
        if self
            .last_trim
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < EVERY)
        {
            return;
        }
        self.last_trim.set(Some(now));
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory of glibc's own arenas.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Ends every allocation and closes every relay (shutdown).
    pub fn close_all(&self) {
        let now = clock::now();
        {
            let mut server = self.server.borrow_mut();
            let mut relays = self.relays.borrow_mut();
            server.close_all(now, &mut *relays);
            relays.clear();
        }
        self.drain_commands();
    }
}

/// Serves every relay socket of the worker: one wake-up drains all ready sockets (recvmmsg
/// each), then one sendmmsg per client socket carries the results.
pub(crate) async fn relay_poll_loop(worker: Rc<Worker>) {
    let handle = worker.relays.borrow().poll_handle();
    // SAFETY: `PollHandle` co-owns the epoll fd, so it stays open while registered.
    let poll = match unsafe { AsyncFd::register_with_interest(handle, Interest::READABLE) } {
        Ok(poll) => poll,
        Err(e) => {
            tracing::error!(target: "turnstone::io", error = %e, "cannot watch relay sockets");
            return;
        }
    };
    let mut ready = ReadyList::new();
    loop {
        let Ok(mut guard) = poll.readable().await else {
            return;
        };
        let found = worker.relays.borrow().poll().ready(&mut ready).unwrap_or(0);
        if found == 0 {
            guard.clear_ready();
            continue;
        }
        let mut more = found == ready.capacity();
        for id in ready.ids() {
            more |= worker.drain_relay(id);
        }
        worker.flush_udp();
        if more {
            // Data left behind: stay ready, but let the listeners run first.
            drop(guard);
            tokio::task::yield_now().await;
        } else {
            // Every ready socket was emptied; a datagram arriving from now on raises a new
            // edge on the epoll fd, so clearing here loses nothing and saves an epoll_wait.
            guard.clear_ready();
        }
    }
}

/// Applies reloads and drain requests to this worker's core.
pub(crate) async fn control_loop(worker: Rc<Worker>, mut control: watch::Receiver<Control>) {
    while control.changed().await.is_ok() {
        let update = control.borrow_and_update().clone();
        let mut server = worker.server.borrow_mut();
        server.set_settings(update.settings);
        server.set_credentials(update.credentials);
        server.set_draining(update.draining);
    }
}

/// Runs the worker's timers until the task is dropped.
pub(crate) async fn timer_loop(worker: Rc<Worker>) {
    loop {
        let wait = worker.tick();
        tokio::time::sleep(wait).await;
    }
}
