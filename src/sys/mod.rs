//! The OS layer (DESIGN.md §2): thin wrappers over the Linux system calls the IO layer and the
//! load generator need and the standard library does not offer (recvmmsg/sendmmsg batches,
//! epoll and eventfd, socket options, interface addresses, resource limits), and the one place
//! that reads clocks (`clock`, shared by the server and the load generator). Linux only: the
//! data plane is built on epoll and the batch calls, and nothing else is tested. The only place
//! meant for `unsafe`.

#[cfg(not(target_os = "linux"))]
compile_error!("Turnstone runs on Linux only (epoll, eventfd, recvmmsg/sendmmsg)");

pub mod clock;
pub mod ifaddrs;
pub mod mmsg;
pub mod poller;
pub mod rlimit;
pub mod socket;
