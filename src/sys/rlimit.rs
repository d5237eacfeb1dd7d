//! The open-file limit (`getrlimit(2)`/`setrlimit(2)` on `RLIMIT_NOFILE`). What to do about
//! it (how many descriptors the configuration needs, when to warn) is io's business.

use std::io;

/// An `RLIMIT_NOFILE` pair: the soft limit in force and the hard ceiling it may be raised to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The limit the kernel enforces now.
    pub soft: u64,
    /// The most an unprivileged process may raise `soft` to.
    pub hard: u64,
}

/// Reads the process's open-file limit.
pub fn nofile_limit() -> io::Result<NofileLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a live rlimit for getrlimit to fill in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(NofileLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the soft open-file limit to the hard limit (no privilege needed); returns the
/// limits before and after.
pub fn raise_nofile_to_hard() -> io::Result<(NofileLimit, NofileLimit)> {
    let before = nofile_limit()?;
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let limit = libc::rlimit {
        rlim_cur: before.hard,
        rlim_max: before.hard,
    };
    // SAFETY: `limit` is a valid rlimit that keeps the hard limit and raises the soft one to it.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, nofile_limit()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
        let (before, after) = raise_nofile_to_hard().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
        assert_eq!(nofile_limit().unwrap(), after);
    }
}
