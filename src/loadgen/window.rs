//! Per-allocation bookkeeping of packets in flight, and the payload header that carries the
//! sequence number and send time through the relay and back.
//!
//! A [`Window`] is a ring of (sequence, send time) slots indexed by `seq % capacity`. A reply
//! is counted once, when its slot still holds its sequence; a slot is freed by the reply, by
//! the loss timeout, or (open loop only) by being reused `capacity` packets later.

/// Bytes of the payload header: magic, lane, sequence, send time.
pub(super) const HEADER_LEN: usize = 24;
/// "TSLG": marks a load-generator payload.
const MAGIC: [u8; 4] = *b"TSLG";

/// Writes the payload header into `buf[..HEADER_LEN]`; the rest of the payload is filler.
pub(super) fn write_header(buf: &mut [u8], lane: u32, seq: u64, sent_ns: u64) {
    if let Some(h) = buf.get_mut(..HEADER_LEN) {
        h[0..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&lane.to_be_bytes());
        h[8..16].copy_from_slice(&seq.to_be_bytes());
        h[16..24].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// Reads a payload header: (lane, sequence, send time); `None` for anything else.
pub(super) fn read_header(buf: &[u8]) -> Option<(u32, u64, u64)> {
    let h = buf.get(..HEADER_LEN)?;
    if h[0..4] != MAGIC {
        return None;
    }
    let lane = u32::from_be_bytes(h[4..8].try_into().ok()?);
    let seq = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let sent_ns = u64::from_be_bytes(h[16..24].try_into().ok()?);
    Some((lane, seq, sent_ns))
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
    fn header_round_trips_and_foreign_bytes_are_refused() {
        let mut buf = [0xAAu8; 100];
        write_header(&mut buf, 7, 1 << 40, 123_456_789);
        assert_eq!(read_header(&buf), Some((7, 1 << 40, 123_456_789)));
        assert_eq!(read_header(&buf[..23]), None);
        buf[0] = b'X';
        assert_eq!(read_header(&buf), None);
    }

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
