//! The host's interface addresses for the peer policy: read at start, on reload, and every
//! few seconds by each worker's data-plane loop (addresses come and go: DHCP, IPv6 temporary
//! addresses, interfaces added at run time).

use std::net::IpAddr;
use std::time::Duration;

/// How often a worker re-reads the host's addresses.
pub(crate) const REFRESH: Duration = Duration::from_secs(5);

/// The host's addresses now; on failure an empty list (logged): loopback, the listeners and
/// the relay addresses are still known to the policy without it.
pub(crate) fn read() -> Vec<IpAddr> {
    match crate::sys::ifaddrs::host_addresses() {
        Ok(ips) => ips,
        Err(e) => {
            tracing::warn!(target: "turnstone::io", error = %e, "cannot read the host's interface addresses");
            Vec::new()
        }
    }
}
