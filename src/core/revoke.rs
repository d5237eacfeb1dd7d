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
        let policy = &self.settings.policy;
        let mut removed = 0;
        for id in self.table.ids() {
            let Some(allocation) = self.table.get_mut(id) else {
                continue;
            };
            let before = allocation.permissions.len() + allocation.channels.len();
            allocation
                .permissions
                .retain(|p| policy.check_ip(p.ip).is_ok());
            // A channel is checked with its port (a listener port may be refused alone); one
            // that stays is gated on its relay socket again if the new allow list no longer
            // opens our address deliberately.
            allocation.channels.retain_mut(|c| {
                c.live_gated = policy.is_live_gated(c.peer);
                policy.check(c.peer).is_ok()
            });
            removed += before - allocation.permissions.len() - allocation.channels.len();
        }
        if removed > 0 {
            tracing::info!(target: "turnstone::relay", removed, "peer policy changed: permissions and channels it refuses were revoked");
        }
        removed
    }
}
