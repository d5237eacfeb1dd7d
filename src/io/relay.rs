//! Relay sockets of one worker: the [`RelayProvider`] the core asks for sockets. The sockets
//! are plain non-blocking std sockets watched by the worker's [`Poller`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, BorrowedFd};

use crate::core::{
    OpenedRelay, RelayError, RelayId, RelayMap, RelayProvider, RelayRequest, ReservationId,
};

use super::poller::{Poller, Token};
use super::socket::{self, RelayBindError};

/// Ports held for a later allocation, shared by all workers: the claiming Allocate may arrive
/// on another worker than the one that reserved.
#[derive(Debug, Default)]
pub(crate) struct HeldPorts {
    sockets: std::sync::Mutex<HashMap<ReservationId, StdUdpSocket>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl HeldPorts {
    fn hold(&self, sock: StdUdpSocket) -> Option<ReservationId> {
        let id = ReservationId(
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.sockets.lock().ok()?.insert(id, sock);
        Some(id)
    }

    fn take(&self, id: ReservationId) -> Option<StdUdpSocket> {
        self.sockets.lock().ok()?.remove(&id)
    }
}

/// The relay sockets a worker owns.
pub(crate) struct Relays {
    ports: RangeInclusive<u16>,
    sockets: RelayMap<StdUdpSocket>,
    poll: Poller,
    held: std::sync::Arc<HeldPorts>,
    next_id: u64,
    cursor: u16,
}

impl Relays {
    pub fn new(
        ports: RangeInclusive<u16>,
        seed: u16,
        held: std::sync::Arc<HeldPorts>,
        poll: Poller,
    ) -> Self {
        let span = u32::from(*ports.end()) - u32::from(*ports.start()) + 1;
        let cursor = (u32::from(*ports.start()) + u32::from(seed) % span) as u16;
        Self {
            ports,
            sockets: RelayMap::default(),
            poll,
            held,
            next_id: 1,
            cursor,
        }
    }

    /// Sends `data` from relay `id` to `peer`; errors (ICMP, full buffers) drop the datagram.
    pub fn send(&self, id: RelayId, data: &[u8], peer: SocketAddr) -> bool {
        match self.sockets.get(&id) {
            Some(socket) => socket.send_to(data, peer).is_ok(),
            None => false,
        }
    }

    /// The socket of relay `id`, for reading.
    pub fn socket(&self, id: RelayId) -> Option<BorrowedFd<'_>> {
        self.sockets.get(&id).map(|s| s.as_fd())
    }

    fn bind(&mut self, ip: IpAddr, even: bool) -> Result<StdUdpSocket, RelayError> {
        let sock = socket::bind_udp_in_range(ip, self.ports.clone(), self.cursor, even).map_err(|e| match e {
            RelayBindError::Exhausted => RelayError::Exhausted,
            RelayBindError::Io(err) => {
                tracing::warn!(target: "turnstone::io", %ip, error = %err, "relay socket bind failed");
                RelayError::Failed
            }
        })?;
        // Spread ports: the next search starts after the one just taken.
        if let Ok(addr) = sock.local_addr() {
            self.cursor = if addr.port() >= *self.ports.end() {
                *self.ports.start()
            } else {
                addr.port() + 1
            };
        }
        Ok(sock)
    }

    fn register(&mut self, sock: StdUdpSocket) -> Result<OpenedRelay, RelayError> {
        let addr = sock.local_addr().map_err(|_| RelayError::Failed)?;
        let id = RelayId(self.next_id);
        self.next_id += 1;
        self.poll
            .add(sock.as_fd(), Token::Relay(id.0))
            .map_err(|e| {
                tracing::warn!(target: "turnstone::io", error = %e, "cannot watch relay socket");
                RelayError::Failed
            })?;
        self.sockets.insert(id, sock);
        Ok(OpenedRelay {
            id,
            addr,
            reservation: None,
        })
    }

    /// Closes every socket (worker shutdown).
    pub fn clear(&mut self) {
        for (_, socket) in self.sockets.drain() {
            self.poll.remove(socket.as_fd());
        }
    }
}

impl RelayProvider for Relays {
    fn open(&mut self, request: RelayRequest) -> Result<OpenedRelay, RelayError> {
        match request {
            RelayRequest::Any { ip } => {
                let sock = self.bind(ip, false)?;
                self.register(sock)
            }
            RelayRequest::Even { ip, reserve_next } => {
                // RFC 8656 §7.2: an even port, and with the R bit port + 1 held for later. Try
                // even ports until one whose successor is free too.
                let mut tries = 0;
                loop {
                    let sock = self.bind(ip, true)?;
                    let addr = sock.local_addr().map_err(|_| RelayError::Failed)?;
                    if !reserve_next {
                        return self.register(sock);
                    }
                    let next = addr
                        .port()
                        .checked_add(1)
                        .filter(|p| self.ports.contains(p));
                    if let Some(held) =
                        next.and_then(|p| socket::bind_udp_exact(SocketAddr::new(ip, p)).ok())
                    {
                        let mut opened = self.register(sock)?;
                        opened.reservation = self.held.hold(held);
                        return Ok(opened);
                    }
                    tries += 1;
                    if tries > 64 {
                        return Err(RelayError::Exhausted);
                    }
                }
            }
            RelayRequest::Reserved(rid) => {
                let sock = self.held.take(rid).ok_or(RelayError::UnknownReservation)?;
                self.register(sock)
            }
        }
    }

    fn close(&mut self, id: RelayId) {
        if let Some(socket) = self.sockets.remove(&id) {
            self.poll.remove(socket.as_fd());
        }
    }

    fn release(&mut self, id: ReservationId) {
        self.held.take(id);
    }

    fn set_dont_fragment(&mut self, id: RelayId) {
        if let Some(socket) = self.sockets.get(&id)
            && let Err(e) = socket::set_dont_fragment(socket, true)
        {
            tracing::debug!(target: "turnstone::io", error = %e, "could not set DF on relay socket");
        }
    }
}
