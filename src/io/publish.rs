//! Publishes a worker's counters to the `metrics` facade once a second, as deltas: the data
//! plane only bumps plain integers in the core.

use metrics::{counter, gauge};

use crate::core::{Counters, EndReason};

/// The last values published by one worker.
#[derive(Default)]
pub(crate) struct Publisher {
    last: Counters,
}

impl Publisher {
    pub fn publish(&mut self, now: &Counters) {
        let last = &self.last;
        counter!("turnstone_allocations_created_total")
            .increment(now.allocations_created - last.allocations_created);
        for reason in EndReason::ALL {
            let i = reason.index();
            let delta = now.ended_by_reason[i] - last.ended_by_reason[i];
            if delta > 0 {
                counter!("turnstone_allocations_ended_total", "reason" => reason.name())
                    .increment(delta);
            }
        }
        for (method, code, n) in &now.responses {
            let before = last
                .responses
                .iter()
                .find(|(m, c, _)| m == method && c == code)
                .map_or(0, |e| e.2);
            if *n > before {
                counter!("turnstone_requests_total", "method" => *method, "code" => code.to_string())
                    .increment(n - before);
            }
        }
        for (reason, n) in &now.auth_failures_by_reason {
            let before = last
                .auth_failures_by_reason
                .iter()
                .find(|(r, _)| r == reason)
                .map_or(0, |e| e.1);
            if *n > before {
                counter!("turnstone_auth_failures_total", "reason" => *reason)
                    .increment(n - before);
            }
        }
        let pairs = [
            (
                "turnstone_relayed_packets_total",
                "to_peer",
                now.packets_to_peer - last.packets_to_peer,
            ),
            (
                "turnstone_relayed_packets_total",
                "to_client",
                now.packets_to_client - last.packets_to_client,
            ),
            (
                "turnstone_relayed_bytes_total",
                "to_peer",
                now.bytes_to_peer - last.bytes_to_peer,
            ),
            (
                "turnstone_relayed_bytes_total",
                "to_client",
                now.bytes_to_client - last.bytes_to_client,
            ),
        ];
        for (name, direction, delta) in pairs {
            counter!(name, "direction" => direction).increment(delta);
        }
        let drops = [
            (
                "no_permission",
                now.dropped_no_permission - last.dropped_no_permission,
            ),
            ("policy", now.dropped_policy - last.dropped_policy),
            ("malformed", now.dropped_malformed - last.dropped_malformed),
            ("bandwidth", now.dropped_bandwidth - last.dropped_bandwidth),
            ("other", now.dropped_other - last.dropped_other),
        ];
        for (reason, delta) in drops {
            counter!("turnstone_dropped_packets_total", "reason" => reason).increment(delta);
        }
        self.last = now.clone();
    }
}

/// Publishes process-wide values (called by one worker).
pub(crate) fn publish_global(
    allocations: u32,
    tcp_connections: usize,
    rate_limited_delta: u64,
    tls_failures_delta: u64,
) {
    gauge!("turnstone_allocations_active").set(f64::from(allocations));
    gauge!("turnstone_tcp_connections").set(tcp_connections as f64);
    counter!("turnstone_dropped_packets_total", "reason" => "rate_limit")
        .increment(rate_limited_delta);
    counter!("turnstone_tls_handshake_failures_total").increment(tls_failures_delta);
    gauge!("turnstone_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The kernel fast path's event counters (absolute, process-wide: published by worker 0):
/// what it relayed, and why a packet it matched went to userspace after all.
pub(crate) fn publish_fast_path(fast_path: &super::fastpath::FastPath) {
    gauge!("turnstone_fast_path_active").set(1.0);
    for (name, n) in super::fastpath::EVENTS.iter().zip(fast_path.events()) {
        counter!("turnstone_fast_path_events_total", "event" => *name).absolute(n);
    }
}
