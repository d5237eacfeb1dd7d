//! The IO layer (DESIGN.md §4): per-core workers, each a current_thread tokio runtime with its
//! own SO_REUSEPORT sockets; batched UDP, TCP/TLS connection tasks, relay sockets. Thin by
//! design: every protocol decision is made by [`crate::core::Server`].

pub mod clock;
pub mod mmsg;
mod relay;
mod runtime;
pub mod socket;
mod stream;
pub mod tls;
mod udp;
mod worker;

pub use runtime::{
    ListenerSpec, RunningServer, ServerSpec, StartError, StreamLimits, UsageSink, start,
};
