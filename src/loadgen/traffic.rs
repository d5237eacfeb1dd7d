//! The data loop: one thread busy-polls the client links and peer sockets without blocking
//! (epoll with a zero timeout says which are ready; recvmmsg/sendmmsg batches move the
//! datagrams, or a lane's stream is read and framed), sends paced by spinning on the clock
//! (open loop) or as replies free the window (closed loop), echoes at the peers, and refreshes
//! allocations, permissions and channels in the background on long runs. By default nothing
//! sleeps, so the server never waits on the generator, and an idle turn only yields the CPU;
//! a sleeping generator ([`LoadConfig::sleep`]) waits in epoll instead.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::control::{LIFETIME_SECS, Request};
use super::histogram::Histogram;
use super::lane::Lane;
use super::link::{BATCH, Link, batch_len, is_transient};
use super::poller::Poller;
use super::refresh::RefreshCounts;
use super::setup::bind_request;
use super::wire::{data_of, read_header, send_indication, wire_len, write_header};
use super::{LoadConfig, LoadError, Stage, mono_now};
use crate::proto::{Message, write_channel_data};
use crate::sys::mmsg::{RecvBatch, SendBatch};

/// Receive calls per socket per turn, so one busy socket cannot starve the others.
const ROUNDS: usize = 4;
/// Interval of the per-allocation chores: loss timeouts, refreshes, the end of the drain.
const CHORES_EVERY_NS: u64 = 1_000_000;
/// The shortest wait of a sleeping generator: below this a wakeup costs more than the packets
/// it sends, and the kernel's default timer slack (50 µs) stretches shorter sleeps anyway. At
/// 200k packets/s it sends about 10 per wakeup.
pub const MIN_SLEEP: Duration = Duration::from_micros(50);

/// Counts of one run (measured phase only, except the diagnostics).
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub sent: u64,
    pub received: u64,
    pub stray: u64,
    pub overruns: u64,
    pub send_errors: u64,
    pub queue_drops: u64,
    pub echo_drops: u64,
    pub refreshes: RefreshCounts,
    pub rtt: Histogram,
    /// From the end of warmup to the last measured send.
    pub elapsed: Duration,
}

/// Runs warmup, the measured phase and the drain; returns the tally.
pub(super) fn drive<L: Link>(
    config: &LoadConfig,
    lanes: &mut [Lane<L>],
    peers: &[UdpSocket],
    observer: &mut dyn FnMut(Stage),
) -> Result<Tally, LoadError> {
    let mut run = Run::new(config, lanes.len())?;
    let base = mono_now();
    let measure_ns = nanos(config.warmup);
    let stop_ns = measure_ns.saturating_add(nanos(config.duration));
    let mut refresh_at = nanos(config.refresh_every);
    let mut sending = true;
    let mut drain_until = u64::MAX;
    let mut chores_at = 0;
    let mut measuring = false;
    let mut poller = Poller::new(lanes.len() + peers.len())?;
    // How long the next poll may wait (a sleeping generator with nothing to do).
    let mut wait = Duration::ZERO;
    for (token, fd) in lanes
        .iter()
        .map(|l| l.link.fd())
        .chain(peers.iter().map(|p| p.as_fd()))
        .enumerate()
    {
        let token = u32::try_from(token).map_err(|_| LoadError::Config("too many sockets"))?;
        poller.add(fd, token)?;
    }
    loop {
        let mut busy = false;
        for &token in poller.poll(std::mem::take(&mut wait))? {
            let i = token as usize;
            match i.checked_sub(lanes.len()) {
                None => busy |= run.receive(&mut lanes[i], base, measure_ns)?,
                Some(j) => busy |= run.echo(&peers[j])?,
            }
        }
        // Input a link holds already (TLS records decrypted past what one turn takes).
        for i in std::mem::take(&mut run.again) {
            busy |= run.receive(&mut lanes[i], base, measure_ns)?;
        }
        let now = since(base);
        if !measuring && now >= measure_ns {
            measuring = true;
            observer(Stage::Measuring);
        }
        if sending && (now >= stop_ns || run.tally.sent >= config.max_packets) {
            sending = false;
            run.tally.elapsed = Duration::from_nanos(now.saturating_sub(measure_ns));
            drain_until = now.saturating_add(nanos(config.loss_timeout));
        }
        if sending {
            busy |= run.generate(config, lanes, now, measure_ns);
        }
        run.flush(lanes)?;
        if now < chores_at {
            if busy {
                continue;
            }
            if config.sleep && run.dirty.is_empty() {
                // Until input, the next packet due or the chores, whichever comes first.
                let next = if sending {
                    run.next_due_ns(config.rate)
                } else {
                    u64::MAX
                };
                let until = next.min(chores_at);
                wait = Duration::from_nanos(until.saturating_sub(now)).max(MIN_SLEEP);
            } else {
                // Nothing to do this turn: let a server thread sharing the core run. Not a sleep.
                std::thread::yield_now();
            }
            continue;
        }
        // Chores touch every allocation, so they run once a millisecond, not every turn.
        chores_at = now.saturating_add(CHORES_EVERY_NS);
        let cutoff = now.checked_sub(nanos(config.loss_timeout));
        for lane in lanes.iter_mut() {
            if let Some(cutoff) = cutoff {
                lane.window.expire(cutoff);
            }
            run.want(lane);
        }
        if !config.raw && !config.direct && now >= refresh_at {
            refresh_at = now.saturating_add(nanos(config.refresh_every));
            for lane in lanes.iter_mut() {
                let refresh = Request::Refresh {
                    lifetime: LIFETIME_SECS,
                };
                lane.refresher.queue(refresh);
                lane.refresher.queue(bind_request(config, lane.peer));
            }
        }
        for lane in lanes.iter_mut() {
            let counts = &mut run.tally.refreshes;
            lane.refresher
                .poll(&mut lane.link, &lane.auth, now, counts)?;
            // A stream link may keep part of a request to send later.
            if !lane.flushing && !lane.link.is_idle() {
                lane.flushing = true;
                run.dirty.push(lane.index as usize);
            }
        }
        if !sending {
            let settled = lanes.iter().all(|l| l.window.in_flight() == 0);
            if settled || now >= drain_until {
                return Ok(run.tally);
            }
        }
    }
}

struct Run {
    rx: RecvBatch,
    echo_tx: SendBatch,
    scratch: Vec<u8>,
    /// Lanes with datagrams queued to send.
    dirty: Vec<usize>,
    /// Closed loop: lanes that may have room in their window.
    wants: Vec<usize>,
    /// Lanes whose link holds input the poller cannot see.
    again: Vec<usize>,
    tally: Tally,
    /// Packets generated, warmup included (the pacing clock).
    generated: u64,
    next_lane: usize,
}

impl Run {
    fn new(config: &LoadConfig, lanes: usize) -> Result<Self, LoadError> {
        if lanes == 0 {
            return Err(LoadError::Config("at least one allocation is needed"));
        }
        let len = wire_len(config.payload);
        Ok(Self {
            rx: RecvBatch::new(batch_len(len), len),
            echo_tx: SendBatch::new(batch_len(len), len),
            scratch: vec![0; config.payload],
            dirty: Vec::with_capacity(lanes),
            wants: Vec::with_capacity(lanes),
            again: Vec::new(),
            tally: Tally::default(),
            generated: 0,
            next_lane: 0,
        })
    }

    /// When the next packet of the open loop is due (ns since the start); never for the closed
    /// loop, which sends on replies.
    fn next_due_ns(&self, rate: u64) -> u64 {
        if rate == 0 {
            return u64::MAX;
        }
        // Packet `generated + 1` is due once rate * now / 1e9 reaches it (see `generate`).
        let n = u128::from(self.generated) + 1;
        u64::try_from((n * 1_000_000_000).div_ceil(u128::from(rate))).unwrap_or(u64::MAX)
    }

    /// Drains what the server sent to one client link.
    fn receive<L: Link>(
        &mut self,
        lane: &mut Lane<L>,
        base: Instant,
        measure_ns: u64,
    ) -> Result<bool, LoadError> {
        let mut busy = false;
        for _ in 0..ROUNDS {
            let n = match lane.link.recv(&mut self.rx)? {
                Some(0) => continue,
                Some(n) => n,
                None => break,
            };
            busy = true;
            let now = since(base);
            for i in 0..n {
                let datagram = lane.link.frame(&self.rx, i);
                match data_of(datagram) {
                    Some(data) => {
                        let Some((index, seq, stamp)) = read_header(data) else {
                            self.tally.stray += 1;
                            continue;
                        };
                        match lane.window.receive(seq) {
                            Some(sent_ns) if index == lane.index && sent_ns == stamp => {
                                if sent_ns >= measure_ns {
                                    self.tally.received += 1;
                                    self.tally.rtt.record(now.saturating_sub(sent_ns));
                                }
                            }
                            _ => self.tally.stray += 1,
                        }
                    }
                    None => match Message::parse(datagram) {
                        Ok(msg) => lane.refresher.handle_response(
                            &mut lane.auth,
                            &msg,
                            &mut self.tally.refreshes,
                        ),
                        Err(_) => self.tally.stray += 1,
                    },
                }
            }
        }
        if lane.link.pending() {
            self.again.push(lane.index as usize);
        }
        if busy {
            self.want(lane);
        }
        Ok(busy)
    }

    /// Echoes every datagram a peer socket got back to the relayed address it came from.
    fn echo(&mut self, peer: &UdpSocket) -> Result<bool, LoadError> {
        let mut busy = false;
        for _ in 0..ROUNDS {
            let n = match self.rx.recv(peer.as_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_transient(&e) => continue,
                Err(e) => return Err(LoadError::Io(e)),
            };
            busy = true;
            for i in 0..n {
                let (data, from) = self.rx.datagram(i);
                if !self.echo_tx.push(data, from) {
                    self.tally.echo_drops += 1;
                }
            }
            match self.echo_tx.flush(peer.as_fd()) {
                Ok(stats) => self.tally.echo_drops += stats.dropped as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(LoadError::Io(e)),
            }
        }
        Ok(busy)
    }

    /// Queues the packets due now: paced round robin (open loop) or up to the window.
    fn generate<L: Link>(
        &mut self,
        config: &LoadConfig,
        lanes: &mut [Lane<L>],
        now: u64,
        measure_ns: u64,
    ) -> bool {
        let measuring = now >= measure_ns;
        let left = if measuring {
            config.max_packets.saturating_sub(self.tally.sent)
        } else {
            u64::MAX
        };
        let count = lanes.len();
        let room = (count * BATCH) as u64;
        let mut busy = false;
        if config.rate > 0 {
            // The pacing clock: packets due since the start, sent as soon as due.
            let due = (u128::from(config.rate) * u128::from(now) / 1_000_000_000) as u64;
            let mut budget = due.saturating_sub(self.generated).min(room).min(left);
            while budget > 0 {
                let lane = &mut lanes[self.next_lane];
                self.next_lane = (self.next_lane + 1) % count;
                if self.send_one(config, lane, now, measuring) {
                    budget -= 1;
                    busy = true;
                } else {
                    break; // a full batch: the rest goes next turn
                }
            }
        } else {
            // Closed loop: only lanes that got replies (or chores found idle) can have room.
            let mut left = left;
            let mut wants = std::mem::take(&mut self.wants);
            wants.retain(|&i| {
                let Some(lane) = lanes.get_mut(i) else {
                    return false;
                };
                while left > 0 && lane.window.span() < config.window as u64 {
                    if !self.send_one(config, lane, now, measuring) {
                        return true; // a full batch: the rest goes next turn
                    }
                    left -= 1;
                    busy = true;
                }
                lane.wanting = false;
                false
            });
            self.wants = wants;
        }
        busy
    }

    /// Marks a lane as possibly having room in its window (closed loop).
    fn want<L>(&mut self, lane: &mut Lane<L>) {
        if !lane.wanting {
            lane.wanting = true;
            self.wants.push(lane.index as usize);
        }
    }

    /// Writes one packet into the lane's batch; `false` when the batch is full.
    fn send_one<L: Link>(
        &mut self,
        config: &LoadConfig,
        lane: &mut Lane<L>,
        now: u64,
        measuring: bool,
    ) -> bool {
        let Some(buf) = lane.link.next_buf() else {
            return false;
        };
        let (seq, overrun) = lane.window.send(now);
        let len = if config.send_indications {
            write_header(&mut self.scratch, lane.index, seq, now);
            send_indication(buf, lane.peer, seq, &self.scratch)
        } else {
            write_header(buf.get_mut(4..).unwrap_or_default(), lane.index, seq, now);
            // RFC 8656 §12.5: padded to a multiple of 4 over TCP/TLS.
            write_channel_data(buf, lane.channel, config.payload, L::PAD)
        };
        if !lane.flushing {
            lane.flushing = true;
            self.dirty.push(lane.index as usize);
        }
        match len {
            Some(len) => {
                // Counted like `sent`, in the measured phase only: a drop is a lost packet.
                if !lane.link.commit(len) && measuring {
                    self.tally.queue_drops += 1;
                }
            }
            None => self.tally.send_errors += 1,
        }
        self.generated += 1;
        if measuring {
            self.tally.sent += 1;
            self.tally.overruns += u64::from(overrun);
        }
        true
    }

    /// Flushes the lanes with packets queued; a full socket buffer keeps the rest queued.
    fn flush<L: Link>(&mut self, lanes: &mut [Lane<L>]) -> Result<(), LoadError> {
        let mut i = 0;
        while i < self.dirty.len() {
            let Some(lane) = lanes.get_mut(self.dirty[i]) else {
                self.dirty.swap_remove(i);
                continue;
            };
            self.tally.send_errors += lane.link.flush()?;
            if lane.link.is_idle() {
                lane.flushing = false;
                self.dirty.swap_remove(i);
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

fn since(base: Instant) -> u64 {
    nanos(mono_now().saturating_duration_since(base))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::super::{Credentials, LoadConfig, run};
    use super::*;

    /// CPU time of the calling thread.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out-pointer for the duration of the call.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn direct(rate: u64, sleep: bool) -> LoadConfig {
        // No server: the address is never used in direct mode.
        let nowhere = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let mut config = LoadConfig::new(
            nowhere,
            Credentials::Rest {
                secret: "unused".into(),
            },
        );
        config.direct = true;
        config.sleep = sleep;
        config.allocations = 3;
        config.rate = rate;
        config.duration = Duration::from_millis(300);
        config
    }

    #[test]
    fn direct_mode_echoes_every_packet_without_a_server() {
        let report = run(&direct(3000, false)).unwrap();
        assert!(report.sent >= 800, "{}", report.to_table());
        assert_eq!(report.received, report.sent, "{}", report.to_table());
        assert_eq!(report.delete_failures, 0);
        // The closed loop too.
        let report = run(&direct(0, false)).unwrap();
        assert!(report.received > 0, "{}", report.to_table());
    }

    #[test]
    fn a_sleeping_generator_keeps_its_rate_and_leaves_its_core_mostly_idle() {
        let cpu = thread_cpu();
        let report = run(&direct(3000, true)).unwrap();
        let used = thread_cpu() - cpu;
        assert!(report.sent >= 800, "{}", report.to_table());
        assert_eq!(report.received, report.sent, "{}", report.to_table());
        // A spinning generator would burn the whole 300 ms (and setup) here; 3000 packets/s
        // asleep between sends take a few ms. Generous for a slow or busy machine.
        assert!(used < Duration::from_millis(150), "{used:?} of CPU");
    }

    #[test]
    fn direct_mode_refuses_what_it_cannot_do() {
        let mut config = direct(1000, false);
        config.raw = true;
        assert!(run(&config).is_err());
        let mut config = direct(1000, false);
        config.send_indications = true;
        assert!(run(&config).is_err());
    }

    #[test]
    fn the_next_packet_is_due_at_the_pacing_clock() {
        let mut r = Run::new(&direct(1000, true), 1).unwrap();
        assert_eq!(r.next_due_ns(1000), 1_000_000);
        r.generated = 5;
        assert_eq!(r.next_due_ns(1000), 6_000_000);
        assert_eq!(r.next_due_ns(3), 2_000_000_000);
        assert_eq!(r.next_due_ns(0), u64::MAX);
    }
}
