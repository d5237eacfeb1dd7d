//! The IO layer (DESIGN.md §4): per-core workers with their own SO_REUSEPORT sockets. Each
//! worker has a data-plane thread (UDP listeners, relay sockets and established TCP/TLS
//! client connections on one raw epoll loop, recvmmsg/sendmmsg batches for datagrams) and a
//! current_thread tokio runtime for what is rare: accepting connections, TLS handshakes
//! (`tls_handoff`: rustls negotiates, then `tls_records` carries the records in place),
//! reloads and RFC 6062 TCP relays. Both drive the same core under a per-worker lock that a
//! running relay never contends. Thin by design: every protocol decision is made by
//! [`crate::core::Server`].

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
