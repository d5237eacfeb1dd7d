//! When a TCP/TLS connection is closed: its handshake, authentication, idle and
//! partial-message deadlines. Only the connection's allocation traffic resets the idle timer.

use std::time::Duration;

use std::time::Instant;

use super::spec::{MAX_STREAM_TIMEOUT, StreamLimits};

/// `now + d`, with `d` capped at [`MAX_STREAM_TIMEOUT`]: configuration refuses longer
/// timeouts, and one given through the library (say `Duration::MAX`) must not overflow
/// `Instant` and panic the connection's task.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    now + d.min(MAX_STREAM_TIMEOUT)
}

/// When a connection is closed, whichever comes first.
pub(crate) struct Deadlines {
    /// The first complete message (the handshake timeout after the connection is set up).
    pub first_frame: Option<Instant>,
    /// An allocation, counted from the TCP accept; cleared by the allocation's first traffic.
    auth: Option<Instant>,
    /// The idle timeout after the last traffic of the connection's allocation.
    idle: Instant,
    /// The rest of a started message: otherwise a client could pin up to a 64 KiB partial
    /// frame by trickling bytes (handshake timeout). Counted from the last completed frame,
    /// not from when the buffer was last empty: a fast client whose reads keep ending
    /// mid-frame is never idle, and each completed frame proves it is not trickling.
    partial: Option<Instant>,
    idle_timeout: Duration,
    partial_timeout: Duration,
}

impl Deadlines {
    pub fn new(limits: &StreamLimits, accepted: Instant, now: Instant) -> Self {
        Self {
            first_frame: Some(after(now, limits.handshake_timeout)),
            auth: Some(after(accepted, limits.auth_timeout)),
            idle: after(now, limits.idle_timeout),
            partial: None,
            idle_timeout: limits.idle_timeout,
            partial_timeout: limits.handshake_timeout,
        }
    }

    /// The earliest deadline and why it closes the connection.
    pub fn next(&self) -> (Instant, &'static str) {
        [
            (self.first_frame, "no message in time"),
            (self.auth, "no allocation in time"),
            (Some(self.idle), "idle"),
            (self.partial, "message not completed in time"),
        ]
        .into_iter()
        .filter_map(|(at, why)| at.map(|at| (at, why)))
        .min_by_key(|(at, _)| *at)
        .unwrap_or((self.idle, "idle"))
    }

    pub fn allocation_traffic(&mut self, now: Instant) {
        self.auth = None;
        self.idle = after(now, self.idle_timeout);
    }

    /// After a read: `pending` when a started message remains, `completed` when the read
    /// completed at least one frame.
    pub fn partial_frame(&mut self, pending: bool, completed: bool, now: Instant) {
        self.partial = match (pending, self.partial) {
            (false, _) => None,
            (true, Some(since)) if !completed => Some(since),
            (true, _) => Some(after(now, self.partial_timeout)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout: Duration) -> StreamLimits {
        StreamLimits {
            handshake_timeout: timeout,
            idle_timeout: timeout,
            max_connections: 1,
            max_connections_per_ip: 1,
            auth_timeout: timeout,
            ipv6_prefix_length: 64,
            connect_timeout: timeout,
        }
    }

    #[test]
    fn absurd_timeouts_are_capped_instead_of_overflowing_instant() {
        let now = crate::io::clock::now().mono;
        let mut timers = Deadlines::new(&limits(Duration::MAX), now, now);
        timers.allocation_traffic(now);
        timers.partial_frame(true, false, now);
        let (at, _) = timers.next();
        assert_eq!(at, now + MAX_STREAM_TIMEOUT);
    }

    #[test]
    fn a_completed_frame_restarts_the_partial_message_deadline() {
        let t0 = crate::io::clock::now().mono;
        let second = Duration::from_secs(1);
        let mut timers = Deadlines::new(&limits(second), t0, t0);
        timers.partial_frame(true, true, t0);
        assert_eq!(timers.partial, Some(t0 + second));
        // Bytes arrive but no frame completes: the deadline stays.
        timers.partial_frame(true, false, t0 + second / 2);
        assert_eq!(timers.partial, Some(t0 + second));
        // A frame completes and the next one is already started: counted from now.
        let t1 = t0 + second * 3 / 4;
        timers.partial_frame(true, true, t1);
        assert_eq!(timers.partial, Some(t1 + second));
        timers.partial_frame(false, true, t1);
        assert_eq!(timers.partial, None);
    }
}
