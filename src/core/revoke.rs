//! Applying a tighter peer policy to what already exists (DESIGN.md §4, SIGHUP): permissions
//! and channels the new policy refuses are removed, so a reload or a new host address takes
//! effect at once rather than when the permission (RFC 8656 §9: 300 s) or channel (§12: 600 s)
//! would have lapsed.

use std::net::IpAddr;

use super::server::Server;

impl Server {
    /// Replaces the host's interface addresses in the peer policy (the IO layer reads them
    /// periodically) and revokes what they now refuse. Returns how many permissions and
    /// channels were removed.
    pub fn set_host_addresses(&mut self, ips: Vec<IpAddr>) -> usize {
        if self.settings.policy.set_host_ips(ips) {
            self.revoke_refused()
        } else {
            0
        }
    }

    /// Removes every permission and channel the current policy refuses; returns how many.
    pub(crate) fn revoke_refused(&mut self) -> usize {
        let removed = self.table.revoke(&self.settings.policy);
        if removed > 0 {
            tracing::info!(target: "turnstone::relay", removed, "peer policy changed: permissions and channels it refuses were revoked");
        }
        removed
    }
}
