//! Level-2 tests of the sans-IO core (DESIGN.md §7): a scripted client, scripted relay sockets and a
//! virtual clock drive the server through the behaviours of RFC 8489, RFC 8656 and RFC 6156.

mod allocate;
mod amplification;
mod auth;
mod binding;
mod channels;
mod data;
mod flat_tables;
mod lifetimes;
mod mirror;
mod nat_discovery;
mod permissions;
mod policy_forms;
mod relay_confirm;
mod revocation;
mod rfc8489_order;
mod rfc_client;
mod selftest;
mod tcp_relay;
mod tcp_relay_data;

// The harness is the crate's test kit (shared with the fuzz targets, the benches and the
// zero-allocation test); this name keeps the tests' `super::harness::…` imports as they are.
use crate::core::testkit as harness;
