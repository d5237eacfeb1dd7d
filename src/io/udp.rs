//! A worker's UDP listening socket: recvmmsg in, the core in the middle, sendmmsg out.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsFd;

use crate::core::{ClientAddr, FiveTuple, Handled, Now, Transport};

use super::admission::{Admission, is_stun_request};
use super::forward::ForwardBatch;
use super::worker::Core;
use crate::sys::mmsg::{RecvBatch, SendBatch};

/// Datagrams per recvmmsg/sendmmsg batch.
pub(crate) const BATCH: usize = 32;
/// Largest datagram handled on a UDP socket (client or peer side), headroom included.
pub(crate) const MAX_DATAGRAM: usize = 4096;
/// recvmmsg rounds on one socket per wake-up, so one busy socket cannot starve the rest;
/// epoll is level-triggered, so whatever is left reports again on the next wait.
pub(crate) const ROUNDS_PER_WAKE: usize = 8;

/// One listening UDP socket and its send batch: replies to its clients and peer data relayed
/// to them, flushed with one sendmmsg.
pub(crate) struct Listener {
    socket: UdpSocket,
    pub local: SocketAddr,
    out: SendBatch,
    forwards: ForwardBatch,
}

impl Listener {
    pub fn new(socket: UdpSocket, local: SocketAddr) -> Self {
        Self {
            socket,
            local,
            out: SendBatch::new(BATCH, MAX_DATAGRAM),
            forwards: ForwardBatch::new(BATCH, MAX_DATAGRAM),
        }
    }

    /// Reads the socket until it is empty (or for a bounded number of batches), handing each
    /// datagram to the core: replies are queued here (or in `redirects` when they leave from
    /// another listener), forwards go out of relay sockets.
    pub fn drain(
        &mut self,
        core: &mut Core,
        rx: &mut RecvBatch,
        admission: &Admission,
        now: Now,
        redirects: &mut Redirects,
    ) {
        for _ in 0..ROUNDS_PER_WAKE {
            let n = match rx.recv(self.socket.as_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on Linux; keep reading.
                    tracing::debug!(target: "turnstone::io", local = %self.local, error = %e, "udp receive error");
                    continue;
                }
            };
            self.handle_batch(core, rx, admission, now, redirects);
            // A short batch emptied the queue: skip the recvmmsg that would only see EAGAIN.
            if n < BATCH {
                return;
            }
        }
    }

    fn handle_batch(
        &mut self,
        core: &mut Core,
        rx: &RecvBatch,
        admission: &Admission,
        now: Now,
        redirects: &mut Redirects,
    ) {
        let Core { server, relays, .. } = core;
        let here = self.local;
        for i in 0..rx.len() {
            let (pkt, from) = rx.datagram(i);
            let request = is_stun_request(pkt);
            if pkt.is_empty() || (request && !admission.allow(from.ip())) {
                continue;
            }
            if request {
                // A request may end the allocation whose data is queued ahead of it (Refresh
                // with lifetime 0): that data leaves first, as it would have unbatched.
                self.forwards.flush(relays);
            }
            let five_tuple = FiveTuple {
                client: ClientAddr(from),
                server: here,
                transport: Transport::Udp,
            };
            let Some(buf) = self.next_buf() else {
                continue;
            };
            match server.handle_client(now, five_tuple, pkt, buf) {
                Handled::Reply(len) => self.out.commit(len, from),
                // RFC 5780: RESPONSE-PORT alone changes only the destination; CHANGE-REQUEST
                // names another listening socket, which sends it after this drain.
                Handled::ReplyFrom { len, local, to } if same_address(local, here) => {
                    self.out.commit(len, to);
                }
                Handled::ReplyFrom { len, local, to } => {
                    if let Some(message) = buf.get(..len) {
                        redirects.push(local, to, message);
                    }
                }
                Handled::Forward {
                    relay,
                    peer,
                    payload,
                } => self.forwards.push(relays, relay, &pkt[payload], peer),
                Handled::Drop(_) => {}
            }
        }
        self.forwards.flush(relays);
        self.flush();
    }

    /// Room for the next outgoing datagram, flushing the batch first when it is full.
    pub fn next_buf(&mut self) -> Option<&mut [u8]> {
        if self.out.next_buf().is_none() {
            self.flush();
        }
        self.out.next_buf()
    }

    /// Queues a copy of `bytes` to `to` (the answer to an Allocate whose relay was confirmed).
    pub fn queue(&mut self, bytes: &[u8], to: SocketAddr) {
        if let Some(buf) = self.next_buf()
            && let Some(slot) = buf.get_mut(..bytes.len())
        {
            slot.copy_from_slice(bytes);
            self.out.commit(bytes.len(), to);
        }
    }

    /// Queues the datagram just written into [`Listener::next_buf`] at `start..start + len`.
    pub fn commit_at(&mut self, start: usize, len: usize, to: SocketAddr) {
        self.out.commit_at(start, len, to);
    }

    /// Sends what is queued without waiting; a socket that stays full drops the rest (UDP).
    pub fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        if let Err(e) = self.out.flush(self.socket.as_fd()) {
            if e.kind() != io::ErrorKind::WouldBlock {
                tracing::debug!(target: "turnstone::io", local = %self.local, error = %e, "udp send error");
            }
            self.out.clear();
        }
    }
}

/// Replies to send from another listening socket than the one the request reached (RFC 5780
/// CHANGE-REQUEST): copied out of the reading listener's send slot, then queued on the
/// listener bound to their local address. Kept across wake-ups, so no allocation once warm.
#[derive(Default)]
pub(crate) struct Redirects {
    bytes: Vec<u8>,
    /// (local address, destination, the message in `bytes`).
    entries: Vec<(SocketAddr, SocketAddr, Range<usize>)>,
}

impl Redirects {
    fn push(&mut self, local: SocketAddr, to: SocketAddr, message: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(message);
        self.entries.push((local, to, start..self.bytes.len()));
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Queues each reply on the listener bound to its local address (every worker binds all
    /// four RFC 5780 sockets), then forgets them.
    pub fn send(&mut self, listeners: &mut [Listener]) {
        for (local, to, range) in self.entries.drain(..) {
            let Some(message) = self.bytes.get(range) else {
                continue;
            };
            match listeners.iter_mut().find(|l| same_address(l.local, local)) {
                Some(listener) => listener.queue(message, to),
                None => {
                    tracing::debug!(target: "turnstone::io", %local, "no listener to send an RFC 5780 answer from")
                }
            }
        }
        self.bytes.clear();
    }
}

/// Equal IP and port: a bound IPv6 socket's flow label and scope do not name another socket.
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}
