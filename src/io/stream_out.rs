//! Bytes bound to one TCP/TLS client from other threads: peer data the data-plane thread
//! relays, and Allocate answers confirmed elsewhere. No allocation per datagram and no
//! message queue:
//!
//! - Plain TCP, client keeping up (the usual case): the messages of one batch (one
//!   data-plane wake-up) go straight to the kernel with one non-blocking `send` on a
//!   duplicate of the socket, from the pushing thread, and the connection's task is not
//!   woken at all.
//! - Otherwise (TLS, a full socket buffer, the task writing): the message is appended to one
//!   bounded buffer per connection, and the task is woken once per batch; it swaps the buffer
//!   with its own empty one and writes the whole batch with one `write_all`.
//!
//! The lock here is held to append one message, to send it without blocking, or to swap two
//! `Vec`s, never across a task's write; the data-plane thread pushes while it holds the
//! worker's lock anyway, and the task never needs the worker's lock to drain.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::clock;

/// Bytes waiting for one TCP/TLS client at most (the kernel's send buffer holds more). A
/// client that reads slower than its peers send loses what does not fit, as UDP would.
pub(crate) const QUEUE_BYTES: usize = 64 * 1024;
/// Forwards from stream clients sent with one `sendmmsg` (per run of the same relay) at most.
pub(crate) const FORWARD_BATCH: usize = 32;
/// Largest forward that goes through the batch; a larger ChannelData payload (up to 64 KiB
/// over a stream) is sent on its own, after what the batch holds.
pub(crate) const FORWARD_MAX: usize = 4096;
/// The buffer's first capacity: most connections never hold more than a few datagrams. It
/// grows (at most to [`QUEUE_BYTES`]) on the first bursts and is then reused.
const FIRST_CAPACITY: usize = 4 * 1024;

/// The outgoing buffer of one TCP/TLS connection.
pub(crate) struct StreamOut {
    state: Mutex<State>,
    /// Signalled when the buffer goes from empty to non-empty: the task takes everything
    /// each time, so one wake-up per batch is enough, and a permit is kept if the task is busy
    /// writing (no wake-up is lost).
    wake: Notify,
    /// Messages dropped because the buffer was full.
    dropped: AtomicU64,
    /// When a message last went straight to the socket (see [`State::direct`]), in
    /// nanoseconds after `base`; 0 for never. The task's idle timer reads it: that traffic
    /// never wakes the task.
    last_direct: AtomicU64,
    base: Instant,
}

struct State {
    pending: Vec<u8>,
    /// The task is writing (it took `pending`): nothing may go to the socket meanwhile, or
    /// it would land inside the task's bytes.
    writing: bool,
    /// Plain TCP: a duplicate of the connection's socket (non-blocking, as the task's is).
    /// While the task is not writing, what is pending goes straight to the kernel from the
    /// pushing thread at its next [`StreamOut::flush`], without waking the task: the usual
    /// case whenever the client keeps up. What the kernel does not take is kept, in order, for
    /// the task. `None` over TLS (the session belongs to the task) and once the task ends.
    direct: Option<TcpStream>,
    /// A [`StreamOut::flush`] is due (the pusher was told so once).
    scheduled: bool,
}

/// What [`StreamOut::push`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Kept for the task (woken if needed), or for a flush already due.
    Kept,
    /// Kept for a direct send: the pusher must call [`StreamOut::flush`] once it has pushed
    /// the rest of its batch.
    FlushDue,
    /// The buffer was full.
    Dropped,
}

impl StreamOut {
    /// A buffer for a connection; `direct`: a duplicate of a plain TCP connection's socket.
    pub fn new(direct: Option<TcpStream>) -> Self {
        Self {
            state: Mutex::new(State {
                pending: Vec::with_capacity(FIRST_CAPACITY),
                writing: false,
                direct,
                scheduled: false,
            }),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
            last_direct: AtomicU64::new(0),
            base: clock::now().mono,
        }
    }

    /// Appends one whole message (already framed for the stream) unless it does not fit in
    /// [`QUEUE_BYTES`]. A message is never split between what is dropped and what is sent, so
    /// the stream stays framed. Over plain TCP, while the task is not writing, nothing is
    /// woken: the pusher flushes once per batch of datagrams ([`Pushed::FlushDue`]), so a
    /// burst for one client leaves with one `send`.
    pub fn push(&self, message: &[u8]) -> Pushed {
        let mut state = self.state.lock();
        let state = &mut *state;
        if state.pending.len() + message.len() > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Pushed::Dropped;
        }
        let was_empty = state.pending.is_empty();
        append(&mut state.pending, message);
        if state.direct.is_some() && !state.writing {
            if state.scheduled {
                return Pushed::Kept;
            }
            state.scheduled = true;
            return Pushed::FlushDue;
        }
        if was_empty {
            self.wake.notify_one();
        }
        Pushed::Kept
    }

    /// Sends what is pending straight to the socket with one non-blocking `send`, unless the
    /// task is writing (it then writes it); what the kernel does not take stays, in order, and
    /// the task is woken to write it.
    pub fn flush(&self) {
        let mut state = self.state.lock();
        let state = &mut *state;
        state.scheduled = false;
        if state.writing || state.pending.is_empty() {
            return;
        }
        if let Some(socket) = &state.direct {
            // An error other than a full buffer leaves the bytes to the task, whose own write
            // then fails and closes the connection.
            if let Ok(n) = (&*socket).write(&state.pending) {
                self.saw_direct();
                state.pending.drain(..n.min(state.pending.len()));
            }
        }
        if !state.pending.is_empty() {
            self.wake.notify_one();
        }
    }

    /// Traffic of this connection's allocation that does not cross it (RFC 6062: bytes
    /// relayed on its TCP allocation's data connections): the task's idle timer counts it
    /// like a direct send.
    pub fn saw_traffic(&self) {
        self.saw_direct();
    }

    fn saw_direct(&self) {
        let since = clock::now().mono.saturating_duration_since(self.base);
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.last_direct.fetch_max(nanos, Ordering::Relaxed);
    }

    /// When a message last went straight to the socket, if ever.
    pub fn last_direct(&self) -> Option<Instant> {
        match self.last_direct.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.base + Duration::from_nanos(nanos)),
        }
    }

    /// Waits until something was appended since the last [`StreamOut::begin_write`].
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// The task starts writing: nothing goes straight to the socket until
    /// [`StreamOut::end_write`], and everything pending is swapped into `into` (cleared
    /// first), to be written before anything else. The two vectors trade places, so both
    /// capacities are reused.
    pub fn begin_write(&self, into: &mut Vec<u8>) {
        into.clear();
        let mut state = self.state.lock();
        state.writing = true;
        state.scheduled = false;
        std::mem::swap(&mut state.pending, into);
    }

    /// The task's write is complete.
    pub fn end_write(&self) {
        self.state.lock().writing = false;
    }

    /// The connection ends: its socket is never written from here again.
    pub fn close(&self) {
        self.state.lock().direct = None;
    }

    /// Messages dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Appends `bytes`, growing by doubling but never past the budget (`extend_from_slice` alone
/// could reach twice it).
fn append(pending: &mut Vec<u8>, bytes: &[u8]) {
    let want = pending.len() + bytes.len();
    if want > pending.capacity() {
        let to = (pending.capacity() * 2).clamp(want, QUEUE_BYTES.max(want));
        let len = pending.len();
        pending.reserve_exact(to - len);
    }
    pending.extend_from_slice(bytes);
}

/// A new, empty write buffer for a connection's task (see [`StreamOut::begin_write`]).
pub(crate) fn write_buffer() -> Vec<u8> {
    Vec::with_capacity(FIRST_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(pushed: Pushed) -> bool {
        pushed != Pushed::Dropped
    }

    #[test]
    fn the_buffer_holds_at_most_its_byte_budget_and_frees_what_is_taken() {
        let out = StreamOut::new(None);
        let datagram = vec![7u8; 60_000];
        assert!(kept(out.push(&datagram)));
        assert!(
            !kept(out.push(&datagram)),
            "two 60 kB datagrams exceed 64 KiB"
        );
        assert!(kept(out.push(&datagram[..4000])));
        assert_eq!(out.dropped(), 1);
        let mut taken = write_buffer();
        out.begin_write(&mut taken);
        out.end_write();
        assert_eq!(taken.len(), 64_000, "whole messages, in order");
        assert!(kept(out.push(&datagram)), "room again once taken");
    }

    #[test]
    fn after_warm_up_taking_and_pushing_reuse_the_same_two_buffers() {
        let out = StreamOut::new(None);
        let mut taken = write_buffer();
        let message = [1u8; 1000];
        for _ in 0..3 {
            while kept(out.push(&message)) {}
            out.begin_write(&mut taken);
            out.end_write();
        }
        let caps = (taken.capacity(), out.state.lock().pending.capacity());
        for _ in 0..10 {
            while kept(out.push(&message)) {}
            out.begin_write(&mut taken);
            out.end_write();
        }
        let mut now = [taken.capacity(), out.state.lock().pending.capacity()];
        now.sort_unstable();
        let mut before = [caps.0, caps.1];
        before.sort_unstable();
        assert_eq!(now, before);
        assert!(now[1] <= QUEUE_BYTES);
    }

    #[tokio::test]
    async fn a_push_while_the_task_is_busy_is_not_lost() {
        let out = StreamOut::new(None);
        assert_eq!(
            out.push(b"abcd"),
            Pushed::Kept,
            "no direct socket: the task is woken"
        );
        // The task was not waiting: the permit is kept for its next wait.
        tokio::time::timeout(std::time::Duration::from_secs(1), out.ready())
            .await
            .expect("woken");
        let mut taken = write_buffer();
        out.begin_write(&mut taken);
        out.end_write();
        assert_eq!(taken, b"abcd");
    }

    /// A connected pair: (the server's side, non-blocking as tokio's is; the client's).
    fn pair() -> (TcpStream, TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (server, client)
    }

    #[test]
    fn messages_go_straight_to_the_socket_once_per_flush_unless_the_task_is_writing() {
        use std::io::Read;
        let (server, mut client) = pair();
        let out = StreamOut::new(Some(server));
        assert!(out.last_direct().is_none());
        assert_eq!(out.push(b"one;"), Pushed::FlushDue);
        assert_eq!(out.push(b"two;"), Pushed::Kept, "one flush per batch");
        out.flush();
        assert!(out.last_direct().is_some(), "direct traffic is recorded");
        let mut taken = write_buffer();
        out.begin_write(&mut taken);
        assert!(taken.is_empty(), "the flush sent everything");
        assert_eq!(out.push(b"three;"), Pushed::Kept, "the task writes it");
        out.flush();
        out.end_write();
        assert_eq!(out.push(b"four;"), Pushed::FlushDue);
        out.begin_write(&mut taken);
        assert_eq!(taken, b"three;four;", "in order, for the task");
        out.end_write();
        let mut got = [0u8; 8];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one;two;");
    }

    #[test]
    fn a_full_socket_keeps_the_rest_of_a_message_and_the_stream_stays_framed() {
        use std::io::Read;
        let (server, mut client) = pair();
        let out = StreamOut::new(Some(server));
        // Numbered 1000-byte messages, flushed in threes, until the kernel's buffers fill
        // and the budget is spent.
        let mut sent = 0u32;
        let mut kept_numbers = Vec::new();
        while out.dropped() == 0 {
            let mut message = [sent.to_le_bytes()[0]; 1000];
            message[..4].copy_from_slice(&sent.to_le_bytes());
            if kept(out.push(&message)) {
                kept_numbers.push(sent);
            }
            if sent % 3 == 2 {
                out.flush();
            }
            sent += 1;
        }
        // What the kernel holds, then what the task writes: whole messages, in order.
        let mut pending = write_buffer();
        out.begin_write(&mut pending);
        assert!(!pending.is_empty() && pending.len() <= QUEUE_BYTES);
        let in_kernel = (kept_numbers.len() * 1000) - pending.len();
        let mut stream = vec![0u8; in_kernel];
        client.read_exact(&mut stream).unwrap();
        stream.extend_from_slice(&pending);
        let numbers: Vec<u32> = stream
            .chunks(1000)
            .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]))
            .collect();
        assert_eq!(numbers, kept_numbers);
    }
}
