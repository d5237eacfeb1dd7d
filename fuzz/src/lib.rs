//! The checks behind the fuzz targets, shared with `tests/fuzz_corpus.rs` (which includes this
//! file with `#[path]`), so the committed seeds are replayed through exactly the same logic.
//!
//! Every check takes arbitrary bytes and panics only when an invariant is broken.

pub mod codec;
pub mod framing;
pub mod relays;
pub mod server;
pub mod session;
pub mod tcp;
