//! A worker's data-plane thread: its UDP listening sockets, every relay socket and its TCP/TLS
//! client connections on one epoll instance, served by a plain loop — wait, drain each ready
//! socket (recvmmsg for datagrams, one read per connection), let the core decide, send with
//! sendmmsg or one write per connection — the same shape and syscall count as a bare
//! forwarder. The same loop runs the core's timers (the wait's timeout), the connections'
//! deadlines, and publishes metrics.

use std::net::UdpSocket;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::MutexGuard;

use crate::core::{
    FiveTuple, Now, PEER_HEADROOM, PEER_TAILROOM, PeerAddr, PeerHandled, RelayId, Transport,
};

use super::publish::{Publisher, publish_fast_path, publish_global};
use super::stream_serve::{After, ServeBuffers, serve_input};
use super::streams::{Conn, Hold, Read};
use super::udp::{BATCH, Listener, MAX_DATAGRAM, ROUNDS_PER_WAKE, Redirects};
use super::worker::{Core, Worker};
use super::{clock, host_ips, tcp_tasks};
use crate::sys::mmsg::RecvBatch;
use crate::sys::poller::{Poller, Ready, Token};

/// Largest peer payload: a datagram buffer minus the room for a ChannelData or Data header.
pub(super) const PEER_MAX: usize = MAX_DATAGRAM - PEER_HEADROOM - PEER_TAILROOM;
/// The loop wakes at least this often: new allocations may add earlier deadlines, and metrics
/// are published about once a second.
const TICK: Duration = Duration::from_secs(1);
/// How often freed heap pages are handed back to the OS.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// `guess` after a TCP/TLS client: no listener, the scratch buffer.
const STREAM_CLIENT: usize = usize::MAX;
/// How often the connections' deadlines are checked (they are seconds long).
const SWEEP: Duration = Duration::from_millis(100);

/// The thread-local half of a worker.
pub(crate) struct Datapath {
    worker: Arc<Worker>,
    poller: Poller,
    listeners: Vec<Listener>,
    /// RFC 5780 answers that leave from another listener than the one read.
    redirects: Redirects,
    ready: Ready,
    /// recvmmsg batch for listening sockets.
    client_rx: RecvBatch,
    /// recvmmsg batch for relay sockets.
    relay_rx: RecvBatch,
    /// Scratch room for peer data bound to TCP/TLS clients.
    peer_buf: Vec<u8>,
    /// The listener the last peer datagram went out on, or [`STREAM_CLIENT`] (see
    /// `relay_batch`).
    guess: usize,
    publisher: Publisher,
    /// The core's next deadline (at most a second away).
    next_tick: Instant,
    /// When counters go to the metrics facade next (once a second).
    next_publish: Instant,
    last_trim: Instant,
    /// When the host's interface addresses are read next (the peer policy refuses them).
    next_hosts: Instant,
    /// Keeps the known addresses when a read fails, and logs once per streak of failures.
    hosts: host_ips::HostWatch,
    /// Room for serving stream clients' frames.
    serve: ServeBuffers,
    /// Stream clients whose Allocate waits for its relays (see [`Datapath::unlocked_work`]).
    relay_waits: Vec<(usize, u64)>,
    /// Stream clients' ConnectionBinds, handled without the lock.
    binds: Vec<(usize, u64, FiveTuple, Vec<u8>)>,
    /// When the connections' deadlines are checked next.
    next_sweep: Instant,
    expired: Vec<(usize, &'static str)>,
    /// Whether the worker had stream clients at the end of the last wake-up.
    has_streams: bool,
}

impl Datapath {
    /// Watches the listening sockets and the worker's waker on `poller` (which the worker's
    /// relays already use).
    pub fn new(
        worker: Arc<Worker>,
        poller: Poller,
        sockets: Vec<UdpSocket>,
    ) -> std::io::Result<Self> {
        let mut listeners = Vec::with_capacity(sockets.len());
        for (n, socket) in sockets.into_iter().enumerate() {
            use std::os::fd::AsFd;
            socket.set_nonblocking(true)?;
            let local = socket.local_addr()?;
            poller.add(socket.as_fd(), Token::Listener(n))?;
            listeners.push(Listener::new(socket, local));
        }
        poller.add(worker.waker.fd(), Token::Wake)?;
        let now = clock::now().mono;
        Ok(Self {
            worker,
            poller,
            listeners,
            redirects: Redirects::default(),
            ready: Ready::new(),
            client_rx: RecvBatch::new(BATCH, MAX_DATAGRAM),
            relay_rx: RecvBatch::new(BATCH, PEER_MAX),
            peer_buf: vec![0; MAX_DATAGRAM],
            guess: 0,
            publisher: Publisher::default(),
            next_tick: now,
            next_publish: now,
            last_trim: now,
            next_hosts: now + host_ips::REFRESH,
            hosts: host_ips::HostWatch::default(),
            serve: ServeBuffers::new(),
            relay_waits: Vec::new(),
            binds: Vec::new(),
            next_sweep: now,
            expired: Vec::new(),
            has_streams: false,
        })
    }

    /// Serves until [`Worker::stop`], then ends every allocation.
    pub fn run(mut self) {
        // One handle for the whole loop: `serve_ready` borrows `self` mutably while it holds
        // the worker's lock.
        let worker = Arc::clone(&self.worker);
        let mut now = clock::now();
        while !worker.stopping() {
            // `now` is from the last wake-up, a few microseconds old: waking that much late
            // for a deadline measured in seconds is harmless, and it saves a clock read.
            let mut next = self.next_tick.min(self.next_publish);
            if self.has_streams {
                next = next.min(self.next_sweep);
            }
            let timeout = next.saturating_duration_since(now.mono);
            if let Err(e) = self.poller.wait(&mut self.ready, timeout) {
                tracing::error!(target: "turnstone::io", error = %e, "epoll_wait failed; worker stops");
                break;
            }
            now = clock::now();
            // A panic in the core is a bug, but it must cost one batch, not the worker's whole
            // data plane (as a panicking task did under tokio): the batches hold only bytes and
            // addresses, and the lock is released while unwinding.
            let served = panic::catch_unwind(AssertUnwindSafe(|| self.serve_ready(&worker, now)));
            if served.is_err() {
                tracing::error!(target: "turnstone::io", "bug: a batch panicked; carrying on");
                self.recover(&worker);
            }
            if now.mono >= self.next_hosts {
                // getifaddrs runs outside the worker lock (it talks netlink to the kernel);
                // the lock is taken only to apply a successful read, and the policy revokes
                // what the new addresses refuse.
                self.next_hosts = now.mono + host_ips::REFRESH;
                self.hosts
                    .refresh(crate::sys::ifaddrs::host_addresses, |ips| {
                        let mut core = worker.lock();
                        core.server.set_host_addresses(ips);
                        // What the new addresses revoke leaves the kernel's copy too.
                        core.drain_commands();
                    });
            }
        }
        worker.lock().close_all(clock::now());
        worker.data_plane_ended.notify_one();
    }

    /// Drains every ready socket, flushes what the relay path queued, runs due timers.
    fn serve_ready(&mut self, worker: &Arc<Worker>, now: Now) {
        let mut core = worker.lock();
        for i in 0..self.ready.len() {
            match self.ready.token(i) {
                Token::Listener(n) => {
                    if let Some(listener) = self.listeners.get_mut(n) {
                        let admission = &worker.shared.admission;
                        let redirects = &mut self.redirects;
                        listener.drain(&mut core, &mut self.client_rx, admission, now, redirects);
                    }
                    if !self.redirects.is_empty() {
                        self.redirects.send(&mut self.listeners);
                    }
                }
                Token::Relay(id) => self.drain_relay(&mut core, RelayId(id), now),
                Token::Stream(index) => {
                    let (readable, writable) = (self.ready.readable(i), self.ready.writable(i));
                    self.serve_stream(&mut core, worker, index, readable, writable, now);
                }
                Token::Wake => {
                    worker.waker.reset();
                    self.adopt(&mut core, worker, now);
                }
            }
            // Lets a waiting reload or RFC 6062 task in between sockets (nothing is pending
            // across this point but queued replies, which are plain bytes).
            MutexGuard::bump(&mut core);
        }
        for listener in &mut self.listeners {
            listener.flush();
        }
        core.flush_streams();
        core.drain_commands();
        if now.mono >= self.next_tick {
            let next = core.tick(now).map_or(TICK, |d| d.min(TICK));
            self.next_tick = now.mono + next;
        }
        if now.mono >= self.next_sweep {
            self.next_sweep = now.mono + SWEEP;
            self.sweep(&mut core, now);
        }
        if now.mono >= self.next_publish {
            self.next_publish = now.mono + TICK;
            let Core { mirror, server, .. } = &mut *core;
            if let Some(mirror) = mirror {
                mirror.collect(server);
            }
            self.publish(&core, now.mono);
        }
        let core = self.unlocked_work(worker, core, now);
        self.has_streams = !core.streams.is_empty();
    }

    /// What must not run under the worker lock (DESIGN.md §3): binding the relays the core
    /// asked for, ConnectionBinds (they lock the worker owning their connection), starting
    /// RFC 6062 tasks. Stream clients that waited for them are served on afterwards, which
    /// may ask for more. Returns the lock, taken again.
    fn unlocked_work<'w>(
        &mut self,
        worker: &'w Arc<Worker>,
        mut core: MutexGuard<'w, Core>,
        now: Now,
    ) -> MutexGuard<'w, Core> {
        loop {
            let opens = core.take_opens();
            let spawns = core.tcp.take_spawns();
            let idle = self.binds.is_empty() && self.relay_waits.is_empty();
            if opens.is_empty() && spawns.is_empty() && idle {
                return core;
            }
            let waits = std::mem::take(&mut self.relay_waits);
            let binds = std::mem::take(&mut self.binds);
            drop(core);
            let answers = worker.open_relays(now, opens);
            if !answers.is_empty() {
                self.send_answers(answers);
            }
            tcp_tasks::spawn(worker, spawns);
            let bound: Vec<_> = binds
                .into_iter()
                .map(|(index, id, ft, frame)| {
                    (index, id, tcp_tasks::connection_bind(worker, ft, &frame))
                })
                .collect();
            core = worker.lock();
            for (index, id, bound) in bound {
                // Closed meanwhile (another thread's write to it failed): nothing to answer.
                let Some(mut conn) = core.streams.take_if(index, id) else {
                    continue;
                };
                conn.reply(&bound.reply);
                if let Some((owner, ready)) = bound.splice {
                    // Raw bytes from here (RFC 6062 §5.5): the splice task takes it over.
                    core.streams.forget(index, &conn);
                    tcp_tasks::spawn_splice(worker, owner, ready, conn.into_parts());
                    continue;
                }
                conn.hold = None;
                self.serve_conn(&mut core, worker, index, conn, now);
            }
            for (index, id) in waits {
                let Some(mut conn) = core.streams.take_if(index, id) else {
                    continue;
                };
                conn.hold = None;
                // Allocation traffic only when the Allocate succeeded.
                if core.server.has_allocation(&conn.ft) {
                    conn.timers.allocation_traffic(now.mono);
                }
                self.serve_conn(&mut core, worker, index, conn, now);
            }
            core.flush_streams();
        }
    }

    /// Takes over the connections the stream thread accepted.
    fn adopt(&mut self, core: &mut Core, worker: &Worker, now: Now) {
        let incoming = std::mem::take(&mut core.incoming);
        for adopted in incoming {
            let early = !adopted.early.is_empty();
            let Some(index) = core.streams.adopt(adopted, now.mono) else {
                continue;
            };
            if early {
                self.serve_stream(core, worker, index, false, false, now);
            }
        }
    }

    /// Serves stream client `index`: writes what epoll says fits, reads once, handles the
    /// complete frames. `readable` and `writable` as epoll reported; neither serves what is
    /// already in its input.
    fn serve_stream(
        &mut self,
        core: &mut Core,
        worker: &Worker,
        index: usize,
        readable: bool,
        writable: bool,
        now: Now,
    ) {
        if writable && !core.streams.writable(index, now.mono) {
            core.close_stream(index, "write failed");
            return;
        }
        let Some(mut conn) = core.streams.take(index) else {
            return;
        };
        match conn.hold {
            // Replies left: more input may be served.
            Some(Hold::Output) if !conn.wants_hold() => conn.hold = None,
            Some(_) => {
                core.streams.put(index, conn);
                core.streams.rewatch(index);
                return;
            }
            None => {}
        }
        if readable && let Read::Closed(why) = conn.read() {
            core.streams.put(index, conn);
            core.close_stream(index, why);
            return;
        }
        self.serve_conn(core, worker, index, conn, now);
    }

    /// Handles the complete frames of connection `index` (taken out) and puts it back.
    fn serve_conn(
        &mut self,
        core: &mut Core,
        worker: &Worker,
        index: usize,
        mut conn: Conn,
        now: Now,
    ) {
        let after = serve_input(
            core,
            &mut conn,
            &worker.shared.admission,
            now,
            &mut self.serve,
        );
        self.settle(core, index, conn, after);
    }

    /// Puts a served connection back, with what it waits for.
    fn settle(&mut self, core: &mut Core, index: usize, mut conn: Conn, after: After) {
        let ft = conn.ft;
        match after {
            After::Done => {}
            After::Hold => conn.hold = Some(Hold::Output),
            After::Relays => {
                conn.hold = Some(Hold::Relays);
                self.relay_waits.push((index, conn.id));
            }
            After::Bind(frame) => {
                conn.hold = Some(Hold::Bind);
                self.binds.push((index, conn.id, ft, frame));
            }
            After::Close(why) => {
                tracing::debug!(target: "turnstone::io", client = %ft.client, reason = why, "closing connection");
                core.streams.put(index, conn);
                // Its replies (an error response) go out first, as far as the socket takes them.
                core.streams.schedule(index);
                core.flush_streams();
                core.close_stream(index, why);
                return;
            }
        }
        core.streams.put(index, conn);
        core.streams.schedule(index);
        core.streams.rewatch(index);
    }

    /// After a panic: a connection that was taken out of the table is gone (its socket
    /// closed while unwinding), so its allocation ends; connections that waited for relays or
    /// a ConnectionBind are closed (their requests are lost).
    fn recover(&mut self, worker: &Worker) {
        let mut core = worker.lock();
        let now = clock::now();
        for ft in core.streams.orphans() {
            core.server.handle_connection_closed(now, ft);
        }
        let waits = std::mem::take(&mut self.relay_waits);
        let binds = std::mem::take(&mut self.binds);
        let held = waits
            .into_iter()
            .chain(binds.into_iter().map(|(index, id, _, _)| (index, id)));
        for (index, id) in held {
            if let Some(conn) = core.streams.take_if(index, id) {
                core.streams.put(index, conn);
                core.close_stream(index, "lost in a panic");
            }
        }
        core.drain_commands();
    }

    /// Closes the connections whose deadline passed.
    fn sweep(&mut self, core: &mut Core, now: Now) {
        if core.streams.is_empty() {
            return;
        }
        self.expired.clear();
        core.streams.expired(now.mono, &mut self.expired);
        for &(index, why) in &self.expired {
            core.close_stream(index, why);
        }
    }

    /// Sends Allocate answers to UDP clients from the listener they reached; the relays were
    /// bound outside the worker lock (DESIGN.md §3, [`Worker::open_relays`]).
    fn send_answers(&mut self, answers: Vec<(FiveTuple, Vec<u8>)>) {
        for (to, bytes) in answers {
            match self.listeners.iter_mut().find(|l| l.local == to.server) {
                Some(listener) => listener.queue(&bytes, to.client.addr()),
                None => {
                    tracing::debug!(target: "turnstone::io", client = %to.client, "no listener for an Allocate answer")
                }
            }
        }
        for listener in &mut self.listeners {
            listener.flush();
        }
    }

    /// Reads relay socket `id` until it is empty (or for a bounded number of batches).
    fn drain_relay(&mut self, core: &mut Core, id: RelayId, now: Now) {
        for _ in 0..ROUNDS_PER_WAKE {
            let Some(fd) = core.relays.socket(id) else {
                return;
            };
            match self.relay_rx.recv(fd) {
                Ok(n) => {
                    self.relay_batch(core, id, now);
                    if n < BATCH {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // ICMP errors from earlier sends surface here on Linux; keep reading.
                Err(_) => {}
            }
        }
    }

    /// Relays one recvmmsg batch read from relay socket `id` to its client. The core finds
    /// the client (one lookup per datagram, DESIGN.md §1) and writes its header in front of
    /// the payload in place, so the payload is copied straight into a send slot of the
    /// listener the last datagram went out on: with one UDP listener, or for every datagram
    /// after the first of a batch (a relay serves one client), that guess is right; a wrong
    /// one costs a copy. After a TCP/TLS client the guess is the scratch buffer, from which
    /// the stream's output buffer takes its copy.
    fn relay_batch(&mut self, core: &mut Core, id: RelayId, now: Now) {
        for i in 0..self.relay_rx.len() {
            let (payload, peer) = self.relay_rx.datagram(i);
            if payload.is_empty() {
                continue;
            }
            let range = PEER_HEADROOM..PEER_HEADROOM + payload.len();
            let guess = self.guess;
            let slot = self.listeners.get_mut(guess).and_then(Listener::next_buf);
            let in_listener = slot.is_some();
            let buf = match slot {
                Some(buf) => buf,
                None => &mut self.peer_buf[..],
            };
            let Some(room) = buf.get_mut(range.clone()) else {
                continue;
            };
            room.copy_from_slice(payload);
            let PeerHandled::ToClient { client, range } =
                core.server.handle_peer(now, id, PeerAddr(peer), buf, range)
            else {
                continue;
            };
            if in_listener
                && client.transport == Transport::Udp
                && self.listeners[guess].local == client.server
            {
                self.listeners[guess].commit_at(range.start, range.len(), client.client.addr());
                continue;
            }
            // The message is in the guessed listener's uncommitted slot (asking again returns
            // it) or in the scratch buffer; move it to the scratch buffer.
            if in_listener {
                let Some(written) = self.listeners[guess]
                    .next_buf()
                    .and_then(|b| b.get(range.clone()))
                else {
                    continue;
                };
                self.peer_buf[range.clone()].copy_from_slice(written);
            }
            let message = &self.peer_buf[range];
            match client.transport {
                Transport::Udp => {
                    let Some(n) = self.listeners.iter().position(|l| l.local == client.server)
                    else {
                        continue;
                    };
                    self.listeners[n].queue(message, client.client.addr());
                    self.guess = n;
                }
                Transport::Tcp | Transport::Tls => {
                    core.send_to_stream(&client, message);
                    // The relay's next datagram is most likely for the same stream client:
                    // straight into the scratch buffer, not a listener slot and back.
                    self.guess = STREAM_CLIENT;
                }
            }
        }
    }

    /// About once a second: counters to the metrics facade; worker 0 also does limiter
    /// housekeeping and process-wide gauges.
    fn publish(&mut self, core: &Core, now: Instant) {
        let counters = core.server.counters();
        self.publisher.publish(&counters);
        let worker = &self.worker;
        if worker.index != 0 {
            return;
        }
        worker.shared.admission.housekeeping();
        if let Some(mirror) = &core.mirror {
            publish_fast_path(mirror.fast_path());
        }
        let (rate_limited, tls_failures) = worker.shared.take_global_deltas();
        let streams = worker.shared.streams.open();
        publish_global(
            core.server.shared_allocations(),
            streams,
            rate_limited,
            tls_failures,
        );
        if now.saturating_duration_since(self.last_trim) >= TRIM_EVERY {
            self.last_trim = now;
            trim_heap();
        }
    }
}

/// Returns freed heap pages to the OS: after a flood or an allocation churn the allocator
/// would otherwise keep the high-water mark resident.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
