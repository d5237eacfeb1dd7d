//! The core tests' harness is the crate's test kit (`core::testkit`, shared with the fuzz
//! targets, the benches and the zero-allocation test); this name keeps the tests' imports
//! (`super::harness::…`) as they are.

pub(super) use crate::core::testkit::*;
