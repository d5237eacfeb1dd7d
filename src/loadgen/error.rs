//! Why a load run failed.

use std::net::SocketAddr;

use crate::proto::WriteError;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// An invalid setting.
    #[error("invalid load configuration: {0}")]
    Config(&'static str),
    /// A socket could not be bound.
    #[error("cannot bind a UDP socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The server never answered a request.
    #[error("{what}: no answer from {server} after {attempts} transmissions")]
    Timeout {
        /// The request.
        what: &'static str,
        /// The server.
        server: SocketAddr,
        /// Transmissions made.
        attempts: u32,
    },
    /// The server refused a request.
    #[error("{what} rejected by the server: {code} {reason}")]
    Rejected {
        /// The request.
        what: &'static str,
        /// The ERROR-CODE.
        code: u16,
        /// The reason phrase the server sent.
        reason: String,
    },
    /// A response the generator cannot use.
    #[error("bad response to {what}: {why}")]
    BadResponse {
        /// The request.
        what: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// A request did not fit its buffer.
    #[error("cannot write a request: {0}")]
    Write(#[from] WriteError),
    /// The OS random number generator failed.
    #[error("cannot read OS randomness for a transaction id")]
    Random,
}
