//! Relay sockets of one worker, opened and closed on the core's commands (DESIGN.md §3):
//! [`bind`] takes a port from the shared pool and binds it *without* the worker lock; then,
//! under the lock, [`Relays::register`] watches the socket on the worker's [`Poller`] and the
//! result is confirmed to the core. The sockets are plain non-blocking std sockets.

use std::net::{TcpListener as StdTcpListener, UdpSocket as StdUdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

use crate::core::{
    OpenedRelay, PeerAddr, RelayAddr, RelayError, RelayId, RelayMap, RelayRequest, RelayToken,
    ReservationId,
};

use super::ports::RelayPorts;
use crate::sys::poller::{Poller, Token};
use crate::sys::socket;

/// A relay socket the core asked for ([`crate::core::Command::OpenRelay`], or with `tcp` a
/// TCP relay's listening socket, [`crate::core::Command::OpenTcpRelay`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Open {
    pub token: RelayToken,
    pub request: RelayRequest,
    pub dont_fragment: bool,
    /// RFC 6062: a listening TCP socket on the request's IP.
    pub tcp: bool,
}

/// A socket bound for an [`Open`], not yet watched: what [`bind`] did outside the lock.
pub(crate) struct Bound {
    pub token: RelayToken,
    result: Result<(StdUdpSocket, Option<ReservationId>), RelayError>,
}

/// A TCP relay's listening socket bound for an [`Open`] (RFC 6062 §5.1).
pub(crate) struct BoundTcp {
    pub token: RelayToken,
    pub result: Result<StdTcpListener, RelayError>,
}

/// Binds the TCP relay listener `open` asks for, without the worker lock (see [`bind`]).
pub(crate) fn bind_tcp(ports: &RelayPorts, open: Open) -> BoundTcp {
    let result = match open.request {
        RelayRequest::Any { ip } | RelayRequest::Even { ip, .. } => ports.bind_tcp(ip),
        // The core never asks for a reserved port for a TCP allocation (RFC 6062 §5.1).
        RelayRequest::Reserved(_) => Err(RelayError::UnknownReservation),
    };
    BoundTcp {
        token: open.token,
        result,
    }
}

/// Binds the socket `open` asks for. Called without the worker lock: binding is a system call
/// (a few when the kernel refuses ports), and the pool makes it O(1) per relay.
pub(crate) fn bind(ports: &RelayPorts, open: Open) -> Bound {
    let result = match open.request {
        RelayRequest::Any { ip } => ports.bind(ip, false).map(|sock| (sock, None)),
        RelayRequest::Even {
            ip,
            reserve_next: false,
        } => ports.bind(ip, true).map(|sock| (sock, None)),
        // RFC 8656 §7.2: an even port, and with the R bit port + 1 held for later.
        RelayRequest::Even {
            ip,
            reserve_next: true,
        } => ports
            .bind_pair(ip)
            .map(|(sock, next)| (sock, Some(ports.hold(next)))),
        RelayRequest::Reserved(rid) => ports
            .claim(rid)
            .map(|sock| (sock, None))
            .ok_or(RelayError::UnknownReservation),
    };
    let result = result.inspect(|(sock, _)| {
        // RFC 8656 §7.2 DONT-FRAGMENT: best effort, as before.
        if open.dont_fragment
            && let Err(e) = socket::set_dont_fragment(sock, true)
        {
            tracing::debug!(target: "turnstone::io", error = %e, "could not set DF on relay socket");
        }
    });
    Bound {
        token: open.token,
        result,
    }
}

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
    pub fn send(&self, id: RelayId, data: &[u8], peer: PeerAddr) -> bool {
        match self.sockets.get(&id) {
            Some(socket) => socket.send_to(data, peer.0).is_ok(),
            None => false,
        }
    }

    /// The socket of relay `id`, for reading.
    pub fn socket(&self, id: RelayId) -> Option<BorrowedFd<'_>> {
        self.sockets.get(&id).map(|s| s.as_fd())
    }

    /// A fresh relay id (TCP relays share the numbering, which the core's tables key on).
    pub fn next_id(&mut self) -> RelayId {
        let id = RelayId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The shared port state (TCP relays mark their live ports and give ports back there).
    pub fn ports(&self) -> &Arc<RelayPorts> {
        &self.ports
    }

    /// Watches a socket [`bind`] opened (under the worker lock, so the data-plane thread
    /// finds it once it reports readable); the result goes to `Server::relay_opened`.
    pub fn register(&mut self, bound: Bound) -> Result<OpenedRelay, RelayError> {
        let (sock, reservation) = bound.result?;
        let opened = self.watch(sock);
        match (opened, reservation) {
            (Ok(opened), reservation) => Ok(OpenedRelay {
                reservation,
                ..opened
            }),
            (Err(e), Some(rid)) => {
                self.ports.release(rid);
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    fn watch(&mut self, sock: StdUdpSocket) -> Result<OpenedRelay, RelayError> {
        let addr = sock.local_addr().map_err(|_| RelayError::Failed)?;
        let id = self.next_id();
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
            addr: RelayAddr(addr),
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

    /// Closes relay `id` and gives its port back (`Command::CloseRelay`).
    pub fn close(&mut self, id: RelayId) {
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

    /// Closes a held port nobody claimed (`Command::ReleaseReservation`).
    pub fn release(&self, id: ReservationId) {
        self.ports.release(id);
    }

    /// Binds and registers in one go, lock or not (tests).
    #[cfg(test)]
    pub fn open(&mut self, request: RelayRequest) -> Result<OpenedRelay, RelayError> {
        let open = Open {
            token: RelayToken(0),
            request,
            dont_fragment: false,
            tcp: false,
        };
        let bound = bind(&self.ports, open);
        self.register(bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relays(range: std::ops::RangeInclusive<u16>) -> Relays {
        let ports = RelayPorts::new(range, Arc::default(), 11);
        Relays::new(Arc::new(ports), Poller::new().unwrap())
    }

    fn open(request: RelayRequest) -> Open {
        Open {
            token: RelayToken(1),
            request,
            dont_fragment: true,
            tcp: false,
        }
    }

    #[test]
    fn an_even_port_pair_bound_outside_the_lock_registers_its_relay_and_holds_the_next_port() {
        let mut relays = relays(41200..=41299);
        let ip = "127.0.0.1".parse().unwrap();
        let bound = bind(
            &relays.ports,
            open(RelayRequest::Even {
                ip,
                reserve_next: true,
            }),
        );
        let opened = relays.register(bound).unwrap();
        assert_eq!(opened.addr.0.port() % 2, 0);
        assert!(relays.ports.live.is_open(false, opened.addr.0.port()));
        let rid = opened.reservation.expect("port + 1 held");
        // A reservation-token Allocate opens exactly the held port.
        let bound = bind(&relays.ports, open(RelayRequest::Reserved(rid)));
        let second = relays.register(bound).unwrap();
        assert_eq!(second.addr.0.port(), opened.addr.0.port() + 1);
        let bound = bind(&relays.ports, open(RelayRequest::Reserved(rid)));
        assert_eq!(
            relays.register(bound).unwrap_err(),
            RelayError::UnknownReservation
        );
    }

    #[test]
    fn closing_a_relay_clears_its_live_port_and_returns_the_port_to_the_pool() {
        // A port free right now (a fixed one may be another test's or process's).
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .unwrap()
            .port();
        let mut relays = relays(port..=port);
        let ip = "127.0.0.1".parse().unwrap();
        let opened = relays.open(RelayRequest::Any { ip }).unwrap();
        assert_eq!(
            relays.open(RelayRequest::Any { ip }).unwrap_err(),
            RelayError::Exhausted,
            "a one-port range is exhausted by one relay"
        );
        relays.close(opened.id);
        assert!(!relays.ports.live.is_open(false, port));
        assert!(relays.socket(opened.id).is_none());
        let again = relays.open(RelayRequest::Any { ip }).unwrap();
        assert_eq!(again.addr.0.port(), port);
    }
}
