//! A TURN load generator (`turnstone bench`, DESIGN.md §7 level 7), server-agnostic so that it
//! drives coturn exactly like Turnstone.
//!
//! Each allocation gets its own client UDP socket (or TCP/TLS connection, RFC 8656 §3.1, with
//! STUN and ChannelData framed on the stream, §12.5), authenticates with long-term credentials
//! (RFC 8489 §9.2), binds a channel (or installs a permission) to an echo peer the generator
//! runs itself, then data goes client → server → peer → echo → server → client as
//! ChannelData (RFC 8656 §12) or Send/Data indications (RFC 8656 §11). Each payload carries
//! a sequence number and its send time, so every round trip is timed and every loss counted.
//!
//! Raw mode drives a plain forwarder instead (no TURN setup, see [`Hello`]), direct mode
//! drives nothing (clients send straight to the peers: the generator's own work, the baseline
//! of a system-wide CPU measurement) and churn mode ([`Churn`]) measures the control plane:
//! authenticated Allocate + Refresh(0) cycles.
//!
//! One thread does all the work with non-blocking sockets and recvmmsg/sendmmsg batches. By
//! default it busy-polls and paces by spinning on the clock, never sleeping, so the server's
//! wakeups are the server's own; with [`LoadConfig::sleep`] it waits in epoll when it has
//! nothing to do, as real clients do, so that its core's idle time is real.

mod churn;
mod control;
mod error;
mod histogram;
mod lane;
mod link;
mod poller;
mod raw;
mod refresh;
mod report;
mod setup;
mod stream;
mod tls;
mod traffic;
mod wire;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use churn::{Churn, ChurnReport, REUSE_GAP as CHURN_REUSE_GAP, WAVE as CHURN_WAVE};
pub use error::LoadError;
pub use histogram::{Histogram, RttSummary};
pub use raw::{FIRST_RAW_CHANNEL, HELLO_LEN, Hello, HelloKind, MAX_RAW_LANES};
pub use report::LoadReport;
pub use traffic::MIN_SLEEP;

use crate::auth::{rest_password, rest_username};
use lane::Lane;
use link::{Connector, Link, UdpLink};
use stream::StreamLink;

/// How the generator reaches the server. The relay to the peers is UDP in every case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadTransport {
    /// TURN over UDP.
    #[default]
    Udp,
    /// TURN over TCP: one connection per allocation (RFC 8656 §3.1).
    Tcp,
    /// TURN over TLS over TCP: one connection per allocation (RFC 8656 §3.1).
    Tls,
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
    /// TLS: accept any server certificate (benchmark servers use self-signed ones).
    pub tls_insecure: bool,
    /// TLS: PEM file of the CA certificate(s) the server's certificate must chain to (needed
    /// unless `tls_insecure`).
    pub tls_ca: Option<PathBuf>,
    /// TLS: the name the certificate must carry, sent as SNI when it is a DNS name; `None`
    /// checks the server's IP address instead (an IP SAN) and sends no SNI.
    pub tls_name: Option<String>,
    /// Credentials for every allocation.
    pub credentials: Credentials,
    /// Allocations, each with its own client socket (UDP) or connection (TCP, TLS).
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
    /// Direct mode: no server at all. Each lane's client socket sends its ChannelData straight
    /// to its echo peer, which echoes it back: the same sockets, batches, pacing and
    /// bookkeeping as a relayed run, minus the relay. What a relay adds to the machine's CPU
    /// is a relayed run's minus this at the same rate (`server` is ignored).
    pub direct: bool,
    /// When a turn finds nothing to receive or send, wait in epoll until input comes or the
    /// next packet is due (at least [`MIN_SLEEP`]), instead of spinning. A spinning generator
    /// keeps its core 100% busy, which hides any work the kernel does on that core (softirq
    /// is charged to whatever runs); a sleeping one leaves the idle time idle.
    pub sleep: bool,
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
            tls_insecure: false,
            tls_ca: None,
            tls_name: None,
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
            direct: false,
            sleep: false,
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
        if self.raw && self.transport != LoadTransport::Udp {
            return fail("raw mode (the forwarder) is UDP only");
        }
        if self.direct
            && (self.raw || self.send_indications || self.transport != LoadTransport::Udp)
        {
            return fail("direct mode is UDP ChannelData only, and not raw");
        }
        if self.transport == LoadTransport::Tls && !self.tls_insecure && self.tls_ca.is_none() {
            return fail("TLS needs a CA file to verify the server, or tls_insecure");
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
    let peers = setup::bind_peers(config)?;
    if config.direct {
        let mut lanes = Vec::with_capacity(config.allocations);
        let set_up = setup::direct(config, &peers, &mut lanes);
        return measure(config, set_up, &mut lanes, &peers, observer);
    }
    if config.raw {
        let mut lanes = Vec::with_capacity(config.allocations);
        let set_up = raw::setup(config, &peers, &mut lanes);
        return measure(config, set_up, &mut lanes, &peers, observer);
    }
    let connector = Connector::new(config)?;
    match config.transport {
        LoadTransport::Udp => turn::<UdpLink>(config, &connector, &peers, observer),
        LoadTransport::Tcp | LoadTransport::Tls => {
            turn::<StreamLink>(config, &connector, &peers, observer)
        }
    }
}

/// A run through a TURN server, each lane over a link of type `L`.
fn turn<L: Link>(
    config: &LoadConfig,
    connector: &Connector,
    peers: &[UdpSocket],
    observer: &mut dyn FnMut(Stage),
) -> Result<LoadReport, LoadError> {
    let mut lanes: Vec<Lane<L>> = Vec::with_capacity(config.allocations);
    let set_up = setup::setup(config, connector, peers, &mut lanes);
    measure(config, set_up, &mut lanes, peers, observer)
}

/// The data loop over lanes set up (or partly, when `set_up` failed), then their deletion.
fn measure<L: Link>(
    config: &LoadConfig,
    set_up: Result<(), LoadError>,
    lanes: &mut [Lane<L>],
    peers: &[UdpSocket],
    observer: &mut dyn FnMut(Stage),
) -> Result<LoadReport, LoadError> {
    let tally = set_up.and_then(|()| {
        observer(Stage::Ready);
        let tally = traffic::drive(config, lanes, peers, observer);
        observer(Stage::Measured);
        tally
    });
    // Raw and direct lanes have nothing to delete.
    let delete_failures = if config.raw || config.direct {
        0
    } else {
        setup::teardown(lanes)
    };
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
        queue_drops: t.queue_drops,
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
