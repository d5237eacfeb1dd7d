//! Integration tests: an in-process Turnstone on loopback, driven by a hand-rolled client,
//! the webrtc-rs `turn`/`stun` crates and coturn's `turnutils_*` tools.

mod amplification;
mod bench_transports;
mod binding;
mod client;
mod common;
mod deploy;
mod fastpath;
mod hostile;
mod hostile_admin;
mod hostile_streams;
mod hostile_tls;
mod interop_coturn;
mod interop_coturn_tcp;
mod interop_stun_crate;
mod interop_turn_crate;
mod loadgen_udp;
mod nat_discovery;
mod netns;
mod ops_admin;
mod ops_lifecycle;
mod ops_limits;
mod ops_selftest;
mod ops_tls;
mod policy_reload;
mod probe;
mod probe_netns;
mod relay_ports;
mod second_instance;
mod selftest;
mod tcp_relay;
mod turn_stream;
mod turn_udp;
