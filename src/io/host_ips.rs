//! The host's interface addresses for the peer policy: read at start, on reload, and every
//! few seconds by each worker's data-plane loop (addresses come and go: DHCP, IPv6 temporary
//! addresses, interfaces added at run time).
//!
//! A failed read never empties the set: the policy refuses these addresses as peers (RFC 8656
//! §21), so an empty list would turn every secondary host address into a valid peer. And
//! getifaddrs opens a netlink socket, so it fails under EMFILE, exactly when the server is
//! busiest. At start a failed read stops the server; later ones keep the last known set.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use super::bind::StartError;

/// How often a worker re-reads the host's addresses.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);

/// The host's addresses at start, or why the server cannot start without them.
pub(crate) fn read_at_start() -> Result<Vec<IpAddr>, StartError> {
    at_start(crate::sys::ifaddrs::host_addresses)
}

/// The host's addresses on reload; `None` (logged) keeps the set the workers have.
pub(crate) fn read_for_reload() -> Option<Vec<IpAddr>> {
    match crate::sys::ifaddrs::host_addresses() {
        Ok(ips) => Some(ips),
        Err(e) => {
            tracing::warn!(target: "turnstone::io", error = %e,
                "reload: cannot read the host's interface addresses; keeping the known ones");
            None
        }
    }
}

fn at_start(read: impl FnOnce() -> io::Result<Vec<IpAddr>>) -> Result<Vec<IpAddr>, StartError> {
    read().map_err(StartError::HostAddresses)
}

/// A worker's periodic re-reads: applies a successful read, keeps the current set on failure,
/// and logs a failure once per streak (not every [`REFRESH`]).
#[derive(Debug, Default)]
pub(crate) struct HostWatch {
    /// The last read failed.
    failing: bool,
    /// Streaks of failures seen (each logged once).
    streaks: u64,
}

impl HostWatch {
    /// Reads with `read` and, on success, hands the addresses to `apply` (which takes the
    /// worker's lock: the read itself runs outside it). On failure `apply` is not called.
    pub fn refresh(
        &mut self,
        read: impl FnOnce() -> io::Result<Vec<IpAddr>>,
        apply: impl FnOnce(Vec<IpAddr>),
    ) {
        match read() {
            Ok(ips) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!(target: "turnstone::io", "the host's interface addresses can be read again");
                }
                apply(ips);
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    self.streaks += 1;
                    tracing::warn!(target: "turnstone::io", error = %e,
                        "cannot read the host's interface addresses; keeping the known ones until a read succeeds");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::core::policy::PeerPolicy;

    fn emfile() -> io::Result<Vec<IpAddr>> {
        Err(io::Error::from_raw_os_error(libc::EMFILE))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_failed_read_keeps_the_known_host_addresses_refused() {
        let mut policy = PeerPolicy::new(vec![], vec![], vec![], vec![])
            .with_host_ips(vec![ip("9.9.9.9"), ip("2606:4700::abcd")]);
        let peer: SocketAddr = "9.9.9.9:53".parse().unwrap();
        assert!(policy.check(peer).is_err());
        let mut watch = HostWatch::default();
        watch.refresh(emfile, |ips| {
            policy.set_host_ips(ips);
        });
        assert!(
            policy.check(peer).is_err(),
            "the failed read emptied the set"
        );
        assert_eq!(policy.host_ips(), [ip("9.9.9.9"), ip("2606:4700::abcd")]);
        // A later successful read applies.
        watch.refresh(
            || Ok(vec![ip("1.2.3.4")]),
            |ips| {
                policy.set_host_ips(ips);
            },
        );
        assert_eq!(policy.host_ips(), [ip("1.2.3.4")]);
        assert!(policy.check(peer).is_ok());
    }

    #[test]
    fn a_streak_of_failed_reads_is_logged_once() {
        let mut watch = HostWatch::default();
        for _ in 0..5 {
            watch.refresh(emfile, |_| panic!("nothing to apply"));
        }
        assert_eq!(watch.streaks, 1);
        watch.refresh(|| Ok(Vec::new()), |_| {});
        watch.refresh(emfile, |_| {});
        assert_eq!(watch.streaks, 2);
    }

    #[test]
    fn a_failed_read_at_start_is_a_start_error_that_says_what_failed() {
        let err = at_start(emfile).unwrap_err();
        assert!(matches!(err, StartError::HostAddresses(_)));
        let message = err.to_string();
        assert!(message.contains("interface addresses"), "{message}");
        assert!(message.contains("Too many open files"), "{message}");
    }
}
