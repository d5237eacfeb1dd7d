//! Which of the generator's sockets have datagrams waiting, in one non-blocking call: epoll
//! with a zero timeout on Linux (the loop busy-polls it, it never waits), so a turn costs one
//! syscall plus one receive per ready socket however many allocations there are. Elsewhere
//! every socket is reported ready and simply tried.

use std::io;
use std::os::fd::BorrowedFd;

/// Readiness of a fixed set of sockets, each known by a token.
#[derive(Debug)]
pub(super) struct Poller {
    inner: sys::Inner,
    ready: Vec<u32>,
}

impl Poller {
    /// A poller for up to `capacity` sockets.
    pub(super) fn new(capacity: usize) -> io::Result<Self> {
        Ok(Self {
            inner: sys::Inner::new(capacity)?,
            ready: Vec::with_capacity(capacity),
        })
    }

    /// Watches `fd` for incoming datagrams, reporting it as `token`.
    pub(super) fn add(&mut self, fd: BorrowedFd<'_>, token: u32) -> io::Result<()> {
        self.inner.add(fd, token)
    }

    /// The tokens of the sockets with datagrams queued now; never blocks. A socket stays
    /// ready until drained (level-triggered).
    pub(super) fn poll(&mut self) -> io::Result<&[u32]> {
        self.ready.clear();
        self.inner.poll(&mut self.ready)?;
        Ok(&self.ready)
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    #[derive(Debug)]
    pub(super) struct Inner {
        epoll: OwnedFd,
        events: Vec<libc::epoll_event>,
    }

    impl Inner {
        pub(super) fn new(capacity: usize) -> io::Result<Self> {
            // SAFETY: epoll_create1 takes no pointers; a non-negative result is a new fd.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just created and is owned by nothing else.
            let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
            let empty = libc::epoll_event { events: 0, u64: 0 };
            Ok(Self {
                epoll,
                events: vec![empty; capacity.max(1)],
            })
        }

        pub(super) fn add(&mut self, fd: BorrowedFd<'_>, token: u32) -> io::Result<()> {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: u64::from(token),
            };
            // SAFETY: both fds are open for the call; `event` is a valid epoll_event the
            // kernel only reads.
            let rc = unsafe {
                libc::epoll_ctl(
                    self.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    fd.as_raw_fd(),
                    &mut event,
                )
            };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        pub(super) fn poll(&mut self, ready: &mut Vec<u32>) -> io::Result<()> {
            let max = i32::try_from(self.events.len()).unwrap_or(i32::MAX);
            // SAFETY: `events` holds `max` writable epoll_event slots; timeout 0 never blocks.
            let n = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), self.events.as_mut_ptr(), max, 0)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return if e.kind() == io::ErrorKind::Interrupted {
                    Ok(())
                } else {
                    Err(e)
                };
            }
            for event in &self.events[..n as usize] {
                // Copy out of the (packed) struct; tokens were stored from a u32.
                let token = event.u64;
                ready.push(token as u32);
            }
            Ok(())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use std::os::fd::BorrowedFd;

    #[derive(Debug)]
    pub(super) struct Inner {
        tokens: Vec<u32>,
    }

    impl Inner {
        pub(super) fn new(capacity: usize) -> io::Result<Self> {
            Ok(Self {
                tokens: Vec::with_capacity(capacity),
            })
        }

        pub(super) fn add(&mut self, _fd: BorrowedFd<'_>, token: u32) -> io::Result<()> {
            self.tokens.push(token);
            Ok(())
        }

        pub(super) fn poll(&mut self, ready: &mut Vec<u32>) -> io::Result<()> {
            ready.extend_from_slice(&self.tokens);
            Ok(())
        }
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
        assert_eq!(poller.poll().unwrap(), &[] as &[u32]);

        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        // Loopback delivery is synchronous: the datagram is queued when send_to returns.
        assert_eq!(poller.poll().unwrap(), &[7]);
        assert_eq!(
            poller.poll().unwrap(),
            &[7],
            "level-triggered until drained"
        );
        let mut buf = [0u8; 4];
        a.recv(&mut buf).unwrap();
        assert_eq!(poller.poll().unwrap(), &[] as &[u32]);
    }
}
