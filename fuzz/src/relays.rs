//! The relay side of the server checks: the core's scripted relays (`core::testkit`, the test
//! kit shared by core tests, fuzz targets, benches and the zero-allocation test) on successive
//! even ports, with strict bookkeeping (`strays` must stay 0).

use turnstone::core::testkit::ScriptedRelays;

/// 64 successive even ports from 50002; after them every open fails with `Exhausted`.
pub fn relays() -> ScriptedRelays {
    ScriptedRelays::with_ports((50002..=u16::MAX).step_by(2).take(64))
}
