//! One allocation during the run ([`Lane`]) and its bookkeeping of packets in flight
//! ([`Window`]).
//!
//! A [`Window`] is a ring of (sequence, send time) slots indexed by `seq % capacity`. A reply
//! is counted once, when its slot still holds its sequence; a slot is freed by the reply, by
//! the loss timeout, or (open loop only) by being reused `capacity` packets later.

use std::net::SocketAddr;

use super::control::{Auth, CHANNEL};
use super::refresh::Refresher;

/// One allocation during the run, reaching the server over its link `L`.
#[derive(Debug)]
pub(super) struct Lane<L> {
    /// The connection to the server.
    pub link: L,
    /// Credentials and nonce.
    pub auth: Auth,
    /// The echo peer this allocation sends to.
    pub peer: SocketAddr,
    /// Position among the lanes; carried in every payload.
    pub index: u32,
    /// Packets in flight.
    pub window: Window,
    /// Refreshes during long runs.
    pub refresher: Refresher,
    /// Listed in the closed loop's lanes that may have room.
    pub wanting: bool,
    /// Listed in the lanes with output to flush.
    pub flushing: bool,
    /// The channel of its ChannelData (raw lanes each have their own).
    pub channel: u16,
}

impl<L> Lane<L> {
    /// A lane for allocation `index` over `link`, sending to `peer`.
    pub(super) fn new(link: L, auth: Auth, peer: SocketAddr, index: u32, window: usize) -> Self {
        Self {
            link,
            auth,
            peer,
            index,
            window: Window::new(window),
            refresher: Refresher::default(),
            wanting: false,
            flushing: false,
            channel: CHANNEL,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// Sequence + 1 of the packet in flight in this slot; 0 when free.
    seq1: u64,
    sent_ns: u64,
}

/// Packets of one allocation that are in flight.
#[derive(Debug)]
pub(super) struct Window {
    ring: Box<[Slot]>,
    mask: u64,
    next_seq: u64,
    /// No packet below this sequence is in flight.
    oldest: u64,
    in_flight: u64,
}

impl Window {
    /// A window tracking up to `capacity` (rounded up to a power of two) packets.
    pub(super) fn new(capacity: usize) -> Self {
        let size = capacity.max(1).next_power_of_two();
        Self {
            ring: vec![Slot::default(); size].into_boxed_slice(),
            mask: size as u64 - 1,
            next_seq: 0,
            oldest: 0,
            in_flight: 0,
        }
    }

    /// Packets sent and neither answered nor given up on.
    pub(super) fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Sequence distance from the oldest packet in flight to the next one: a closed loop
    /// sends while this is below its window (a late packet holds the window back).
    pub(super) fn span(&self) -> u64 {
        self.next_seq - self.oldest
    }

    /// Takes the next sequence number for a packet sent at `sent_ns`. Returns it, and whether
    /// an older packet still in flight had to give up its slot (an overrun: counted lost).
    pub(super) fn send(&mut self, sent_ns: u64) -> (u64, bool) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let slot = &mut self.ring[(seq & self.mask) as usize];
        let overrun = slot.seq1 != 0;
        if overrun {
            self.in_flight -= 1;
        }
        *slot = Slot {
            seq1: seq + 1,
            sent_ns,
        };
        self.in_flight += 1;
        let capacity = self.mask + 1;
        self.oldest = self.oldest.max(self.next_seq.saturating_sub(capacity));
        (seq, overrun)
    }

    /// A reply for `seq`: its send time when it was in flight, `None` for a duplicate, a
    /// packet already given up on, or a sequence never sent.
    pub(super) fn receive(&mut self, seq: u64) -> Option<u64> {
        if seq >= self.next_seq || seq < self.oldest {
            return None;
        }
        let slot = &mut self.ring[(seq & self.mask) as usize];
        if slot.seq1 != seq + 1 {
            return None;
        }
        let sent_ns = slot.sent_ns;
        *slot = Slot::default();
        self.in_flight -= 1;
        self.advance();
        Some(sent_ns)
    }

    /// Gives up on packets sent at or before `cutoff_ns`, oldest first; returns how many.
    pub(super) fn expire(&mut self, cutoff_ns: u64) -> u64 {
        let mut expired = 0;
        while self.oldest < self.next_seq {
            let slot = &mut self.ring[(self.oldest & self.mask) as usize];
            if slot.seq1 == self.oldest + 1 {
                if slot.sent_ns > cutoff_ns {
                    break;
                }
                *slot = Slot::default();
                self.in_flight -= 1;
                expired += 1;
            }
            self.oldest += 1;
        }
        expired
    }

    /// Moves `oldest` past answered packets.
    fn advance(&mut self) {
        while self.oldest < self.next_seq
            && self.ring[(self.oldest & self.mask) as usize].seq1 != self.oldest + 1
        {
            self.oldest += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_free_the_window_in_any_order_and_count_once() {
        let mut w = Window::new(4);
        for t in 0..4 {
            w.send(t * 10);
        }
        assert_eq!((w.in_flight(), w.span()), (4, 4));
        assert_eq!(w.receive(1), Some(10));
        assert_eq!(w.receive(1), None, "a duplicate counts once");
        assert_eq!(w.span(), 4, "packet 0 still holds the window back");
        assert_eq!(w.receive(0), Some(0));
        assert_eq!((w.in_flight(), w.span()), (2, 2));
        assert_eq!(w.receive(9), None, "never sent");
    }

    #[test]
    fn expiry_gives_up_on_old_packets_and_ignores_their_late_replies() {
        let mut w = Window::new(8);
        for t in [100, 200, 300] {
            w.send(t);
        }
        assert_eq!(w.expire(200), 2);
        assert_eq!((w.in_flight(), w.span()), (1, 1));
        assert_eq!(w.receive(0), None, "late reply after the loss timeout");
        assert_eq!(w.receive(2), Some(300));
        assert_eq!(w.expire(u64::MAX), 0);
    }

    #[test]
    fn open_loop_overrun_reuses_the_slot_of_the_oldest_packet() {
        let mut w = Window::new(2);
        assert_eq!(w.send(1), (0, false));
        assert_eq!(w.send(2), (1, false));
        assert_eq!(w.send(3), (2, true));
        assert_eq!(w.in_flight(), 2);
        assert_eq!(w.receive(0), None);
        assert_eq!(w.receive(2), Some(3));
        assert_eq!(w.receive(1), Some(2));
        assert_eq!((w.in_flight(), w.span()), (0, 0));
    }
}
