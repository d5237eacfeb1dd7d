//! Test support for the sans-IO core (DESIGN.md §7), the one kit shared by the core's unit
//! tests, the fuzz targets, the benches and the zero-allocation test: a scripted TURN client
//! speaking the long-term credential mechanism ([`Client`]), the scripted relay side
//! ([`ScriptedRelays`]: every OpenRelay confirmed at once from a port list unless a test
//! scripts otherwise) and a virtual clock, put together in [`Harness`].
//!
//! Compiled for the crate's own tests and with the `testkit` feature (which the fuzz package
//! and this package's dev-dependency on itself turn on); no shipped build has it. Being test
//! support, it panics on anything unexpected instead of returning errors: a panic is the
//! test failing.

mod client;
mod harness;
mod ledger;
mod relays;
mod tcp;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use crate::core::cidr::Cidr;
use crate::core::policy::PeerPolicy;
use crate::core::{Lifetimes, RelayFamily, Settings};

pub use client::{Attr, Client, Resp, channel, even_port, family, lifetime, peer, transport, udp};
pub use harness::Harness;
pub use ledger::TestLedger;
pub use relays::ScriptedRelays;
pub use tcp::{connection_id, tcp};

/// The realm of the test users.
pub const REALM: &str = "example.org";
/// The SOFTWARE of [`settings`].
pub const SOFTWARE: &str = "turnstone-test";
/// The listener every test client reaches.
pub const LISTENER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478);
/// Relay addresses (never bound: the relay side is scripted).
pub const RELAY_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
/// See [`RELAY_V4`].
pub const RELAY_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10));
/// The REST API secrets of [`Harness::store`]: the one minting now, and the previous one
/// (still accepted, for rotation).
pub const SECRET_NEW: &[u8] = b"new-secret";
/// See [`SECRET_NEW`].
pub const SECRET_OLD: &[u8] = b"old-secret";
/// Unix time at the start of every test.
pub const UNIX_START: u64 = 1_700_000_000;
/// The server's PASSWORD-ALGORITHMS: SHA-256, then MD5.
pub const ALGORITHMS: [u8; 8] = [0, 2, 0, 0, 0, 1, 0, 0];
/// The static users of [`Harness::store`] and their passwords.
const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];

/// A socket address written the usual way (panics on a typo: test input).
pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The peer policy of every test: built-in deny list, `allow` on top, our relay IPs and listener.
pub fn policy(allow: &[&str]) -> PeerPolicy {
    let allow = allow.iter().map(|c| c.parse::<Cidr>().unwrap()).collect();
    PeerPolicy::new(allow, vec![], vec![RELAY_V4, RELAY_V6], vec![LISTENER])
        .with_relay_ports(49152..=65535)
        .with_tcp_listeners(vec![LISTENER])
}

/// Dual-stack settings with RFC default lifetimes and no quotas.
pub fn settings() -> Settings {
    Settings {
        software: Some(SOFTWARE.into()),
        relay_v4: Some(RelayFamily {
            bind: RELAY_V4,
            advertised: RELAY_V4,
        }),
        relay_v6: Some(RelayFamily {
            bind: RELAY_V6,
            advertised: RELAY_V6,
        }),
        lifetimes: Lifetimes::default(),
        policy: policy(&[]),
        max_permissions: 32,
        max_channels: 32,
        tcp_relay: true,
        max_tcp_connections: 8,
        max_allocations_per_user: 0,
        max_allocations: 0,
        allocation_bandwidth: None,
        worker_bandwidth: None,
        alternate_server: None,
        nat_discovery: None,
        selftest: None,
    }
}

/// The virtual clock's origin: the one clock read of these tests; after it time only advances.
#[allow(
    clippy::disallowed_methods,
    reason = "a virtual clock needs one real origin"
)]
pub(crate) fn clock_origin() -> Instant {
    Instant::now()
}
