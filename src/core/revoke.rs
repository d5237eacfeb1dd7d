//! Applying a tighter peer policy to what already exists (DESIGN.md §4, SIGHUP): permissions
//! and channels the new policy refuses are removed, so a reload or a new host address takes
//! effect at once rather than when the permission (RFC 8656 §9: 300 s) or channel (§12: 600 s)
//! would have lapsed.

use std::net::IpAddr;

use super::connections::Origin;
use super::server::{Command, Server};
use super::tcp::ConnectionId;

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

    /// Removes every permission, channel and RFC 6062 peer connection the current policy
    /// refuses; returns how many.
    pub(crate) fn revoke_refused(&mut self) -> usize {
        let removed = self.table.revoke(&self.settings.policy) + self.revoke_connections();
        if removed > 0 {
            tracing::info!(target: "turnstone::relay", removed, "peer policy changed: permissions, channels and peer connections it refuses were revoked");
        }
        removed
    }

    /// Closes the peer connections of TCP allocations whose peer the policy now refuses: a
    /// Connect's peer with its port (as Connect checked it), a peer that connected in by its
    /// IP (as its permission was checked).
    fn revoke_connections(&mut self) -> usize {
        let policy = &self.settings.policy;
        let refused: Vec<ConnectionId> = self
            .connections
            .ids()
            .into_iter()
            .filter(|id| {
                self.connections.get(*id).is_some_and(|c| match c.origin {
                    Origin::Connect => policy.check_tcp(c.peer).is_err(),
                    Origin::Peer => policy.check_ip(c.peer.ip()).is_err(),
                })
            })
            .collect();
        for &connection in &refused {
            self.remove_connection(connection);
            self.commands
                .push_back(Command::CloseConnection { connection });
        }
        refused.len()
    }
}
