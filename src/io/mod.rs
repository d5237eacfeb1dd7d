//! The IO layer (DESIGN.md §4): per-core workers, each a current_thread tokio runtime with its
//! own SO_REUSEPORT sockets; batched UDP, TCP/TLS connection tasks, relay sockets. Thin by
//! design: every protocol decision is made by [`crate::core::Server`].

mod admission;
pub mod clock;
pub mod mmsg;
mod publish;
mod relay;
mod relay_poll;
mod runtime;
pub mod socket;
mod stream;
pub mod tls;
mod udp;
mod worker;

pub use admission::{Admission, is_stun_request};
pub use runtime::{
    ListenerSpec, RequestLimits, RunningServer, ServerSpec, StartError, StreamLimits, TlsSlot,
    UsageSink, start,
};
