//! Counters and usage records.

use super::{FiveTuple, RelayAddr};

/// Bytes and packets relayed by one allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Client → peer packets.
    pub packets_to_peer: u64,
    /// Client → peer payload bytes.
    pub bytes_to_peer: u64,
    /// Peer → client packets.
    pub packets_to_client: u64,
    /// Peer → client payload bytes.
    pub bytes_to_client: u64,
}

/// Why an allocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Its lifetime ran out.
    Expired,
    /// The client sent Refresh with LIFETIME 0.
    Deleted,
    /// The client's TCP/TLS connection closed.
    ConnectionClosed,
    /// The server shut down.
    Shutdown,
}

impl EndReason {
    /// Every reason, in index order.
    pub const ALL: [EndReason; 4] = [
        EndReason::Expired,
        EndReason::Deleted,
        EndReason::ConnectionClosed,
        EndReason::Shutdown,
    ];

    /// A dense index for per-reason counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A label for logs, metrics and usage records.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
            EndReason::ConnectionClosed => "connection_closed",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// One finished allocation (DESIGN.md §6: one JSON line each).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// The username.
    pub user: String,
    /// The client's 5-tuple.
    pub five_tuple: FiveTuple,
    /// Relay addresses as advertised.
    pub relays: Vec<RelayAddr>,
    /// A TCP allocation (RFC 6062): its traffic is the bytes of its spliced connections, each
    /// read counted as one packet.
    pub tcp_relay: bool,
    /// Distinct peers permitted.
    pub peers: u32,
    /// Traffic totals.
    pub traffic: Traffic,
    /// Start, Unix seconds.
    pub started_unix: u64,
    /// End, Unix seconds.
    pub ended_unix: u64,
    /// Why it ended.
    pub reason: EndReason,
}

/// Per-worker counters; the IO layer publishes them to the metrics facade.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Responses sent, by (method, code); code 200 stands for success.
    pub responses: Vec<(&'static str, u16, u64)>,
    /// Authentication failures by reason.
    pub auth_failures_by_reason: Vec<(&'static str, u64)>,
    /// Allocations ended, indexed by [`EndReason::index`].
    pub ended_by_reason: [u64; 4],
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations ended.
    pub allocations_ended: u64,
    /// Requests answered with success.
    pub requests_ok: u64,
    /// Requests answered with an error.
    pub requests_rejected: u64,
    /// Authentication failures (401/438/441).
    pub auth_failures: u64,
    /// Packets relayed client → peer.
    pub packets_to_peer: u64,
    /// Bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// Inputs dropped without a permission.
    pub dropped_no_permission: u64,
    /// Inputs dropped by peer policy.
    pub dropped_policy: u64,
    /// Inputs dropped as malformed.
    pub dropped_malformed: u64,
    /// Packets dropped by a bandwidth cap.
    pub dropped_bandwidth: u64,
    /// Inputs dropped for other reasons.
    pub dropped_other: u64,
}

impl Counters {
    /// Counts one response (control plane only: may allocate the first time a pair is seen).
    pub(crate) fn count_response(&mut self, method: &'static str, code: u16) {
        match self
            .responses
            .iter_mut()
            .find(|(m, c, _)| *m == method && *c == code)
        {
            Some(entry) => entry.2 += 1,
            None => self.responses.push((method, code, 1)),
        }
    }

    /// Counts one authentication failure.
    pub(crate) fn count_auth_failure(&mut self, reason: &'static str) {
        let reason = super::authn::failure_label(reason);
        self.auth_failures += 1;
        match self
            .auth_failures_by_reason
            .iter_mut()
            .find(|(r, _)| *r == reason)
        {
            Some(entry) => entry.1 += 1,
            None => self.auth_failures_by_reason.push((reason, 1)),
        }
    }
}

impl UsageRecord {
    /// The record as one JSON object (no trailing newline).
    pub fn to_json(&self) -> String {
        let relays: Vec<String> = self.relays.iter().map(|r| format!("\"{r}\"")).collect();
        format!(
            concat!(
                "{{\"user\":{},\"client\":\"{}\",\"transport\":\"{}\",\"relay_transport\":\"{}\",\"relays\":[{}],\"peers\":{},",
                "\"packets_to_peer\":{},\"bytes_to_peer\":{},\"packets_to_client\":{},\"bytes_to_client\":{},",
                "\"start\":{},\"end\":{},\"end_reason\":\"{}\"}}"
            ),
            json_string(&self.user),
            self.five_tuple.client,
            self.five_tuple.transport.name(),
            if self.tcp_relay { "tcp" } else { "udp" },
            relays.join(","),
            self.peers,
            self.traffic.packets_to_peer,
            self.traffic.bytes_to_peer,
            self.traffic.packets_to_client,
            self.traffic.bytes_to_client,
            self.started_unix,
            self.ended_unix,
            self.reason.name(),
        )
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
