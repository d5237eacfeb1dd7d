//! Bytes bound to one TCP/TLS client from other threads: peer data the data-plane thread
//! relays, and Allocate answers confirmed elsewhere. One bounded buffer per connection,
//! appended to in place and taken whole by the connection's task, which swaps it with its
//! own (empty) write buffer: no allocation per datagram, no message queue, and the task
//! writes a whole batch with one `write_all`.
//!
//! The buffer's own lock is held only to append one message or to swap two `Vec`s, never
//! across a write; the data-plane thread appends while it holds the worker's lock anyway,
//! and the connection's task never needs the worker's lock to drain.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

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
    pending: Mutex<Vec<u8>>,
    /// Signalled when the buffer goes from empty to non-empty: the task takes everything
    /// each time, so one wake-up per batch is enough, and a permit is kept if the task is busy
    /// writing (no wake-up is lost).
    wake: Notify,
    /// Messages dropped because the buffer was full.
    dropped: AtomicU64,
}

impl Default for StreamOut {
    fn default() -> Self {
        Self {
            pending: Mutex::new(Vec::with_capacity(FIRST_CAPACITY)),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }
}

impl StreamOut {
    /// Appends one whole message (already framed for the stream) unless it does not fit in
    /// [`QUEUE_BYTES`]; returns whether it was kept. Messages are never split, so the stream
    /// stays framed whatever is dropped.
    pub fn push(&self, message: &[u8]) -> bool {
        let mut pending = self.pending.lock();
        if pending.len() + message.len() > QUEUE_BYTES {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let was_empty = pending.is_empty();
        let want = pending.len() + message.len();
        if want > pending.capacity() {
            // Grow by doubling, but never past the budget (`extend_from_slice` alone could
            // reach twice it).
            let to = (pending.capacity() * 2).clamp(want, QUEUE_BYTES);
            let len = pending.len();
            pending.reserve_exact(to - len);
        }
        pending.extend_from_slice(message);
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
        true
    }

    /// Waits until something was pushed since the last [`StreamOut::take`].
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    /// Swaps everything pending into `into` (which must be empty; it is cleared first). The
    /// two vectors trade places, so their capacities are reused by both sides.
    pub fn take(&self, into: &mut Vec<u8>) {
        into.clear();
        std::mem::swap(&mut *self.pending.lock(), into);
    }

    /// Messages dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A new, empty write buffer for a connection's task, the counterpart of [`StreamOut::take`].
pub(crate) fn write_buffer() -> Vec<u8> {
    Vec::with_capacity(FIRST_CAPACITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_holds_at_most_its_byte_budget_and_frees_what_is_taken() {
        let out = StreamOut::default();
        let datagram = vec![7u8; 60_000];
        assert!(out.push(&datagram));
        assert!(!out.push(&datagram), "two 60 kB datagrams exceed 64 KiB");
        assert!(out.push(&datagram[..4000]));
        assert_eq!(out.dropped(), 1);
        let mut taken = write_buffer();
        out.take(&mut taken);
        assert_eq!(taken.len(), 64_000, "whole messages, in order");
        assert!(out.push(&datagram), "room again once taken");
    }

    #[test]
    fn after_warm_up_taking_and_pushing_reuse_the_same_two_buffers() {
        let out = StreamOut::default();
        let mut taken = write_buffer();
        let message = [1u8; 1000];
        for _ in 0..3 {
            while out.push(&message) {}
            out.take(&mut taken);
        }
        let caps = (taken.capacity(), out.pending.lock().capacity());
        for _ in 0..10 {
            while out.push(&message) {}
            out.take(&mut taken);
        }
        let mut now = [taken.capacity(), out.pending.lock().capacity()];
        now.sort_unstable();
        let mut before = [caps.0, caps.1];
        before.sort_unstable();
        assert_eq!(now, before);
        assert!(now[1] <= QUEUE_BYTES);
    }

    #[tokio::test]
    async fn a_push_while_the_task_is_busy_is_not_lost() {
        let out = StreamOut::default();
        assert!(out.push(b"abcd"));
        // The task was not waiting: the permit is kept for its next wait.
        tokio::time::timeout(std::time::Duration::from_secs(1), out.ready())
            .await
            .expect("woken");
        let mut taken = write_buffer();
        out.take(&mut taken);
        assert_eq!(taken, b"abcd");
    }
}
