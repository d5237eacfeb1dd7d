//! Which relay ports have a live relay socket right now, across every worker.
//!
//! The server's own relay addresses are valid peers (two relay-only WebRTC clients on one
//! server reach each other relay-to-relay, RFC 8656 §21 leaves this to policy), but only at
//! ports where a relay socket is open: any other port of the host may be a local service or a
//! kernel ephemeral port (the relay range overlaps it). The IO layer marks a port when it opens
//! a relay socket and clears it when the socket closes; the peer policy reads it. One bit per
//! port and family in atomics: no lock, one load per check.

use std::sync::atomic::{AtomicU64, Ordering};

const WORDS: usize = (u16::MAX as usize + 1) / 64;

/// A shared set of (family, port) pairs with an open relay socket.
pub struct LivePorts {
    v4: [AtomicU64; WORDS],
    v6: [AtomicU64; WORDS],
}

impl Default for LivePorts {
    fn default() -> Self {
        Self {
            v4: std::array::from_fn(|_| AtomicU64::new(0)),
            v6: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for LivePorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |words: &[AtomicU64; WORDS]| -> u32 {
            words
                .iter()
                .map(|w| w.load(Ordering::Relaxed).count_ones())
                .sum()
        };
        f.debug_struct("LivePorts")
            .field("v4", &count(&self.v4))
            .field("v6", &count(&self.v6))
            .finish()
    }
}

impl LivePorts {
    /// Marks `port` of the family (`v6`) as having an open relay socket.
    pub fn open(&self, v6: bool, port: u16) {
        let (word, bit) = locate(port);
        self.words(v6)[word].fetch_or(bit, Ordering::Release);
    }

    /// Clears the mark of `port` (its relay socket closed).
    pub fn close(&self, v6: bool, port: u16) {
        let (word, bit) = locate(port);
        self.words(v6)[word].fetch_and(!bit, Ordering::Release);
    }

    /// Whether a relay socket is open at `port` of the family.
    pub fn is_open(&self, v6: bool, port: u16) -> bool {
        let (word, bit) = locate(port);
        self.words(v6)[word].load(Ordering::Acquire) & bit != 0
    }

    fn words(&self, v6: bool) -> &[AtomicU64; WORDS] {
        if v6 { &self.v6 } else { &self.v4 }
    }
}

fn locate(port: u16) -> (usize, u64) {
    (usize::from(port) / 64, 1 << (port % 64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_live_from_open_to_close_in_its_family_only() {
        let live = LivePorts::default();
        assert!(!live.is_open(false, 50000));
        live.open(false, 50000);
        assert!(live.is_open(false, 50000));
        assert!(!live.is_open(true, 50000));
        assert!(!live.is_open(false, 50001));
        live.open(false, 65535);
        live.open(false, 0);
        live.close(false, 50000);
        assert!(!live.is_open(false, 50000));
        assert!(live.is_open(false, 65535) && live.is_open(false, 0));
    }
}
