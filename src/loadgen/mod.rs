//! A TURN load generator (`turnstone bench`, DESIGN.md §7 level 7), server-agnostic so that it
//! drives coturn exactly like Turnstone.
//!
//! Each allocation gets its own client UDP socket, authenticates with long-term credentials
//! (RFC 8489 §9.2), binds a channel (or installs a permission) to an echo peer the generator
//! runs itself, then data goes client → server → peer → echo → server → client as
//! ChannelData (RFC 8656 §12) or Send/Data indications (RFC 8656 §11). Each payload carries
//! a sequence number and its send time, so every round trip is timed and every loss counted.
//!
//! Raw mode drives a plain forwarder instead (no TURN setup, see [`Hello`]) and churn mode
//! ([`Churn`]) measures the control plane: authenticated Allocate + Refresh(0) cycles.
//!
//! One thread does all the work with non-blocking sockets and recvmmsg/sendmmsg batches:
//! it busy-polls and paces by spinning on the clock, never sleeping, so the server's wakeups
//! are the server's own.

mod churn;
mod control;
mod error;
mod histogram;
mod lane;
mod poller;
mod raw;
mod refresh;
mod report;
mod traffic;
mod wire;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::SockRef;

pub use churn::{Churn, ChurnReport, REUSE_GAP as CHURN_REUSE_GAP, WAVE as CHURN_WAVE};
pub use error::LoadError;
pub use histogram::{Histogram, RttSummary};
pub use raw::{FIRST_RAW_CHANNEL, HELLO_LEN, Hello, HelloKind, MAX_RAW_LANES};
pub use report::LoadReport;

use crate::auth::{rest_password, rest_username};
use crate::io::clock;
use control::{Auth, Request, SOCKET_BUFFER_BYTES};
use lane::Lane;
use traffic::LIFETIME_SECS;

/// How the generator reaches the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadTransport {
    /// TURN over UDP.
    #[default]
    Udp,
}

/// The credentials every allocation uses.
#[derive(Clone)]
pub enum Credentials {
    /// A static long-term user (RFC 8489 §9.2).
    Static {
        /// USERNAME.
        user: String,
        /// The password.
        password: String,
    },
    /// A TURN REST API shared secret: username `<expiry>:bench`, password
    /// base64(HMAC-SHA1(secret, username)).
    Rest {
        /// The shared secret.
        secret: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static { user, .. } => {
                write!(f, "Static {{ user: {user:?}, password: <redacted> }}")
            }
            Self::Rest { .. } => f.write_str("Rest { secret: <redacted> }"),
        }
    }
}

impl Credentials {
    /// USERNAME and password, REST ones valid for `valid_for` from `unix_now`.
    fn username_password(&self, unix_now: u64, valid_for: Duration) -> (String, String) {
        match self {
            Self::Static { user, password } => (user.clone(), password.clone()),
            Self::Rest { secret } => {
                let username = rest_username(unix_now + valid_for.as_secs(), Some("bench"));
                let password = rest_password(secret.as_bytes(), &username);
                (username, password)
            }
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The TURN server's address.
    pub server: SocketAddr,
    /// Transport to the server.
    pub transport: LoadTransport,
    /// Credentials for every allocation.
    pub credentials: Credentials,
    /// Allocations, each with its own client socket.
    pub allocations: usize,
    /// Application payload bytes per packet (at least 24: the sequence and time header).
    pub payload: usize,
    /// Aggregate packets per second sent; 0 = closed loop, each allocation keeping up to
    /// `window` packets in flight.
    pub rate: u64,
    /// Packets in flight per allocation in the closed loop.
    pub window: usize,
    /// Length of the measured phase.
    pub duration: Duration,
    /// Traffic before the measured phase, not counted.
    pub warmup: Duration,
    /// Packets sent in the measured phase at most (whichever of this and `duration` ends first).
    pub max_packets: u64,
    /// Send indications (RFC 8656 §11) instead of ChannelBind + ChannelData.
    pub send_indications: bool,
    /// Raw mode: the server is a plain forwarder, not TURN; lanes say [`Hello`] instead of
    /// allocating and use channel `FIRST_RAW_CHANNEL + index`.
    pub raw: bool,
    /// IPv4 address the echo peers bind to (the server must be allowed to relay to it).
    pub peer_ip: IpAddr,
    /// Echo peer sockets, shared round robin by the allocations (at most one per allocation).
    pub peers: usize,
    /// A packet not back after this long is lost.
    pub loss_timeout: Duration,
    /// How often allocations, permissions and channels are refreshed during the run
    /// (permissions last 300 s, RFC 8656 §9, so at most about 4 minutes).
    pub refresh_every: Duration,
}

impl LoadConfig {
    /// The defaults of `turnstone bench`: 10 allocations, 100-byte payloads, closed loop with a
    /// window of 16, 10 s, peers on 127.0.0.1.
    pub fn new(server: SocketAddr, credentials: Credentials) -> Self {
        Self {
            server,
            transport: LoadTransport::Udp,
            credentials,
            allocations: 10,
            payload: 100,
            rate: 0,
            window: 16,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            max_packets: 100_000_000,
            send_indications: false,
            raw: false,
            peer_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            peers: 4,
            loss_timeout: Duration::from_secs(1),
            refresh_every: Duration::from_secs(240),
        }
    }

    fn validate(&self) -> Result<(), LoadError> {
        let fail = |why| Err(LoadError::Config(why));
        if !(1..=10_000).contains(&self.allocations) {
            return fail("allocations must be between 1 and 10000");
        }
        if !(wire::HEADER_LEN..=60_000).contains(&self.payload) {
            return fail("payload must be between 24 and 60000 bytes");
        }
        if self.window == 0 || self.window > 65_536 {
            return fail("window must be between 1 and 65536");
        }
        if self.duration.is_zero() {
            return fail("duration must be more than 0");
        }
        if self.peers == 0 {
            return fail("peers must be at least 1");
        }
        if self.refresh_every.is_zero() || self.refresh_every > Duration::from_secs(280) {
            return fail("refresh interval must be more than 0 and at most 280 s");
        }
        if self.loss_timeout < Duration::from_millis(1) {
            return fail("loss timeout must be at least 1 ms");
        }
        if self.raw && (self.send_indications || self.allocations > MAX_RAW_LANES) {
            return fail("raw mode takes ChannelData only and at most 16384 allocations");
        }
        if !self.peer_ip.is_ipv4() {
            return fail("the peer IP must be IPv4 (relays are allocated over IPv4)");
        }
        Ok(())
    }

    /// Ring size per allocation: the window, or in the open loop room for twice the loss
    /// timeout's worth of packets so that expiry comes before slot reuse.
    fn ring(&self) -> usize {
        if self.rate == 0 {
            return self.window;
        }
        let per_lane = self.rate / self.allocations as u64;
        let span = (u128::from(per_lane) * 2 * self.loss_timeout.as_millis() / 1000) as usize;
        span.clamp(1024, 1 << 18)
    }
}

/// Where a run is, as told to the observer of [`run_with`] (e.g. to read the server's CPU
/// time and memory at the edges of the measured phase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Every allocation is set up (with its channel or permission) and idle; no data sent.
    Ready,
    /// Warmup is over: the measured phase starts.
    Measuring,
    /// Measured phase and drain are over; the allocations are not deleted yet.
    Measured,
}

/// Runs one load test: set up the allocations, warm up, measure, drain, delete them.
pub fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    run_with(config, &mut |_| {})
}

/// [`run`], calling `observer` at each [`Stage`] (on the generator's thread, so time spent
/// there delays the run).
pub fn run_with(
    config: &LoadConfig,
    observer: &mut dyn FnMut(Stage),
) -> Result<LoadReport, LoadError> {
    config.validate()?;
    let peers = bind_peers(config)?;
    let mut lanes = Vec::with_capacity(config.allocations);
    let set_up = if config.raw {
        raw::setup(config, &peers, &mut lanes)
    } else {
        setup(config, &peers, &mut lanes)
    };
    let tally = set_up.and_then(|()| {
        observer(Stage::Ready);
        let tally = traffic::drive(config, &mut lanes, &peers, observer);
        observer(Stage::Measured);
        tally
    });
    // Raw lanes have nothing to delete.
    let delete_failures = if config.raw { 0 } else { teardown(&mut lanes) };
    let t = tally?;
    Ok(LoadReport {
        server: config.server,
        transport: config.transport,
        send_indications: config.send_indications,
        allocations: config.allocations,
        payload: config.payload,
        target_rate: config.rate,
        window: config.window,
        elapsed: t.elapsed,
        sent: t.sent,
        received: t.received,
        rtt: t.rtt.summary(),
        stray: t.stray,
        overruns: t.overruns,
        send_errors: t.send_errors,
        echo_drops: t.echo_drops,
        refreshes: t.refreshes.done,
        refresh_failures: t.refreshes.failed,
        delete_failures,
    })
}

/// The monotonic clock of the generator.
#[allow(
    clippy::disallowed_methods,
    reason = "the load generator is a client that timestamps its own packets, not the sans-IO core"
)]
fn mono_now() -> Instant {
    Instant::now()
}

/// Echo peer sockets: non-blocking, large buffers.
fn bind_peers(config: &LoadConfig) -> Result<Vec<UdpSocket>, LoadError> {
    let count = config.peers.min(config.allocations);
    (0..count)
        .map(|_| {
            let addr = SocketAddr::new(config.peer_ip, 0);
            let socket =
                UdpSocket::bind(addr).map_err(|source| LoadError::Bind { addr, source })?;
            tune(&socket)?;
            Ok(socket)
        })
        .collect()
}

/// Non-blocking with large buffers (best effort: the kernel caps them at rmem_max/wmem_max).
fn tune(socket: &UdpSocket) -> Result<(), LoadError> {
    let sock = SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    Ok(())
}

/// Allocates and binds each lane in turn; a lane is kept as soon as its allocation exists, so
/// teardown deletes it even when a later step fails.
fn setup(config: &LoadConfig, peers: &[UdpSocket], lanes: &mut Vec<Lane>) -> Result<(), LoadError> {
    let unix_now = clock::now().unix_secs;
    let valid_for =
        config.warmup + config.duration + config.loss_timeout + Duration::from_secs(3600);
    let wire_len = wire::wire_len(config.payload);
    let mut buf = [0u8; 1500];
    for i in 0..config.allocations {
        let alloc = allocate_fresh(config, unix_now, valid_for)?;
        let peer = peers[i % peers.len()].local_addr()?;
        let index = u32::try_from(i).map_err(|_| LoadError::Config("too many allocations"))?;
        let ends = (config.server, peer);
        let lane = Lane::new(
            alloc.socket,
            alloc.auth,
            ends,
            index,
            config.ring(),
            (traffic::batch_len(wire_len), wire_len),
        );
        lanes.push(lane);
        let lane = lanes.last_mut().ok_or(LoadError::Config("no lane"))?;
        let req = traffic::bind_request(config, peer);
        control::transact(&lane.socket, &mut lane.auth, req, &mut buf)?;
        tune(&lane.socket)?;
    }
    Ok(())
}

/// Allocates on a new client socket. A 437 (Allocation Mismatch, RFC 8656 §7.2) on a new socket
/// means the server still holds that 5-tuple from an allocation deleted moments ago (coturn
/// does for about a second): another source port is tried, up to 3 times.
fn allocate_fresh(
    config: &LoadConfig,
    unix_now: u64,
    valid_for: Duration,
) -> Result<control::Allocation, LoadError> {
    let mut tries = 0;
    loop {
        let auth = Auth::new(&config.credentials, unix_now, valid_for);
        match control::allocate(config.server, auth, LIFETIME_SECS) {
            Err(LoadError::Rejected { code: 437, .. }) if tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Deletes every allocation (RFC 8656 §8: Refresh with LIFETIME 0); returns the failures.
/// After one timeout the server is taken for gone and the rest are not tried.
fn teardown(lanes: &mut [Lane]) -> u64 {
    let mut failures = 0;
    let mut server_gone = false;
    let mut buf = [0u8; 1500];
    for lane in lanes.iter_mut() {
        if server_gone || lane.socket.set_nonblocking(false).is_err() {
            failures += 1;
            continue;
        }
        match control::transact(
            &lane.socket,
            &mut lane.auth,
            Request::Refresh { lifetime: 0 },
            &mut buf,
        ) {
            Ok(_) => {}
            Err(LoadError::Timeout { .. }) => {
                server_gone = true;
                failures += 1;
            }
            Err(_) => failures += 1,
        }
    }
    failures
}

#[cfg(test)]
mod tests;
