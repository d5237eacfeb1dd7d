//! One private epoll instance per worker for all its relay sockets, itself registered with the
//! worker's tokio reactor. A single task then drains every ready relay socket per wake-up and
//! sends the results with one sendmmsg per client socket, like a bare forwarder would — no
//! task, waker or reactor slot per allocation.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use crate::core::RelayId;

/// Relay sockets ready per epoll_wait call.
const EVENTS: usize = 64;

/// The epoll instance.
pub(crate) struct RelayPoll {
    fd: Rc<OwnedFd>,
}

impl RelayPoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before being owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self {
            fd: Rc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
        })
    }

    /// Watches `socket` for input, tagged with its relay id (level-triggered).
    pub fn add(&self, socket: BorrowedFd<'_>, id: RelayId) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: id.0,
        };
        // SAFETY: both descriptors are open; `event` outlives the call.
        let rc = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                socket.as_raw_fd(),
                &mut event,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Stops watching `socket` (closing it would too; this keeps the order explicit).
    pub fn remove(&self, socket: BorrowedFd<'_>) {
        // SAFETY: both descriptors are open; a null event is allowed for DEL.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                socket.as_raw_fd(),
                std::ptr::null_mut(),
            );
        }
    }

    /// The ready relay ids, without waiting; empty when none is ready.
    pub fn ready(&self, out: &mut ReadyList) -> io::Result<usize> {
        // SAFETY: `out.events` has room for EVENTS entries.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                out.events.as_mut_ptr(),
                EVENTS as i32,
                0,
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
        out.len = n as usize;
        Ok(out.len)
    }

    /// A handle for registering the epoll fd with tokio; it keeps the fd open.
    pub fn handle(&self) -> PollHandle {
        PollHandle(Rc::clone(&self.fd))
    }
}

impl AsFd for RelayPoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The epoll fd as tokio's `AsyncFd` sees it: shares ownership, so the fd stays open for as
/// long as the registration exists.
pub(crate) struct PollHandle(Rc<OwnedFd>);

impl AsRawFd for PollHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Reusable room for one epoll_wait's results.
pub(crate) struct ReadyList {
    events: [libc::epoll_event; EVENTS],
    len: usize,
}

impl ReadyList {
    pub fn new() -> Self {
        Self {
            events: [libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            len: 0,
        }
    }

    /// How many ids one call can return.
    pub fn capacity(&self) -> usize {
        EVENTS
    }

    /// The relay ids from the last call to [`RelayPoll::ready`].
    pub fn ids(&self) -> impl Iterator<Item = RelayId> + '_ {
        self.events[..self.len].iter().map(|e| RelayId(e.u64))
    }
}
