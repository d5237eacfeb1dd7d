//! The IO layer (DESIGN.md §4): per-core workers with their own SO_REUSEPORT sockets. Each
//! worker has a data-plane thread (UDP listeners and relay sockets on one raw epoll loop with
//! recvmmsg/sendmmsg batches) and a current_thread tokio runtime for TCP/TLS connections and
//! reloads; both drive the same core under a per-worker lock. Thin by design: every protocol
//! decision is made by [`crate::core::Server`].

pub mod accept;
mod admission;
mod bind;
pub mod clock;
pub(crate) mod conn_slots;
mod datapath;
pub mod fastpath;
mod fd_limit;
mod forward;
mod host_ips;
mod ledger;
mod lru;
mod ports;
mod publish;
mod relay;
mod runtime;
mod shared;
mod source;
mod spec;
mod stream;
mod stream_buf;
mod stream_frames;
mod stream_serve;
mod stream_timers;
mod streams;
mod tcp_relay;
mod tcp_tasks;
pub mod tls;
mod tls_handoff;
mod tls_records;
mod tls_stream;
mod udp;
mod worker;

pub use admission::{Admission, is_stun_request};
pub use bind::StartError;
pub use fastpath::{FastPathMode, FastPathSpec};
pub use runtime::{RunningServer, start};
pub use spec::{
    ListenerSpec, MAX_STREAM_TIMEOUT, NatDiscoverySpec, RequestLimits, ServerSpec, StreamLimits,
    TlsSlot, UsageSink,
};
