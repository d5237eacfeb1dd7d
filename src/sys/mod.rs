//! The OS layer (DESIGN.md §2): thin, Linux-first wrappers over system calls the IO layer needs
//! and the standard library does not offer. The only place meant for `unsafe`.

pub mod ifaddrs;
pub mod rlimit;
