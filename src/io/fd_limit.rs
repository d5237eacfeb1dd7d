//! The open-file limit: every TCP/TLS client (two over plain TCP: the data-plane thread sends
//! on a duplicate of the socket) and every relay socket is a file descriptor, and
//! the usual soft limit (1024) is far below the default caps. At start the soft
//! RLIMIT_NOFILE is raised to the hard limit, and a warning names the shortfall when the
//! configured caps still cannot fit (accepts would then fail with EMFILE and back off).

use super::spec::ServerSpec;
use crate::sys::rlimit;

/// Descriptors outside the caps: stdio, epoll and eventfd per worker, the admin listener and
/// its clients, log and usage files.
const BASE_FDS: u64 = 64;
/// Per worker: its epoll instance, its eventfd, tokio's driver.
const PER_WORKER_FDS: u64 = 4;

/// Descriptors the configured caps can use at once: every TCP/TLS connection (counted twice,
/// for the plain-TCP duplicate the data-plane thread writes to), every relay
/// port of every relay address family (or the allocation cap, when lower), every worker's
/// listener sockets, plus a fixed base.
pub(crate) fn fds_needed(spec: &ServerSpec) -> u64 {
    let families =
        u64::from(spec.settings.relay_v4.is_some()) + u64::from(spec.settings.relay_v6.is_some());
    let ports =
        u64::from(*spec.relay_ports.end()).saturating_sub(u64::from(*spec.relay_ports.start())) + 1;
    let allocations = match spec.settings.max_allocations {
        0 => u64::MAX,
        n => u64::from(n),
    };
    let relays = (ports * families.max(1)).min(allocations.saturating_mul(families.max(1)));
    fds_for(
        spec.workers,
        // RFC 5780 discovery adds three UDP sockets per worker.
        spec.listeners.len() + if spec.nat_discovery.is_some() { 3 } else { 0 },
        relays,
        spec.stream_limits.max_connections,
    )
}

fn fds_for(workers: usize, listeners: usize, relays: u64, connections: usize) -> u64 {
    let workers = workers.max(1) as u64;
    BASE_FDS + workers * (PER_WORKER_FDS + listeners as u64) + relays + 2 * connections as u64
}

/// Raises the limit and warns when the caps of `spec` do not fit in it.
pub(crate) fn check(spec: &ServerSpec) {
    let needed = fds_needed(spec);
    match rlimit::raise_nofile_to_hard() {
        Ok((before, after)) => {
            let (before, after) = (before.soft, after.soft);
            if after > before {
                tracing::debug!(target: "turnstone::io", before, after, "raised the open-file limit");
            }
            if needed > after {
                tracing::warn!(target: "turnstone::io", limit = after, needed,
                    "the open-file limit (RLIMIT_NOFILE) is below what max_tcp_connections and \
                     the relay port range can use; raise it (LimitNOFILE= in systemd, ulimit -n) \
                     or lower those limits, or connections and allocations will fail when it runs out");
            }
        }
        Err(e) => {
            tracing::warn!(target: "turnstone::io", error = %e, needed, "cannot read or raise the open-file limit")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_caps_need_more_than_the_usual_1024_descriptors() {
        // 10 000 connections and the 16 384 ports of 49152-65535, 4 workers, 2 listeners.
        let needed = fds_for(4, 2, 16_384, 10_000);
        assert_eq!(needed, 64 + 4 * (4 + 2) + 16_384 + 2 * 10_000);
        assert!(needed > 1024);
    }
}
