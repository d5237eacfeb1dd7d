//! The Prometheus recorder behind the `metrics` facade, rendered by our own `/metrics` route.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once; later calls return the same handle. `None` when
/// another recorder was installed first.
pub fn install_recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok()?;
            describe();
            Some(handle)
        })
        .clone()
}

/// `# HELP` lines for every metric the server publishes.
fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "turnstone_allocations_created_total",
        "Allocations created (RFC 8656 Allocate successes)."
    );
    describe_counter!(
        "turnstone_allocations_ended_total",
        "Allocations ended, by reason: expired, deleted, connection_closed, shutdown."
    );
    describe_counter!(
        "turnstone_requests_total",
        "STUN/TURN requests answered, by method and response code (200 = success)."
    );
    describe_counter!(
        "turnstone_auth_failures_total",
        "Authentication failures (not first challenges), by reason."
    );
    describe_counter!(
        "turnstone_relayed_packets_total",
        "Packets relayed, by direction (to_peer, to_client), in userspace and the kernel."
    );
    describe_counter!(
        "turnstone_relayed_bytes_total",
        "Payload bytes relayed, by direction, in userspace and the kernel."
    );
    describe_counter!(
        "turnstone_dropped_packets_total",
        "Packets dropped, by reason (rate_limit, no_permission, bandwidth, policy, ...)."
    );
    describe_counter!(
        "turnstone_relay_ports_refused_total",
        "Relay ports the kernel refused to bind (skipped)."
    );
    describe_counter!(
        "turnstone_tls_handshake_failures_total",
        "TLS handshakes that failed or timed out."
    );
    describe_counter!(
        "turnstone_fast_path_events_total",
        "Kernel fast path: packets relayed (relayed_to_peer, relayed_to_client) and why a \
         matched packet went to userspace (stale, no_route, offloaded, too_big, rewrite_failed)."
    );
    describe_gauge!("turnstone_allocations_active", "Allocations alive.");
    describe_gauge!(
        "turnstone_tcp_connections",
        "Open TCP/TLS client connections."
    );
    describe_gauge!(
        "turnstone_fast_path_active",
        "1 when the kernel fast path relays (absent when it is off or inactive)."
    );
    describe_gauge!("turnstone_build_info", "1, labelled with the version.");
}
