//! One epoll instance per worker for its whole UDP data plane: the listening UDP sockets, every
//! relay socket and a wake-up eventfd. The worker's data-plane thread waits on it directly, like
//! a bare forwarder would: one `epoll_wait` per wake-up, no reactor, task or waker in between.
//! Relay sockets are added and removed from whichever thread holds the core (epoll allows
//! `epoll_ctl` while another thread waits).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// Events returned per `epoll_wait` call.
const EVENTS: usize = 256;

/// What an epoll registration stands for. Relay ids count up from 1 and never reach the
/// reserved top of the range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// A relay socket, by relay id.
    Relay(u64),
    /// Listening UDP socket number `n` of this worker.
    Listener(usize),
    /// A TCP/TLS client connection, by its index in the worker's stream table.
    Stream(usize),
    /// The wake-up eventfd.
    Wake,
}

const WAKE: u64 = u64::MAX;
const LISTENER_BASE: u64 = 1 << 62;
const STREAM_BASE: u64 = 1 << 61;

impl Token {
    fn encode(self) -> u64 {
        match self {
            Token::Relay(id) => id,
            Token::Listener(n) => LISTENER_BASE + n as u64,
            Token::Stream(n) => STREAM_BASE + n as u64,
            Token::Wake => WAKE,
        }
    }

    fn decode(raw: u64) -> Self {
        match raw {
            WAKE => Token::Wake,
            n if n >= LISTENER_BASE => Token::Listener((n - LISTENER_BASE) as usize),
            n if n >= STREAM_BASE => Token::Stream((n - STREAM_BASE) as usize),
            id => Token::Relay(id),
        }
    }
}

/// What a descriptor is watched for (errors and hang-ups are always reported).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Interest {
    pub read: bool,
    pub write: bool,
}

impl Interest {
    pub const READ: Self = Self {
        read: true,
        write: false,
    };
}

/// An epoll instance with raw `u64` tokens, level-triggered input only: the one epoll
/// wrapper of the crate (the worker's [`Poller`] and the load generator's build on it).
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before being owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for input (level-triggered), reported as `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, Interest::READ)
    }

    /// Changes what `fd` (added before) is watched for.
    pub fn modify(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, interest)
    }

    fn ctl(&self, op: i32, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        let mut events = 0;
        if interest.read {
            events |= libc::EPOLLIN as u32;
        }
        if interest.write {
            events |= libc::EPOLLOUT as u32;
        }
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut event) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Stops watching `fd` (closing it would too; this keeps the order explicit).
    pub fn remove(&self, fd: BorrowedFd<'_>) {
        // SAFETY: both descriptors are open; a null event is allowed for DEL.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// Waits up to `timeout` (rounded up to a millisecond; zero polls) and fills the front of
    /// `events`; returns how many (0 when interrupted by a signal).
    pub fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> io::Result<usize> {
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        // Through syscall(2), not glibc's cancellable wrapper (see `mmsg`); epoll_pwait with no
        // signal mask is epoll_wait on every architecture.
        let sigmask = std::ptr::null::<libc::sigset_t>();
        // SAFETY: `events` has room for `max` entries; a null mask is allowed.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait,
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max,
                ms,
                sigmask,
                8, // the kernel's sigset size (unused with a null mask)
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        Ok(n as usize)
    }
}

impl Epoll {
    /// [`Epoll::wait`] to the nanosecond (epoll_pwait2, Linux 5.11), for a caller that paces by
    /// sleeping in sub-millisecond steps (the load generator); rounds up to a millisecond like
    /// `wait` on kernels without it.
    pub fn wait_precise(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Duration,
    ) -> io::Result<usize> {
        if timeout.is_zero() {
            return self.wait(events, timeout);
        }
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let max = libc::c_int::try_from(events.len()).unwrap_or(libc::c_int::MAX);
        let sigmask = std::ptr::null::<libc::sigset_t>();
        // SAFETY: `events` has room for `max` entries; `ts` outlives the call; a null mask is
        // allowed.
        let n = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                self.fd.as_raw_fd(),
                events.as_mut_ptr(),
                max,
                &ts as *const libc::timespec,
                sigmask,
                8,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOSYS) => self.wait(events, timeout),
                Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        Ok(n as usize)
    }
}

/// The worker's epoll instance, with [`Token`]s; clones share it.
#[derive(Clone)]
pub(crate) struct Poller {
    epoll: Arc<Epoll>,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Arc::new(Epoll::new()?),
        })
    }

    /// Watches `fd` for input (level-triggered).
    pub fn add(&self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        self.epoll.add(fd, token.encode())
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: BorrowedFd<'_>) {
        self.epoll.remove(fd);
    }

    /// Changes what `fd` (added before as `token`) is watched for.
    pub fn modify(&self, fd: BorrowedFd<'_>, token: Token, interest: Interest) -> io::Result<()> {
        self.epoll.modify(fd, token.encode(), interest)
    }

    /// Waits up to `timeout` (rounded up to a millisecond) for ready descriptors.
    pub fn wait(&self, out: &mut Ready, timeout: Duration) -> io::Result<usize> {
        out.len = 0;
        out.len = self.epoll.wait(&mut out.events[..], timeout)?;
        Ok(out.len)
    }
}

/// Reusable room for one `epoll_wait`'s results.
pub(crate) struct Ready {
    events: Box<[libc::epoll_event; EVENTS]>,
    len: usize,
}

impl Ready {
    pub fn new() -> Self {
        Self {
            events: Box::new([libc::epoll_event { events: 0, u64: 0 }; EVENTS]),
            len: 0,
        }
    }

    /// How many descriptors the last [`Poller::wait`] reported.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Token `i` of the last [`Poller::wait`] (`i < len()`).
    pub fn token(&self, i: usize) -> Token {
        Token::decode(self.events[i].u64)
    }

    /// Whether descriptor `i` can be written to (or failed: a write then says why).
    pub fn writable(&self, i: usize) -> bool {
        self.events[i].events & (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0
    }

    /// Whether descriptor `i` has input (or an end of input or error to read).
    pub fn readable(&self, i: usize) -> bool {
        self.events[i].events
            & (libc::EPOLLIN | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32
            != 0
    }
}

/// An eventfd that wakes the data-plane thread (shutdown).
pub(crate) struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before being owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// Makes the eventfd readable.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Resets the eventfd after a wake-up.
    pub fn reset(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own non-blocking eventfd.
        unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        for token in [
            Token::Relay(1),
            Token::Relay(STREAM_BASE - 1),
            Token::Listener(0),
            Token::Listener(7),
            Token::Stream(0),
            Token::Stream(70_000),
            Token::Wake,
        ] {
            assert_eq!(Token::decode(token.encode()), token);
        }
    }

    #[test]
    fn waker_makes_the_poller_ready_until_reset() {
        let poller = Poller::new().unwrap();
        let waker = Waker::new().unwrap();
        poller.add(waker.fd(), Token::Wake).unwrap();
        let mut ready = Ready::new();
        assert_eq!(poller.wait(&mut ready, Duration::ZERO).unwrap(), 0);
        waker.wake();
        assert_eq!(poller.wait(&mut ready, Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(ready.token(0), Token::Wake);
        waker.reset();
        assert_eq!(poller.wait(&mut ready, Duration::ZERO).unwrap(), 0);
    }
}
