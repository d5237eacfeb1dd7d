//! Turnstone: a STUN/TURN relay server.
//!
//! Layout (see DESIGN.md): `proto` is the wire format, `auth` the credentials, `core` the
//! sans-IO server, `io` the sockets and workers, `config` the TOML configuration, `ops` the
//! admin HTTP endpoints, `cli` the subcommands.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod auth;
pub mod cli;
pub mod config;
pub mod core;
pub mod diag;
pub mod io;
pub mod loadgen;
pub mod ops;
pub mod proto;
pub mod sys;
