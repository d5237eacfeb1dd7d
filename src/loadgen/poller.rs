//! Which of the generator's sockets have datagrams waiting, in one call: epoll with a zero
//! timeout when the loop busy-polls, or a sub-millisecond one when a sleeping generator
//! ([`super::LoadConfig::sleep`]) has nothing to do until its next send. A turn costs one
//! syscall plus one receive per ready socket however many allocations there are.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::sys::poller::Epoll;

/// Readiness of a fixed set of sockets, each known by a token.
#[derive(Debug)]
pub(super) struct Poller {
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
    ready: Vec<u32>,
}

impl Poller {
    /// A poller for up to `capacity` sockets.
    pub(super) fn new(capacity: usize) -> io::Result<Self> {
        let empty = libc::epoll_event { events: 0, u64: 0 };
        Ok(Self {
            epoll: Epoll::new()?,
            events: vec![empty; capacity.max(1)],
            ready: Vec::with_capacity(capacity),
        })
    }

    /// Watches `fd` for incoming datagrams, reporting it as `token`.
    pub(super) fn add(&mut self, fd: BorrowedFd<'_>, token: u32) -> io::Result<()> {
        self.epoll.add(fd, u64::from(token))
    }

    /// The tokens of the sockets with datagrams queued, waiting up to `timeout` for one (zero:
    /// never blocks). A socket stays reported until it is drained (level-triggered).
    pub(super) fn poll(&mut self, timeout: Duration) -> io::Result<&[u32]> {
        let n = self.epoll.wait_precise(&mut self.events, timeout)?;
        self.ready.clear();
        // Tokens are u32 by construction (`add`).
        self.ready
            .extend(self.events[..n].iter().map(|e| e.u64 as u32));
        Ok(&self.ready)
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn only_sockets_with_datagrams_waiting_are_reported() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut poller = Poller::new(2).unwrap();
        poller.add(a.as_fd(), 7).unwrap();
        poller.add(b.as_fd(), 9).unwrap();
        assert_eq!(poller.poll(Duration::ZERO).unwrap(), &[] as &[u32]);

        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        // Loopback delivery is synchronous: the datagram is queued when send_to returns.
        assert_eq!(poller.poll(Duration::ZERO).unwrap(), &[7]);
        assert_eq!(
            poller.poll(Duration::ZERO).unwrap(),
            &[7],
            "level-triggered until drained"
        );
        let mut buf = [0u8; 4];
        a.recv(&mut buf).unwrap();
        assert_eq!(poller.poll(Duration::ZERO).unwrap(), &[] as &[u32]);
    }

    #[test]
    fn a_wait_ends_at_its_timeout_or_at_the_first_datagram() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut poller = Poller::new(1).unwrap();
        poller.add(a.as_fd(), 3).unwrap();
        let start = crate::loadgen::mono_now();
        assert_eq!(
            poller.poll(Duration::from_micros(300)).unwrap(),
            &[] as &[u32]
        );
        let waited = crate::loadgen::mono_now().duration_since(start);
        // No upper bound: a busy machine may wake it late.
        assert!(waited >= Duration::from_micros(300), "{waited:?}");
        a.send_to(b"x", a.local_addr().unwrap()).unwrap();
        assert_eq!(poller.poll(Duration::from_secs(5)).unwrap(), &[3]);
    }
}
