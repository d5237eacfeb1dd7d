//! A scripted relay side for the core (DESIGN.md §3, §7): what IO does with
//! [`Command::OpenRelay`], [`Command::CloseRelay`] and [`Command::ReleaseReservation`], with
//! fake addresses and no sockets. The core tests, the fuzz targets, the benches and the
//! zero-allocation test drive a [`Server`] with it instead of each keeping a fake of its own.
//!
//! By default every open is confirmed at once with the next port of a list. Tests script the
//! rest: exhaustion (an empty list, or [`RelayError::Exhausted`] in `failures`), bind failures
//! ([`RelayError::Failed`]), EVEN-PORT pairs (R bit: port + 1 is held as a reservation) and
//! slow binds (`delay`: confirmations wait in `held` until [`ScriptedRelays::confirm_held`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use crate::core::{
    Command, ConnectionId, Deferred, FiveTuple, Now, OpenedRelay, PeerAddr, RelayAddr, RelayError,
    RelayId, RelayRequest, RelayToken, ReservationId, Server,
};

/// Relay sockets that exist only as addresses; records every request, close and release.
#[derive(Debug, Default)]
pub struct ScriptedRelays {
    /// Ports handed out in order; an open that finds none left fails with `Exhausted`.
    pub ports: VecDeque<u16>,
    /// The next opens fail with these, in order, before any port is taken.
    pub failures: VecDeque<RelayError>,
    /// Keep confirmations back (a slow bind) until [`ScriptedRelays::confirm_held`].
    pub delay: bool,
    /// Opens requested and not confirmed yet (with `delay`).
    pub held: VecDeque<(RelayToken, RelayRequest)>,
    /// Every open requested, in order.
    pub requests: Vec<RelayRequest>,
    /// Open relays and their addresses.
    pub open: BTreeMap<RelayId, SocketAddr>,
    /// Held ports (EVEN-PORT R bit) and their addresses.
    pub reserved: BTreeMap<ReservationId, SocketAddr>,
    /// Relays closed, in order.
    pub closed: Vec<RelayId>,
    /// Reservations released, in order.
    pub released: Vec<ReservationId>,
    /// Relays opened with DONT-FRAGMENT.
    pub dont_fragment: Vec<RelayId>,
    /// Closes of relays and releases of reservations that were not open: always a bug of the
    /// server (a double close would return a port to the pool twice).
    pub strays: usize,
    /// TCP relays (RFC 6062 listening sockets) among `open`.
    pub tcp: Vec<RelayId>,
    /// Connects asked for (RFC 6062 §5.2) and not confirmed yet: the test confirms them
    /// with `Server::peer_connected` (`Harness::peer_connected`).
    pub connects: Vec<(ConnectionId, RelayId, PeerAddr)>,
    /// Peer connections IO holds (connected or accepted, not closed).
    pub connections: Vec<ConnectionId>,
    /// Splices asked for: (client data connection, peer connection).
    pub splices: Vec<(FiveTuple, ConnectionId)>,
    /// Peer connections closed on the core's command, in order.
    pub closed_connections: Vec<ConnectionId>,
    next_id: u64,
}

impl ScriptedRelays {
    /// Relays handing out `ports` in order.
    pub fn with_ports(ports: impl IntoIterator<Item = u16>) -> Self {
        Self {
            ports: ports.into_iter().collect(),
            ..Self::default()
        }
    }

    /// The id of the open relay at `addr`.
    pub fn id_of(&self, addr: SocketAddr) -> Option<RelayId> {
        self.open
            .iter()
            .find(|(_, a)| **a == addr)
            .map(|(id, _)| *id)
    }

    /// Opens one relay the way IO would, from the script. Relays and reservations share one
    /// counter: the reservation of the n-th open is number n.
    pub fn open(&mut self, request: RelayRequest) -> Result<OpenedRelay, RelayError> {
        self.requests.push(request);
        self.next_id += 1;
        if let Some(error) = self.failures.pop_front() {
            return Err(error);
        }
        let mut reservation = None;
        let addr = match request {
            RelayRequest::Any { ip }
            | RelayRequest::Even {
                ip,
                reserve_next: false,
            } => SocketAddr::new(ip, self.ports.pop_front().ok_or(RelayError::Exhausted)?),
            RelayRequest::Even {
                ip,
                reserve_next: true,
            } => {
                // RFC 8656 §7.2: the even port for the relay, port + 1 held.
                let port = self.ports.pop_front().ok_or(RelayError::Exhausted)?;
                let rid = ReservationId(self.next_id);
                let next = port.checked_add(1).ok_or(RelayError::Exhausted)?;
                self.reserved.insert(rid, SocketAddr::new(ip, next));
                reservation = Some(rid);
                SocketAddr::new(ip, port)
            }
            RelayRequest::Reserved(rid) => self
                .reserved
                .remove(&rid)
                .ok_or(RelayError::UnknownReservation)?,
        };
        let id = RelayId(self.next_id);
        self.open.insert(id, addr);
        Ok(OpenedRelay {
            id,
            addr: RelayAddr(addr),
            reservation,
        })
    }

    /// Carries out `server`'s commands until none are left: opens are confirmed (or held with
    /// `delay`), closes and releases recorded. Each answer a confirmation produces is handed
    /// to `reply` with its bytes; other commands (usage records) are returned.
    pub fn pump(
        &mut self,
        server: &mut Server,
        now: Now,
        out: &mut [u8],
        mut reply: impl FnMut(Deferred, &[u8]),
    ) -> Vec<Command> {
        let mut other = Vec::new();
        while let Some(command) = server.next_command() {
            match command {
                Command::OpenRelay {
                    token,
                    request,
                    dont_fragment,
                } => {
                    if self.delay {
                        self.held.push_back((token, request));
                        continue;
                    }
                    let result = self.open(request);
                    if let (Ok(opened), true) = (result, dont_fragment) {
                        self.dont_fragment.push(opened.id);
                    }
                    if let Some(answer) = server.relay_opened(now, token, result, out)
                        && let Some(bytes) = out.get(..answer.len)
                    {
                        reply(answer, bytes);
                    }
                }
                Command::CloseRelay { relay } => {
                    if self.open.remove(&relay).is_none() {
                        self.strays += 1;
                    }
                    self.tcp.retain(|r| *r != relay);
                    self.closed.push(relay);
                }
                Command::ReleaseReservation { reservation } => {
                    if self.reserved.remove(&reservation).is_none() {
                        self.strays += 1;
                    }
                    self.released.push(reservation);
                }
                Command::OpenTcpRelay { token, ip } => {
                    let result = self.open(RelayRequest::Any { ip });
                    if let Ok(opened) = result {
                        self.tcp.push(opened.id);
                    }
                    if let Some(answer) = server.relay_opened(now, token, result, out)
                        && let Some(bytes) = out.get(..answer.len)
                    {
                        reply(answer, bytes);
                    }
                }
                Command::ConnectPeer {
                    connection,
                    relay,
                    peer,
                } => self.connects.push((connection, relay, peer)),
                Command::Splice {
                    data_connection,
                    connection,
                    ..
                } => self.splices.push((data_connection, connection)),
                Command::CloseConnection { connection } => {
                    self.connects.retain(|(c, _, _)| *c != connection);
                    self.connections.retain(|c| *c != connection);
                    self.closed_connections.push(connection);
                }
                Command::Usage(_) => other.push(command),
            }
        }
        other
    }

    /// Confirms every held open, oldest first (clears `delay`), then pumps as
    /// [`ScriptedRelays::pump`] does.
    pub fn confirm_held(
        &mut self,
        server: &mut Server,
        now: Now,
        out: &mut [u8],
        mut reply: impl FnMut(Deferred, &[u8]),
    ) -> Vec<Command> {
        self.delay = false;
        while let Some((token, request)) = self.held.pop_front() {
            let result = self.open(request);
            if let Some(answer) = server.relay_opened(now, token, result, out)
                && let Some(bytes) = out.get(..answer.len)
            {
                reply(answer, bytes);
            }
        }
        self.pump(server, now, out, reply)
    }
}
