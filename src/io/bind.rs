//! Binding the listeners for every worker, after making sure no other process holds them.
//!
//! Workers share each listener address through SO_REUSEPORT, and Linux lets any socket of
//! the same user join such a group: a second Turnstone would silently take part of the
//! traffic. So each address is first bound once *without* SO_REUSEPORT (which fails while
//! anyone holds it) and closed again before the workers' sockets bind it.

use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::{Arc, RwLock};

use crate::core::{NatDiscovery, Transport};

use super::spec::{ListenerSpec, NatDiscoverySpec, TlsSlot};
use crate::sys::socket;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listening socket could not be bound.
    #[error("cannot listen on {transport} {address}: {source}")]
    Bind {
        /// The transport.
        transport: &'static str,
        /// The address.
        address: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// OS randomness was unavailable.
    #[error("cannot read OS randomness: {0}")]
    Random(#[from] crate::auth::AuthError),
    /// A worker thread could not be spawned.
    #[error("cannot start worker thread: {0}")]
    Thread(std::io::Error),
    /// Another process (a second Turnstone?) already listens on this address.
    #[error(
        "{transport} {address} is already in use by another process (is another turnstone \
         running?); stop it or choose another address"
    )]
    InUse {
        /// The transport.
        transport: &'static str,
        /// The address.
        address: SocketAddr,
    },
    /// No listener was configured.
    #[error("no listener configured")]
    NoListener,
    /// The RFC 5780 alternate address does not fit its primary listener (the configuration
    /// refuses such files; this guards other callers of `io::start`).
    #[error("RFC 5780 discovery: {0}")]
    NatDiscovery(&'static str),
    /// The host's interface addresses could not be read: the peer policy must know them to
    /// refuse them as peers (RFC 8656 §21), so the server does not start without them.
    #[error(
        "cannot read the host's interface addresses (the peer policy refuses them as peers): \
         {0}"
    )]
    HostAddresses(std::io::Error),
    /// `[relay] fast_path = "on"` and the fast path cannot be active.
    #[error("fast_path = \"on\", but the kernel fast path cannot be used")]
    FastPath(#[from] super::fastpath::FastPathError),
}

/// The sockets of one worker.
pub(crate) struct WorkerSockets {
    pub udp: Vec<(SocketAddr, StdUdpSocket)>,
    pub tcp: Vec<(SocketAddr, StdTcpListener, Option<TlsSlot>)>,
}

/// Every listener bound once per worker.
pub(crate) struct Bound {
    pub per_worker: Vec<WorkerSockets>,
    /// The bound address of each listener, in configuration order (port 0 resolved).
    pub addresses: Vec<(Transport, SocketAddr)>,
    /// The TLS slot of each listener, in configuration order.
    pub tls_slots: Vec<Option<TlsSlot>>,
    /// RFC 5780 discovery's four UDP addresses, when configured (each worker listens on the
    /// three beyond the primary listener after its configured listeners).
    pub nat: Option<NatDiscovery>,
}

/// Binds every listener for `workers` workers, and the three sockets RFC 5780 discovery
/// adds when `nat` is given; refuses addresses another process holds.
pub(crate) fn bind_all(
    listeners: &[ListenerSpec],
    nat: Option<&NatDiscoverySpec>,
    workers: usize,
) -> Result<Bound, StartError> {
    let mut per_worker: Vec<WorkerSockets> = (0..workers)
        .map(|_| WorkerSockets {
            udp: Vec::new(),
            tcp: Vec::new(),
        })
        .collect();
    let mut addresses = Vec::new();
    let mut tls_slots = Vec::new();
    let shared = workers > 1;
    for listener in listeners {
        let slot: Option<TlsSlot> = listener
            .tls
            .as_ref()
            .map(|c| Arc::new(RwLock::new(Arc::clone(c))));
        let address = bind_everywhere(
            &mut per_worker,
            listener.transport,
            listener.address,
            slot.as_ref(),
            shared,
        )?;
        tls_slots.push(slot);
        addresses.push((listener.transport, address));
    }
    let nat = match nat {
        Some(spec) => Some(bind_discovery(spec, &addresses, &mut per_worker, shared)?),
        None => None,
    };
    Ok(Bound {
        per_worker,
        addresses,
        tls_slots,
        nat,
    })
}

/// Binds the three sockets of RFC 5780 discovery beyond the primary listener: (primary IP,
/// alternate port) first, so that an alternate port of 0 resolves to the one the alternate
/// IP then uses too; then (alternate IP, primary port) and (alternate IP, alternate port).
fn bind_discovery(
    spec: &NatDiscoverySpec,
    addresses: &[(Transport, SocketAddr)],
    per_worker: &mut [WorkerSockets],
    shared: bool,
) -> Result<NatDiscovery, StartError> {
    let Some(&(Transport::Udp, primary)) = addresses.get(spec.listener) else {
        return Err(StartError::NatDiscovery(
            "the primary listener is not a UDP listener",
        ));
    };
    if primary.ip().is_unspecified() || primary.is_ipv4() != spec.alternate_ip.is_ipv4() {
        return Err(StartError::NatDiscovery(
            "the primary UDP listener needs a concrete IP of the alternate address's family",
        ));
    }
    let mut bind = |address| bind_everywhere(per_worker, Transport::Udp, address, None, shared);
    let second_port = bind(SocketAddr::new(primary.ip(), spec.alternate_port))?;
    bind(SocketAddr::new(spec.alternate_ip, primary.port()))?;
    let alternate = bind(SocketAddr::new(spec.alternate_ip, second_port.port()))?;
    NatDiscovery::new(primary, alternate).ok_or(StartError::NatDiscovery(
        "the alternate address must differ from the primary listener in both IP and port",
    ))
}

/// Binds `address` once per worker; returns the bound address (port 0 resolved). With
/// several workers the address is first probed without SO_REUSEPORT (see the module doc).
fn bind_everywhere(
    per_worker: &mut [WorkerSockets],
    transport: Transport,
    mut address: SocketAddr,
    slot: Option<&TlsSlot>,
    shared: bool,
) -> Result<SocketAddr, StartError> {
    let err = |address, source| StartError::Bind {
        transport: transport.name(),
        address,
        source,
    };
    // A single worker binds without SO_REUSEPORT: that bind is the exclusive check.
    if shared {
        address =
            socket::probe_exclusive(address, transport == Transport::Udp).map_err(|source| {
                match source.kind() {
                    std::io::ErrorKind::AddrInUse => StartError::InUse {
                        transport: transport.name(),
                        address,
                    },
                    _ => err(address, source),
                }
            })?;
    }
    for sockets in per_worker.iter_mut() {
        match transport {
            Transport::Udp => {
                let sock = socket::udp_socket(address, shared).map_err(|e| err(address, e))?;
                address = sock.local_addr().map_err(|e| err(address, e))?;
                sockets.udp.push((address, sock));
            }
            Transport::Tcp | Transport::Tls => {
                let sock = socket::tcp_listener(address, shared).map_err(|e| err(address, e))?;
                address = sock.local_addr().map_err(|e| err(address, e))?;
                sockets.tcp.push((address, sock, slot.cloned()));
            }
        }
    }
    Ok(address)
}
