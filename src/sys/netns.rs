//! Network namespaces (`setns(2)`), for tests that need interface addresses of their own
//! without touching the host's network: a thread that enters a namespace creates its sockets
//! there, and threads it spawns afterwards inherit it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Moves the calling thread (only) into the network namespace at `path`, e.g.
/// `/var/run/netns/NAME` as created by `ip netns add NAME`.
pub fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: a valid open descriptor and a namespace type constant; affects this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
