//! Starting and stopping the server: bind every socket up front (so errors surface before
//! anything runs and port 0 resolves), then run one worker thread per core.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::auth::Nonces;
use crate::core::live_ports::LivePorts;
use crate::core::policy::{BoundAddrs, PeerRules};
use crate::core::{AllocationLedger, NatDiscovery, Server, Settings, Transport};

use super::admission::Admission;
use super::bind::{Bound, StartError, WorkerSockets, bind_all};
use super::conn_slots::ConnectionSlots;
use super::datapath::Datapath;
use super::ledger::SharedLedger;
use super::ports::RelayPorts;
use super::shared::{Control, IoShared};
use super::spec::{ServerSpec, StreamLimits, TlsSlot, UsageSink};
use super::worker::{self, Worker, WorkerSet};
use super::{fastpath, fd_limit, host_ips, stream};
use crate::sys::poller::{Poller, Waker};

/// A running server.
pub struct RunningServer {
    bound: Vec<(Transport, SocketAddr)>,
    nat: Option<NatDiscovery>,
    shutdown: watch::Sender<bool>,
    control: watch::Sender<Control>,
    tls_slots: Vec<Option<TlsSlot>>,
    relay_ports: RangeInclusive<u16>,
    /// Live UDP relay ports and live TCP relay ports (RFC 6062).
    live: (Arc<LivePorts>, Arc<LivePorts>),
    threads: Vec<JoinHandle<()>>,
    shared: Arc<SharedLedger>,
    fast_path: Option<Arc<fastpath::FastPath>>,
}

impl RunningServer {
    /// The bound listening addresses, in configuration order.
    pub fn bound(&self) -> &[(Transport, SocketAddr)] {
        &self.bound
    }

    /// RFC 5780 discovery's four bound UDP addresses, when an alternate address is configured.
    pub fn nat_discovery(&self) -> Option<NatDiscovery> {
        self.nat
    }

    /// The first bound address of a transport.
    pub fn address(&self, transport: Transport) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// Allocations alive across all workers.
    pub fn allocations(&self) -> u32 {
        self.shared.total()
    }

    /// The kernel fast path's event counters ([`fastpath::EVENTS`] order), when it is active.
    pub fn fast_path_events(&self) -> Option<[u64; fastpath::EVENTS.len()]> {
        self.fast_path.as_ref().map(|fp| fp.events())
    }

    /// Applies a reloaded configuration: credentials, limits, lifetimes, peer policy and TLS
    /// certificates. Listeners (RFC 5780's alternate address and port among them), relay
    /// ports and the worker count need a restart.
    pub fn reload(&self, spec: ServerSpec) {
        // A failed read leaves the host addresses unset: each worker keeps its own.
        let host_ips = host_ips::read_for_reload();
        let settings = policy_for(
            spec.settings,
            &self.bound,
            self.nat,
            &self.relay_ports,
            &self.live,
            host_ips,
        );
        for (slot, listener) in self.tls_slots.iter().zip(&spec.listeners) {
            if let (Some(slot), Some(config)) = (slot, &listener.tls)
                && let Ok(mut current) = slot.write()
            {
                *current = Arc::clone(config);
            }
        }
        self.control.send_modify(|c| {
            c.settings = settings;
            c.credentials = spec.credentials;
        });
    }

    /// Starts draining: new allocations are refused, existing ones keep relaying.
    pub fn drain(&self) {
        self.control.send_modify(|c| c.draining = true);
    }

    /// Stops every worker (ending all allocations) and waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Waits until the workers exit (after `shutdown` from another handle or a fatal error).
    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// 64 bits of OS randomness.
fn random_u64() -> Result<u64, StartError> {
    let key = Nonces::random_key()?;
    let mut seed = [0u8; 8];
    seed.copy_from_slice(&key[..8]);
    Ok(u64::from_le_bytes(seed))
}

/// The settings the workers run with: the configured peer rules completed with what only io
/// knows (the bound listeners, the relay port range in use, live relay ports, host addresses),
/// and RFC 5780 discovery's bound addresses (a reload keeps the sockets bound at start).
fn policy_for(
    settings: Settings<PeerRules>,
    bound: &[(Transport, SocketAddr)],
    nat: Option<NatDiscovery>,
    relay_ports: &RangeInclusive<u16>,
    live: &(Arc<LivePorts>, Arc<LivePorts>),
    host_ips: Option<Vec<IpAddr>>,
) -> Settings {
    // UDP relays send UDP, so only UDP listeners are reachable through them; a TCP listener
    // on the same port number is a different socket (and a peer's UDP port may equal it).
    // TCP relays (RFC 6062 Connect) reach the TCP and TLS listeners instead.
    let udp_listeners = bound
        .iter()
        .filter(|(transport, _)| *transport == Transport::Udp)
        .map(|(_, a)| *a)
        .chain(nat.iter().flat_map(NatDiscovery::addresses))
        .collect();
    let tcp_listeners = bound
        .iter()
        .filter(|(transport, _)| transport.is_stream())
        .map(|(_, a)| *a)
        .collect();
    settings.complete(
        BoundAddrs {
            udp_listeners,
            relay_ports: relay_ports.clone(),
            live: Arc::clone(&live.0),
            tcp_listeners,
            live_tcp: Arc::clone(&live.1),
            host_ips,
        },
        nat,
    )
}

/// Binds every listener for every worker and starts the workers.
pub fn start(spec: ServerSpec) -> Result<RunningServer, StartError> {
    if spec.listeners.is_empty() {
        return Err(StartError::NoListener);
    }
    fd_limit::check(&spec);
    let workers = spec.workers.max(1);
    let Bound {
        per_worker,
        addresses: bound,
        tls_slots,
        nat,
    } = bind_all(&spec.listeners, spec.nat_discovery.as_ref(), workers)?;

    let live = (
        Arc::new(LivePorts::default()),
        Arc::new(LivePorts::default()),
    );
    let host_ips = Some(host_ips::read_at_start()?);
    let settings = policy_for(
        spec.settings,
        &bound,
        nat,
        &spec.relay_ports,
        &live,
        host_ips,
    );
    let relay_ips: Vec<_> = [settings.relay_v4, settings.relay_v6]
        .into_iter()
        .flatten()
        .map(|r| r.bind)
        .collect();
    let limits = fastpath::DatagramLimits {
        client_datagram: super::udp::MAX_DATAGRAM as u32,
        peer_payload: super::datapath::PEER_MAX as u32,
    };
    let fast_path = fastpath::start(&spec.fast_path, &bound, &relay_ips, workers, limits)?;

    let shared = Arc::new(SharedLedger::default());
    let nonce_key = Nonces::random_key()?;
    let limits = spec.request_limits;
    let io_shared = Arc::new(IoShared {
        admission: Admission::new(
            limits.per_second,
            limits.burst,
            limits.max_tracked_ips,
            limits.ipv6_prefix_length,
        ),
        streams: Arc::new(ConnectionSlots::default()),
        tls_failures: AtomicU64::new(0),
        ports: Arc::new(
            RelayPorts::new(spec.relay_ports.clone(), Arc::clone(&live.0), random_u64()?)
                .with_live_tcp(Arc::clone(&live.1)),
        ),
        published: Default::default(),
    });
    let (shutdown, _) = watch::channel(false);
    let (control, _) = watch::channel(Control {
        settings: settings.clone(),
        credentials: Arc::clone(&spec.credentials),
        draining: false,
    });
    let mut threads = Vec::new();
    let set = Arc::new(WorkerSet::new(workers));
    for (index, sockets) in per_worker.into_iter().enumerate() {
        let seed = random_u64()?;
        let server = Server::new(
            settings.clone(),
            Arc::clone(&spec.credentials),
            nonce_key,
            Arc::clone(&shared) as Arc<dyn AllocationLedger>,
            seed,
        );
        let mirror = fast_path.as_ref().map(|fp| fp.worker(index));
        let ctx = WorkerContext {
            server,
            mirror,
            sockets,
            usage: Arc::clone(&spec.usage),
            limits: spec.stream_limits,
            io_shared: Arc::clone(&io_shared),
            index,
            control: control.subscribe(),
            shutdown: shutdown.subscribe(),
            set: Arc::clone(&set),
        };
        let thread = std::thread::Builder::new()
            .name(format!("turnstone-worker-{index}"))
            .spawn(move || run_worker(ctx))
            .map_err(StartError::Thread)?;
        threads.push(thread);
    }
    Ok(RunningServer {
        bound,
        nat,
        shutdown,
        control,
        tls_slots,
        relay_ports: spec.relay_ports,
        live,
        threads,
        shared,
        fast_path,
    })
}

struct WorkerContext {
    server: Server,
    mirror: Option<fastpath::WorkerMirror>,
    sockets: WorkerSockets,
    usage: UsageSink,
    limits: StreamLimits,
    io_shared: Arc<IoShared>,
    index: usize,
    control: watch::Receiver<Control>,
    shutdown: watch::Receiver<bool>,
    set: Arc<WorkerSet>,
}

/// Runs one worker: its data-plane thread (UDP listeners, relay sockets, TCP/TLS clients)
/// and, on this thread, a current_thread tokio runtime for accepting TCP/TLS clients, TLS
/// handshakes, reloads and RFC 6062 tasks.
fn run_worker(ctx: WorkerContext) {
    let WorkerContext {
        mut server,
        mirror,
        sockets,
        usage,
        limits,
        io_shared,
        index,
        control,
        mut shutdown,
        set,
    } = ctx;
    let fail = |what: &str, e: std::io::Error| {
        tracing::error!(target: "turnstone::io", error = %e, "worker {index}: {what}");
    };
    let (poller, waker) = match (Poller::new(), Waker::new()) {
        (Ok(p), Ok(w)) => (p, w),
        (Err(e), _) | (_, Err(e)) => return fail("cannot create the epoll instance", e),
    };
    if let Some(m) = &mirror {
        server.enable_mirror(m.slot_limit());
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail("cannot start the stream runtime", e),
    };
    let worker = Worker::new(
        server,
        poller.clone(),
        usage,
        limits,
        io_shared,
        index,
        waker,
        set,
        runtime.handle().clone(),
    );
    worker.lock().mirror = mirror;
    let udp = sockets.udp.into_iter().map(|(_, sock)| sock).collect();
    let datapath = match Datapath::new(Arc::clone(&worker), poller, udp) {
        Ok(d) => d,
        Err(e) => return fail("cannot watch the UDP sockets", e),
    };
    let datapath = match std::thread::Builder::new()
        .name(format!("turnstone-udp-{index}"))
        .spawn(move || datapath.run())
    {
        Ok(thread) => thread,
        Err(e) => return fail("cannot start the data-plane thread", e),
    };
    runtime.block_on(async {
        tokio::spawn(worker::control_loop(Arc::clone(&worker), control));
        for (address, listener, tls) in sockets.tcp {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let accept = stream::accept_loop(Arc::clone(&worker), listener, address, tls);
                    tokio::spawn(accept);
                }
                Err(e) => fail("cannot register a TCP listener", e),
            }
        }
        let shutdown_requested = async {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = shutdown_requested => {}
            () = worker.data_plane_ended.notified() => tracing::error!(
                target: "turnstone::io",
                "worker {index}: its data plane stopped; closing its TCP/TLS side too"
            ),
        }
    });
    worker.stop();
    let _ = datapath.join();
}
