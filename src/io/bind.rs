//! Binding the listeners for every worker, after making sure no other process holds them.
//!
//! Workers share each listener address through SO_REUSEPORT, and Linux lets any socket of
//! the same user join such a group: a second Turnstone would silently take part of the
//! traffic. So each address is first bound once *without* SO_REUSEPORT (which fails while
//! anyone holds it) and closed again before the workers' sockets bind it.

use std::net::{SocketAddr, TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::sync::{Arc, RwLock};

use crate::core::Transport;

use super::spec::{ListenerSpec, TlsSlot};
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
    /// The host's interface addresses could not be read: the peer policy must know them to
    /// refuse them as peers (RFC 8656 §21), so the server does not start without them.
    #[error(
        "cannot read the host's interface addresses (the peer policy refuses them as peers): \
         {0}"
    )]
    HostAddresses(std::io::Error),
    /// `[relay] fast_path = "on"` and the fast path cannot be active.
    #[error("fast_path = \"on\", but the kernel fast path cannot be used: {0}")]
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
}

/// Binds every listener for `workers` workers; refuses addresses another process holds.
pub(crate) fn bind_all(listeners: &[ListenerSpec], workers: usize) -> Result<Bound, StartError> {
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
        let transport = listener.transport;
        let mut address = listener.address;
        let err = |address, source| StartError::Bind {
            transport: transport.name(),
            address,
            source,
        };
        // A single worker binds without SO_REUSEPORT: that bind is the exclusive check.
        if shared {
            address = socket::probe_exclusive(address, transport == Transport::Udp).map_err(
                |source| match source.kind() {
                    std::io::ErrorKind::AddrInUse => StartError::InUse {
                        transport: transport.name(),
                        address,
                    },
                    _ => err(address, source),
                },
            )?;
        }
        let slot: Option<TlsSlot> = listener
            .tls
            .as_ref()
            .map(|c| Arc::new(RwLock::new(Arc::clone(c))));
        for sockets in per_worker.iter_mut() {
            match transport {
                Transport::Udp => {
                    let sock = socket::udp_socket(address, shared).map_err(|e| err(address, e))?;
                    address = sock.local_addr().map_err(|e| err(address, e))?;
                    sockets.udp.push((address, sock));
                }
                Transport::Tcp | Transport::Tls => {
                    let sock =
                        socket::tcp_listener(address, shared).map_err(|e| err(address, e))?;
                    address = sock.local_addr().map_err(|e| err(address, e))?;
                    sockets.tcp.push((address, sock, slot.clone()));
                }
            }
        }
        tls_slots.push(slot);
        addresses.push((transport, address));
    }
    Ok(Bound {
        per_worker,
        addresses,
        tls_slots,
    })
}
