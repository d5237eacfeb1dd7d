//! A TLS client's handshake, on the worker's stream runtime, and the handoff of the
//! established connection to the data-plane thread: rustls's unbuffered server connection
//! negotiates ([`Handshake`], without IO), then gives up the traffic keys and its key-update
//! state ([`RecordLayer`]) and the plain socket. The bytes the client sent past the handshake
//! stay in our buffer and go along, so nothing is lost however the segments fell.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls_records::{MAX_RECORD, RecordError, RecordLayer};

/// Why a TLS client did not get through.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("TLS handshake timed out")]
    TimedOut,
    #[error("TLS handshake failed: {0}")]
    Failed(#[source] io::Error),
    #[error("TLS handshake failed: {0}")]
    Refused(#[source] rustls::Error),
    #[error("TLS handshake record larger than the buffer")]
    Oversized,
    #[error("cannot take over the TLS session: {0}")]
    Handoff(#[from] rustls::Error),
    #[error("cannot take over the TLS session: {0}")]
    Records(#[from] RecordError),
}

/// An established TLS connection, ready for the data-plane thread.
pub(crate) struct Established {
    /// The plain socket, non-blocking.
    pub socket: std::net::TcpStream,
    pub records: RecordLayer,
    /// Application data rustls decrypted with the handshake's last flight (plaintext).
    pub early: Vec<u8>,
    /// What the client sent after that, not decrypted yet (at most part of a record).
    pub input: Vec<u8>,
}

/// Runs the handshake within `within` and takes the session over from rustls.
pub(crate) async fn handshake(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    within: Duration,
) -> Result<Established, HandshakeError> {
    tokio::time::timeout(within, negotiate(config, stream))
        .await
        .map_err(|_| HandshakeError::TimedOut)?
}

async fn negotiate(
    config: Arc<rustls::ServerConfig>,
    mut tcp: TcpStream,
) -> Result<Established, HandshakeError> {
    let mut handshake = Handshake::new(config)?;
    loop {
        let advanced = handshake.advance();
        // On failure too: rustls's alert tells the client why (RFC 8446 §6.2).
        if !handshake.outgoing.is_empty() {
            let written = tcp.write_all(&handshake.outgoing).await;
            handshake.outgoing.clear();
            if advanced.is_ok() {
                written.map_err(HandshakeError::Failed)?;
            }
        }
        if advanced? {
            break;
        }
        let n = tcp
            .read(handshake.room())
            .await
            .map_err(HandshakeError::Failed)?;
        if n == 0 {
            return Err(HandshakeError::Failed(io::ErrorKind::UnexpectedEof.into()));
        }
        handshake.received(n);
    }
    let (records, early, input) = handshake.finish()?;
    let socket = tcp.into_std().map_err(HandshakeError::Failed)?;
    Ok(Established {
        socket,
        records,
        early,
        input,
    })
}

/// rustls's unbuffered server connection driven without IO: bytes in ([`Handshake::room`],
/// [`Handshake::received`]), bytes out (`outgoing`), and at the end the record layer and the
/// bytes the client sent past the handshake.
pub(crate) struct Handshake {
    conn: UnbufferedServerConnection,
    incoming: Vec<u8>,
    len: usize,
    /// Bytes for the client, to write before reading more.
    pub outgoing: Vec<u8>,
    /// Application data that came with the handshake's last flight.
    early: Vec<u8>,
}

/// What one state of rustls's asked for.
enum Step {
    Again,
    NeedInput,
    Done,
    Failed(io::ErrorKind),
}

impl Handshake {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Self, HandshakeError> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config).map_err(HandshakeError::Refused)?,
            incoming: vec![0; MAX_RECORD + 4096],
            len: 0,
            outgoing: Vec::new(),
            early: Vec::new(),
        })
    }

    /// Room to read into; then call [`Handshake::received`] with how much arrived.
    pub fn room(&mut self) -> &mut [u8] {
        &mut self.incoming[self.len..]
    }

    pub fn received(&mut self, n: usize) {
        self.len = (self.len + n).min(self.incoming.len());
    }

    /// Runs rustls as far as it goes: `true` once the handshake is done. Either way, write
    /// what is in `outgoing` first.
    pub fn advance(&mut self) -> Result<bool, HandshakeError> {
        loop {
            let status = self
                .conn
                .process_tls_records(&mut self.incoming[..self.len]);
            let discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    self.take_alert();
                    return Err(HandshakeError::Refused(e));
                }
            };
            let step = match state {
                ConnectionState::EncodeTlsData(mut encode) => {
                    let need = match encode.encode(&mut []) {
                        Err(EncodeError::InsufficientSize(e)) => e.required_size,
                        _ => 0,
                    };
                    let at = self.outgoing.len();
                    self.outgoing.resize(at + need, 0);
                    let written = encode
                        .encode(&mut self.outgoing[at..])
                        .map_err(|_| HandshakeError::Oversized)?;
                    self.outgoing.truncate(at + written);
                    Step::Again
                }
                // Everything encoded is in `outgoing`, which leaves before anything is read.
                ConnectionState::TransmitTlsData(transmit) => {
                    transmit.done();
                    Step::Again
                }
                ConnectionState::ReadTraffic(mut read) => {
                    while let Some(record) = read.next_record() {
                        let record = record.map_err(HandshakeError::Refused)?;
                        self.early.extend_from_slice(record.payload);
                    }
                    Step::Again
                }
                ConnectionState::BlockedHandshake => Step::NeedInput,
                ConnectionState::WriteTraffic(_) => Step::Done,
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    Step::Failed(io::ErrorKind::UnexpectedEof)
                }
                // No 0-RTT is configured (`tls.rs`).
                _ => Step::Failed(io::ErrorKind::InvalidData),
            };
            self.incoming.copy_within(discard..self.len, 0);
            self.len -= discard;
            match step {
                Step::Again => {}
                Step::NeedInput if self.len == self.incoming.len() => {
                    return Err(HandshakeError::Oversized);
                }
                Step::NeedInput => return Ok(false),
                Step::Done => return Ok(true),
                Step::Failed(kind) => return Err(HandshakeError::Failed(kind.into())),
            }
        }
    }

    /// After a failure rustls still hands out the alert it queued: into `outgoing`.
    fn take_alert(&mut self) {
        for _ in 0..4 {
            let status = self.conn.process_tls_records(&mut []);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    let mut alert = [0u8; 64];
                    if let Ok(n) = encode.encode(&mut alert) {
                        self.outgoing.extend_from_slice(&alert[..n]);
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// The record layer, the application data that came with the handshake (plaintext),
    /// and the client's bytes after it (records not opened yet).
    pub fn finish(self) -> Result<(RecordLayer, Vec<u8>, Vec<u8>), HandshakeError> {
        let (secrets, kernel) = self.conn.dangerous_into_kernel_connection()?;
        let version = Some(kernel.protocol_version());
        let records = RecordLayer::new(version, &secrets, Some(kernel))?;
        let input = self.incoming[..self.len].to_vec();
        Ok((records, self.early, input))
    }
}
