//! Relay sockets of one worker: the [`RelayProvider`] the core asks for sockets. The sockets
//! are plain non-blocking std sockets watched by the worker's [`Poller`].

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::core::{
    OpenedRelay, RelayError, RelayId, RelayMap, RelayProvider, RelayRequest, ReservationId,
};

use super::ports::RelayPorts;
use crate::sys::poller::{Poller, Token};
use crate::sys::socket;

/// The relay sockets a worker owns.
pub(crate) struct Relays {
    sockets: RelayMap<StdUdpSocket>,
    poll: Poller,
    /// Free ports, live ports and held reservations, shared by every worker.
    ports: Arc<RelayPorts>,
    next_id: u64,
}

impl Relays {
    pub fn new(ports: Arc<RelayPorts>, poll: Poller) -> Self {
        Self {
            sockets: RelayMap::default(),
            poll,
            ports,
            next_id: 1,
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

    fn register(&mut self, sock: StdUdpSocket) -> Result<OpenedRelay, RelayError> {
        let addr = sock.local_addr().map_err(|_| RelayError::Failed)?;
        let id = RelayId(self.next_id);
        self.next_id += 1;
        if let Err(e) = self.poll.add(sock.as_fd(), Token::Relay(id.0)) {
            tracing::warn!(target: "turnstone::io", error = %e, "cannot watch relay socket");
            drop(sock);
            self.ports.give_back(addr.is_ipv6(), addr.port());
            return Err(RelayError::Failed);
        }
        self.sockets.insert(id, sock);
        // From now on our own relay address is a valid peer at this port (relay-to-relay).
        self.ports.live.open(addr.is_ipv6(), addr.port());
        Ok(OpenedRelay {
            id,
            addr,
            reservation: None,
        })
    }

    /// Closes every socket (worker shutdown).
    pub fn clear(&mut self) {
        let ids: Vec<RelayId> = self.sockets.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }
}

impl RelayProvider for Relays {
    fn open(&mut self, request: RelayRequest) -> Result<OpenedRelay, RelayError> {
        match request {
            RelayRequest::Any { ip } => {
                let sock = self.ports.bind(ip, false)?;
                self.register(sock)
            }
            RelayRequest::Even {
                ip,
                reserve_next: false,
            } => {
                let sock = self.ports.bind(ip, true)?;
                self.register(sock)
            }
            RelayRequest::Even {
                ip,
                reserve_next: true,
            } => {
                // RFC 8656 §7.2: an even port, and with the R bit port + 1 held for later.
                let (sock, next) = self.ports.bind_pair(ip)?;
                let mut opened = match self.register(sock) {
                    Ok(opened) => opened,
                    Err(e) => {
                        let id = self.ports.hold(next);
                        self.ports.release(id);
                        return Err(e);
                    }
                };
                opened.reservation = Some(self.ports.hold(next));
                Ok(opened)
            }
            RelayRequest::Reserved(rid) => {
                let sock = self
                    .ports
                    .claim(rid)
                    .ok_or(RelayError::UnknownReservation)?;
                self.register(sock)
            }
        }
    }

    fn close(&mut self, id: RelayId) {
        if let Some(socket) = self.sockets.remove(&id) {
            self.poll.remove(socket.as_fd());
            let addr = socket.local_addr();
            drop(socket);
            // Not a valid peer any more: the kernel may give the port to anyone now.
            if let Ok(addr) = addr {
                self.ports.live.close(addr.is_ipv6(), addr.port());
                self.ports.give_back(addr.is_ipv6(), addr.port());
            }
        }
    }

    fn release(&mut self, id: ReservationId) {
        self.ports.release(id);
    }

    fn set_dont_fragment(&mut self, id: RelayId) {
        if let Some(socket) = self.sockets.get(&id)
            && let Err(e) = socket::set_dont_fragment(socket, true)
        {
            tracing::debug!(target: "turnstone::io", error = %e, "could not set DF on relay socket");
        }
    }
}
