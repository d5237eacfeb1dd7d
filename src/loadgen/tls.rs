//! TURN over TLS for the generator (RFC 8656 §3.1): a rustls client driven by hand over a
//! std TCP stream, so the synchronous epoll loop needs no async runtime. The handshake runs
//! blocking during setup; in the data loop reads and writes never block.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::{LoadConfig, LoadError};

/// The TLS client configuration and the name the server's certificate must carry.
#[derive(Debug)]
pub(super) struct TlsTarget {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl TlsTarget {
    /// Trusts `config.tls_ca`, or with `tls_insecure` any certificate. The name checked (and
    /// sent as SNI when it is a DNS name; RFC 6066 §3 allows no IP literal there) is
    /// `config.tls_name`, else the server's IP address.
    pub(super) fn new(config: &LoadConfig) -> Result<Self, LoadError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let client = if config.tls_insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate { provider }))
                .with_no_client_auth()
        } else {
            let path = config.tls_ca.as_deref().ok_or(LoadError::Config(
                "TLS needs a CA file to verify the server, or tls_insecure",
            ))?;
            builder
                .with_root_certificates(load_roots(path)?)
                .with_no_client_auth()
        };
        let name = match &config.tls_name {
            Some(name) => ServerName::try_from(name.clone())
                .map_err(|_| LoadError::Config("the TLS server name is not a DNS name or IP"))?,
            None => ServerName::IpAddress(config.server.ip().into()),
        };
        Ok(Self {
            config: Arc::new(client),
            name,
        })
    }
}

fn load_roots(path: &Path) -> Result<RootCertStore, LoadError> {
    let failed = |error| LoadError::CaFile {
        path: path.to_owned(),
        error,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(failed)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed)?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(LoadError::NoCa {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// A TLS session over a TCP stream.
#[derive(Debug)]
pub(super) struct TlsConn {
    tcp: TcpStream,
    tls: ClientConnection,
    /// Decrypted bytes not read yet: the socket will not report them.
    pending: bool,
}

impl TlsConn {
    /// Runs the handshake on a connected, blocking `tcp` (its timeouts bound each read and
    /// write).
    pub(super) fn handshake(
        mut tcp: TcpStream,
        target: &TlsTarget,
        server: SocketAddr,
    ) -> Result<Self, LoadError> {
        let failed = |error| LoadError::Tls { server, error };
        let mut tls = ClientConnection::new(Arc::clone(&target.config), target.name.clone())?;
        // complete_io finishes the handshake in one call unless the peer goes quiet; a few
        // more calls cover a slow server before giving up.
        for _ in 0..4 {
            if !tls.is_handshaking() {
                return Ok(Self {
                    tcp,
                    tls,
                    pending: false,
                });
            }
            tls.complete_io(&mut tcp).map_err(|e| match e.kind() {
                // A read timeout on a blocking socket reads as WouldBlock.
                io::ErrorKind::WouldBlock => failed(io::ErrorKind::TimedOut.into()),
                _ => failed(e),
            })?;
        }
        Err(failed(io::ErrorKind::TimedOut.into()))
    }

    /// The TCP stream under the session.
    pub(super) fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Reads decrypted bytes into `dst`: `Ok(0)` at the end of the stream, `Interrupted`
    /// after progress without plaintext (call again), `WouldBlock` when nothing is waiting.
    pub(super) fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let mut state = self.tls.process_new_packets().map_err(io::Error::other)?;
        if state.plaintext_bytes_to_read() == 0 {
            if state.peer_has_closed() || self.tls.read_tls(&mut self.tcp)? == 0 {
                self.pending = false;
                return Ok(0);
            }
            // Records read now are decrypted now: the socket will not report them again.
            state = self.tls.process_new_packets().map_err(io::Error::other)?;
            self.push()?; // e.g. a KeyUpdate answer
            if state.plaintext_bytes_to_read() == 0 {
                self.pending = false;
                return Err(io::ErrorKind::Interrupted.into());
            }
        }
        let n = self.tls.reader().read(dst)?;
        self.pending = n < state.plaintext_bytes_to_read();
        Ok(n)
    }

    /// Decrypted bytes are waiting.
    pub(super) fn pending(&self) -> bool {
        self.pending
    }

    /// Encrypts what rustls takes of `src` (its buffer is bounded; 0 when full) and sends
    /// what the socket takes.
    pub(super) fn write(&mut self, src: &[u8]) -> io::Result<usize> {
        let n = self.tls.writer().write(src)?;
        self.push()?;
        Ok(n)
    }

    /// Encrypted bytes wait for the socket.
    pub(super) fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// Writes TLS records until the socket is full or none are left.
    pub(super) fn push(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for TlsConn {
    /// Closes the session politely (RFC 8446 §6.1 close_notify), best effort and without
    /// blocking on a server that stopped reading.
    fn drop(&mut self) {
        self.tls.send_close_notify();
        if self.tcp.set_nonblocking(true).is_ok() {
            let _ = self.push();
        }
    }
}

/// `tls_insecure`: accepts any certificate (benchmark servers use self-signed ones) but still
/// checks the handshake signatures, so the server proves it holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
