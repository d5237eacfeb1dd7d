//! One worker: a current_thread runtime that owns a `core::Server`, its relay sockets and its
//! share of the listening sockets. Everything here runs on one thread, so `RefCell`s suffice.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::core::{
    Command, FiveTuple, PEER_HEADROOM, PEER_TAILROOM, PeerHandled, RelayId, Server, Transport,
};

use super::clock;
use super::publish::{Publisher, publish_global};
use super::relay::Relays;
use super::runtime::{Control, IoShared, StreamLimits, UsageSink};

/// Largest peer datagram relayed (the UDP maximum).
const PEER_MAX: usize = 65_535;

/// State shared by the tasks of one worker.
pub(crate) struct Worker {
    pub server: RefCell<Server>,
    pub relays: RefCell<Relays>,
    /// Listening UDP sockets by local address, to answer clients from the peer path.
    pub udp: RefCell<HashMap<SocketAddr, Rc<UdpSocket>>>,
    /// Outgoing queues of TCP/TLS client connections.
    pub streams: RefCell<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    peer_buf: RefCell<Vec<u8>>,
    pub usage: UsageSink,
    pub limits: StreamLimits,
    pub shared: Arc<IoShared>,
    /// Worker 0 also publishes process-wide metrics and does limiter housekeeping.
    pub index: usize,
    publisher: RefCell<Publisher>,
    last_publish: Cell<Option<std::time::Instant>>,
}

impl Worker {
    pub fn new(
        server: Server,
        relay_ports: std::ops::RangeInclusive<u16>,
        seed: u16,
        usage: UsageSink,
        limits: StreamLimits,
        shared: Arc<IoShared>,
        index: usize,
    ) -> Rc<Self> {
        Rc::new_cyclic(|me: &Weak<Worker>| Worker {
            server: RefCell::new(server),
            relays: RefCell::new(Relays::new(
                relay_ports,
                seed,
                Arc::clone(&shared.held),
                me.clone(),
            )),
            udp: RefCell::new(HashMap::new()),
            streams: RefCell::new(HashMap::new()),
            peer_buf: RefCell::new(vec![0; PEER_HEADROOM + PEER_MAX + PEER_TAILROOM]),
            usage,
            limits,
            shared,
            index,
            publisher: RefCell::new(Publisher::default()),
            last_publish: Cell::new(None),
        })
    }

    /// Sends a message to a client over its own transport.
    pub fn send_to_client(&self, client: &FiveTuple, data: &[u8]) {
        match client.transport {
            Transport::Udp => {
                if let Some(sock) = self.udp.borrow().get(&client.server) {
                    let _ = sock.try_send_to(data, client.client);
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(tx) = self.streams.borrow().get(client) {
                    // A full queue means a stalled client: drop rather than buffer without bound.
                    let _ = tx.try_send(data.to_vec());
                }
            }
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
        next.map_or(Duration::from_secs(1), |at| {
            at.saturating_duration_since(now.mono)
        })
        .min(Duration::from_secs(1))
    }

    /// About once a second: counters to the metrics facade, limiter housekeeping.
    fn publish_metrics(&self, now: std::time::Instant) {
        if self
            .last_publish
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_publish.set(Some(now));
        let counters = self.server.borrow().counters();
        self.publisher.borrow_mut().publish(&counters);
        if self.index == 0 {
            self.shared.admission.housekeeping();
            let (rate_limited, tls_failures) = self.shared.take_global_deltas();
            publish_global(
                self.server.borrow().shared_allocations(),
                self.shared
                    .open_streams
                    .load(std::sync::atomic::Ordering::Relaxed),
                rate_limited,
                tls_failures,
            );
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

/// Reads one relay socket until it is closed; every datagram goes through the core.
pub(crate) async fn relay_reader(worker: Weak<Worker>, id: RelayId, socket: Rc<UdpSocket>) {
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let Some(worker) = worker.upgrade() else {
            return;
        };
        for _ in 0..64 {
            let mut buf = worker.peer_buf.borrow_mut();
            let end = buf.len() - PEER_TAILROOM;
            let (n, peer) = match socket.try_recv_from(&mut buf[PEER_HEADROOM..end]) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // ICMP errors surface as recv errors on Linux; skip them.
                Err(_) => continue,
            };
            let now = clock::now();
            let handled = worker.server.borrow_mut().handle_peer(
                now,
                id,
                peer,
                &mut buf,
                PEER_HEADROOM..PEER_HEADROOM + n,
            );
            if let PeerHandled::ToClient { client, range } = handled {
                worker.send_to_client(&client, &buf[range]);
            }
        }
    }
}

/// Applies reloads and drain requests to this worker's core.
pub(crate) async fn control_loop(
    worker: Rc<Worker>,
    mut control: tokio::sync::watch::Receiver<Control>,
) {
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
