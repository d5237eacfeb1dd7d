//! A worker's TCP/TLS client connections, served on its data-plane thread's epoll loop beside
//! the UDP sockets: one thread per worker, so a round trip through a stream client wakes one
//! thread, as on UDP. Accepting and the TLS handshake stay on the stream runtime
//! (`stream`, `tls_handoff`), which hands established connections over ([`Streams::adopt`]).
//!
//! Each connection owns its buffers, allocated once: unframed input, and what goes out
//! (replies and peer data in arrival order, sealed into TLS records for TLS clients by
//! [`RecordLayer`]), written with one `send` per connection per batch. What goes out is
//! bounded: peer data beyond [`QUEUE_BYTES`] is dropped (a client that reads too slowly
//! loses datagrams, as over UDP), and a connection whose replies pile up stops being read
//! until they leave. A connection that takes nothing for the write timeout is closed.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use crate::core::FiveTuple;

use super::conn_slots::Slot;
use super::spec::StreamLimits;
use super::stream_buf::InputBuffer;
use super::stream_timers::{Deadlines, after};
use super::tls_records::{MAX_RECORD, RecordLayer};
use crate::sys::poller::{Interest, Poller, Token};

/// Peer data kept for a client at most; more is dropped.
pub(crate) const QUEUE_BYTES: usize = 64 * 1024;
/// Above this much unsent output the connection is not read (its replies must leave first).
const READ_PAUSE: usize = QUEUE_BYTES / 2;
/// Output capacity a connection starts with (it grows up to [`QUEUE_BYTES`] and stays).
const FIRST_CAPACITY: usize = 4 * 1024;
/// Least room a TLS connection reads into.
const TLS_MIN_READ: usize = 4 * 1024;

/// A connection the stream runtime accepted (and for TLS, negotiated).
pub(crate) struct Adopted {
    pub socket: TcpStream,
    pub ft: FiveTuple,
    /// TLS: the record layer, and what the client sent past the handshake (undecrypted).
    pub tls: Option<(RecordLayer, Vec<u8>)>,
    /// Input already received (TLS: plaintext rustls decrypted during the handshake).
    pub early: Vec<u8>,
    pub slot: Slot,
    pub accepted: Instant,
}

/// TLS state: the record layer and undecrypted input.
pub(crate) struct Tls {
    pub records: RecordLayer,
    pub input: Vec<u8>,
}

/// One client connection.
pub(crate) struct Conn {
    /// Unique within the worker: a table index is reused once its connection is gone, so
    /// whatever waits for a connection across an unlock names both ([`Streams::take_if`]).
    pub id: u64,
    pub socket: TcpStream,
    pub ft: FiveTuple,
    pub tls: Option<Tls>,
    /// Unframed plaintext.
    pub input: InputBuffer,
    /// Bytes for the socket, in order (TLS: sealed records).
    out: Vec<u8>,
    pub timers: Deadlines,
    /// When the socket has taken nothing of `out` for too long.
    write_deadline: Option<Instant>,
    /// Why it is not read now, if it is not.
    pub hold: Option<Hold>,
    /// Watched for: what epoll was last told.
    interest: Interest,
    /// In [`Streams::flushes`].
    flush_due: bool,
    /// A write failed: nothing more may go out; the connection closes.
    pub broken: bool,
    /// Its last bytes are in its output (a TLS key ran out): it closes once they are out.
    finished: bool,
    /// Peer data dropped because the client read too slowly.
    pub dropped: u64,
    /// Its allocation's data or answers went out since the last sweep: traffic, for the
    /// idle timer (noted without a clock read, applied by [`Streams::expired`]).
    pub traffic_seen: bool,
    /// Its place in the connection caps, freed with it.
    _slot: Slot,
}

/// A connection leaving the data-plane thread (a ConnectionBind succeeded, RFC 6062 §5.4):
/// everything the splice needs to carry on where the framing stopped.
pub(crate) struct Parts {
    pub socket: TcpStream,
    pub ft: FiveTuple,
    /// TLS: the record layer and input not decrypted yet.
    pub tls: Option<(RecordLayer, Vec<u8>)>,
    /// Bytes for the client not written yet (TLS: sealed), the bind's answer last.
    pub out: Vec<u8>,
    /// Plaintext that followed the ConnectionBind: the first bytes for the peer.
    pub early: Vec<u8>,
    pub slot: Slot,
}

fn conns_alive(conns: &[Option<Conn>], index: usize) -> bool {
    conns.get(index).is_some_and(Option::is_some)
}

/// Why a connection is not read for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hold {
    /// Its output is above [`READ_PAUSE`]: replies must leave before more requests come in.
    Output,
    /// The relays its Allocate asked for are being bound.
    Relays,
    /// Its ConnectionBind is being handled (RFC 6062 §5.4).
    Bind,
}

/// What a read brought.
pub(crate) enum Read {
    /// New input (possibly none yet: a partial TLS record).
    Input,
    /// The client closed, or the connection failed.
    Closed(&'static str),
}

impl Conn {
    fn new(id: u64, adopted: Adopted, limits: &StreamLimits, now: Instant) -> Self {
        let mut input = InputBuffer::new();
        input.extend(&adopted.early);
        Self {
            id,
            socket: adopted.socket,
            ft: adopted.ft,
            tls: adopted.tls.map(|(records, received)| {
                let mut input = Vec::with_capacity(MAX_RECORD + TLS_MIN_READ);
                input.extend_from_slice(&received);
                Tls { records, input }
            }),
            input,
            out: Vec::with_capacity(FIRST_CAPACITY),
            timers: Deadlines::new(limits, adopted.accepted, now),
            write_deadline: None,
            hold: None,
            interest: Interest::READ,
            flush_due: false,
            broken: false,
            finished: false,
            dropped: 0,
            traffic_seen: false,
            _slot: adopted.slot,
        }
    }

    /// One read from the socket; for TLS, every complete record is opened into the input.
    pub fn read(&mut self) -> Read {
        let Some(tls) = &mut self.tls else {
            return match crate::sys::socket::read_into_spare(&self.socket, self.input.for_read()) {
                Ok(0) => Read::Closed("closed by the client"),
                Ok(_) => Read::Input,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Input,
                Err(_) => Read::Closed("read failed"),
            };
        };
        // Room for a whole record plus a read stays from the start (a partial record is
        // shorter than MAX_RECORD), so this only grows a buffer that was handed over full.
        if tls.input.capacity() - tls.input.len() < TLS_MIN_READ {
            tls.input.reserve_exact(TLS_MIN_READ);
        }
        match crate::sys::socket::read_into_spare(&self.socket, &mut tls.input) {
            Ok(0) => return Read::Closed("closed by the client"),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Input,
            Err(_) => return Read::Closed("read failed"),
        }
        let mut at = 0;
        loop {
            match tls.records.open(&mut tls.input[at..]) {
                Ok(Some(opened)) => {
                    self.input
                        .extend(&tls.input[at..][opened.plaintext.clone()]);
                    at += opened.len;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(target: "turnstone::io", client = %self.ft.client, error = %e, "TLS record refused");
                    return Read::Closed("TLS record refused");
                }
            }
        }
        tls.input.drain(..at);
        Read::Input
    }

    /// Appends a message for the client; `false` (and counted) when the client has more
    /// than [`QUEUE_BYTES`] waiting.
    pub fn push(&mut self, message: &[u8]) -> bool {
        if self.broken || self.finished || self.out.len() + message.len() > QUEUE_BYTES {
            self.dropped += 1;
            return false;
        }
        self.append(message);
        true
    }

    /// Appends a reply to the client's own request: never dropped (reading stops instead
    /// once replies pile up, see [`Conn::wants_hold`]).
    pub fn reply(&mut self, message: &[u8]) {
        if !self.broken && !self.finished {
            self.append(message);
        }
    }

    fn append(&mut self, message: &[u8]) {
        let len = match &self.tls {
            Some(tls) => tls.records.sealed_len(message.len()),
            None => message.len(),
        };
        let want = self.out.len() + len;
        if want > self.out.capacity() {
            // Double up to the queue's budget, never beyond what is needed past it.
            let to = (self.out.capacity() * 2).clamp(want, QUEUE_BYTES.max(want));
            self.out.reserve_exact(to - self.out.len());
        }
        match &mut self.tls {
            Some(tls) => {
                if tls.records.seal(message, &mut self.out).is_err() {
                    // The key is spent: a clean end, once what is sealed has left.
                    let _ = tls.records.seal_close_notify(&mut self.out);
                    self.finished = true;
                }
            }
            None => self.out.extend_from_slice(message),
        }
    }

    /// Whether its output is large enough that reading should wait.
    pub fn wants_hold(&self) -> bool {
        self.out.len() > READ_PAUSE
    }

    /// Writes what it can; `false` when the connection is broken.
    fn write(&mut self, now: Instant, within: Duration) -> bool {
        let mut progress = false;
        while !self.out.is_empty() && !self.broken {
            match (&self.socket).write(&self.out) {
                Ok(0) => self.broken = true,
                Ok(n) => {
                    self.out.drain(..n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.broken = true,
            }
        }
        if self.out.is_empty() {
            self.write_deadline = None;
            if self.finished {
                return false;
            }
        } else if progress || self.write_deadline.is_none() {
            // A client that reads slowly keeps its connection; one that stops does not.
            self.write_deadline = Some(after(now, within));
        }
        !self.broken
    }

    /// Over TLS, tells the client we are done (close_notify, RFC 8446 §6.1), as far as the
    /// socket takes it now: a closing connection waits for nothing.
    pub fn say_goodbye(&mut self) {
        let Some(tls) = &mut self.tls else {
            return;
        };
        if self.broken || self.finished || tls.records.seal_close_notify(&mut self.out).is_err() {
            return;
        }
        let _ = (&self.socket).write(&self.out);
    }

    /// Takes the connection apart for the splice.
    pub fn into_parts(self) -> Parts {
        Parts {
            socket: self.socket,
            ft: self.ft,
            tls: self.tls.map(|tls| (tls.records, tls.input)),
            out: self.out,
            early: self.input.data().to_vec(),
            slot: self._slot,
        }
    }

    /// The earliest deadline and why it closes the connection.
    pub fn deadline(&self) -> (Instant, &'static str) {
        let (at, why) = self.timers.next();
        match self.write_deadline {
            Some(w) if w < at => (w, "the client stopped reading"),
            _ => (at, why),
        }
    }
}

/// The worker's stream clients, by epoll token and by 5-tuple.
pub(crate) struct Streams {
    by_tuple: HashMap<FiveTuple, usize>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections with output to write at the next [`Streams::flush`].
    flushes: Vec<usize>,
    poller: Poller,
    pub limits: StreamLimits,
    next_id: u64,
}

impl Streams {
    pub fn new(poller: Poller, limits: StreamLimits) -> Self {
        Self {
            by_tuple: HashMap::new(),
            conns: Vec::new(),
            free: Vec::new(),
            flushes: Vec::with_capacity(64),
            poller,
            limits,
            next_id: 0,
        }
    }

    /// Takes a connection over from the stream runtime and watches it; returns its index.
    pub fn adopt(&mut self, adopted: Adopted, now: Instant) -> Option<usize> {
        self.next_id += 1;
        let conn = Conn::new(self.next_id, adopted, &self.limits, now);
        let ft = conn.ft;
        let index = self.free.pop().unwrap_or(self.conns.len());
        if let Err(e) = self.poller.add(conn.socket.as_fd(), Token::Stream(index)) {
            tracing::warn!(target: "turnstone::io", client = %ft.client, error = %e, "cannot watch a connection");
            self.free.push(index);
            return None;
        }
        if index == self.conns.len() {
            self.conns.push(Some(conn));
        } else {
            self.conns[index] = Some(conn);
        }
        self.by_tuple.insert(ft, index);
        Some(index)
    }

    pub fn is_empty(&self) -> bool {
        self.by_tuple.is_empty()
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut Conn> {
        self.conns.get_mut(index)?.as_mut()
    }

    pub fn index_of(&self, ft: &FiveTuple) -> Option<usize> {
        self.by_tuple.get(ft).copied()
    }

    /// Takes connection `index` out while it is served (put it back with [`Streams::put`]).
    pub fn take(&mut self, index: usize) -> Option<Conn> {
        self.conns.get_mut(index)?.take()
    }

    /// Takes connection `index` out if it is still connection `id`.
    pub fn take_if(&mut self, index: usize, id: u64) -> Option<Conn> {
        let place = self.conns.get_mut(index)?;
        if place.as_ref()?.id != id {
            return None;
        }
        place.take()
    }

    pub fn put(&mut self, index: usize, conn: Conn) {
        if let Some(place) = self.conns.get_mut(index) {
            *place = Some(conn);
        }
    }

    /// Forgets connection `index` (already taken out): its slot in the table is free again
    /// and epoll no longer watches it.
    pub fn forget(&mut self, index: usize, conn: &Conn) {
        self.poller.remove(conn.socket.as_fd());
        // A client reconnecting from the same 5-tuple (after a reset) may own the entry now.
        if self.by_tuple.get(&conn.ft) == Some(&index) {
            self.by_tuple.remove(&conn.ft);
        }
        if let Some(place) = self.conns.get_mut(index) {
            *place = None;
            self.free.push(index);
        }
    }

    /// Peer data or an answer for client `ft`, written at the next [`Streams::flush`].
    pub fn push(&mut self, ft: &FiveTuple, message: &[u8]) {
        let Some(&index) = self.by_tuple.get(ft) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return;
        };
        conn.traffic_seen = true;
        if conn.push(message) {
            self.schedule(index);
        }
    }

    /// Resets the idle timer of client `ft`: its allocation had traffic elsewhere.
    pub fn saw_traffic(&mut self, ft: &FiveTuple, now: Instant) {
        let index = self.by_tuple.get(ft).copied();
        if let Some(conn) = index.and_then(|i| self.get_mut(i)) {
            conn.timers.allocation_traffic(now);
        }
    }

    /// Marks connection `index` for the next [`Streams::flush`].
    pub fn schedule(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut)
            && !conn.flush_due
        {
            conn.flush_due = true;
            self.flushes.push(index);
        }
    }

    /// Whether some connection has output scheduled.
    pub fn has_flushes(&self) -> bool {
        !self.flushes.is_empty()
    }

    /// Writes every scheduled connection's output (one `send` each, as a rule) and watches
    /// for room where some is left. Returns connections that broke, to close.
    pub fn flush(&mut self, now: Instant, broken: &mut Vec<usize>) {
        let within = self.limits.handshake_timeout;
        for i in 0..self.flushes.len() {
            let index = self.flushes[i];
            let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
                continue;
            };
            conn.flush_due = false;
            if !conn.write(now, within) {
                broken.push(index);
                continue;
            }
            Self::watch(&self.poller, index, conn);
        }
        self.flushes.clear();
    }

    /// Writes connection `index` once epoll says it has room.
    pub fn writable(&mut self, index: usize, now: Instant) -> bool {
        let within = self.limits.handshake_timeout;
        let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) else {
            return true;
        };
        if !conn.write(now, within) {
            return false;
        }
        Self::watch(&self.poller, index, conn);
        true
    }

    /// Tells epoll what `conn` waits for: input unless held, room while output is left or
    /// while it is held for its output (room is then what resumes it).
    fn watch(poller: &Poller, index: usize, conn: &mut Conn) {
        let want = Interest {
            read: conn.hold.is_none(),
            write: !conn.out.is_empty() || conn.hold == Some(Hold::Output),
        };
        if want != conn.interest
            && poller
                .modify(conn.socket.as_fd(), Token::Stream(index), want)
                .is_ok()
        {
            conn.interest = want;
        }
    }

    /// Re-reads what connection `index` waits for (after `hold` changed).
    pub fn rewatch(&mut self, index: usize) {
        if let Some(conn) = self.conns.get_mut(index).and_then(Option::as_mut) {
            Self::watch(&self.poller, index, conn);
        }
    }

    /// After a panic while a connection was taken out: the 5-tuples whose connection is
    /// gone, now forgotten (their allocations must end).
    pub fn orphans(&mut self) -> Vec<FiveTuple> {
        let conns = &self.conns;
        let lost: Vec<(FiveTuple, usize)> = self
            .by_tuple
            .iter()
            .filter(|&(_, &i)| conns.get(i).is_none_or(Option::is_none))
            .map(|(ft, &i)| (*ft, i))
            .collect();
        for (ft, index) in &lost {
            self.by_tuple.remove(ft);
            if *index < self.conns.len() {
                self.free.push(*index);
            }
        }
        self.flushes.retain(|&i| conns_alive(&self.conns, i));
        lost.into_iter().map(|(ft, _)| ft).collect()
    }

    /// Connections whose deadline passed, with the reason.
    pub fn expired(&mut self, now: Instant, out: &mut Vec<(usize, &'static str)>) {
        for (index, conn) in self.conns.iter_mut().enumerate() {
            if let Some(conn) = conn {
                if std::mem::take(&mut conn.traffic_seen) {
                    conn.timers.allocation_traffic(now);
                }
                let (at, why) = conn.deadline();
                if at <= now {
                    out.push((index, why));
                }
            }
        }
    }

    /// Every connection's index (shutdown).
    pub fn indices(&self) -> Vec<usize> {
        self.by_tuple.values().copied().collect()
    }
}
