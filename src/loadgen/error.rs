//! Why a load run failed.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::proto::{FramingError, WriteError};

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
    /// A TCP connection to the server could not be opened.
    #[error("cannot connect to {addr} over TCP: {error}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// The OS error (only in the message: not a chained source, so printed once).
        error: std::io::Error,
    },
    /// The server closed an allocation's TCP or TLS connection during the run.
    #[error("{server} closed the connection")]
    Closed {
        /// The server.
        server: SocketAddr,
    },
    /// The server sent stream data that is neither STUN nor ChannelData (RFC 8656 §12.5).
    #[error("cannot frame the stream from {server}: {error}")]
    Framing {
        /// The server.
        server: SocketAddr,
        /// What is wrong.
        error: FramingError,
    },
    /// The TLS client configuration could not be built.
    #[error("cannot set up TLS: {0}")]
    TlsSetup(#[from] rustls::Error),
    /// A TLS handshake or record failed.
    #[error("TLS with {server} failed: {error}")]
    Tls {
        /// The server.
        server: SocketAddr,
        /// The error (rustls errors come wrapped in an I/O error).
        error: std::io::Error,
    },
    /// The CA file could not be read.
    #[error("cannot read the CA file {path}: {error}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("the CA file {path} holds no usable certificate")]
    NoCa {
        /// The file.
        path: PathBuf,
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
