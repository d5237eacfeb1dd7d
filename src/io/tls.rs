//! rustls server configuration for TURN over TLS (RFC 8656 §3.1), loaded from
//! PEM files, with the ring crypto provider and no client authentication
//! (clients authenticate with STUN long-term credentials instead).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{InconsistentKeys, ServerConfig};

/// Label used in errors for a certificate given as bytes, not as a file.
const CERT_PEM_LABEL: &str = "<certificate PEM>";
/// Label used in errors for a private key given as bytes, not as a file.
const KEY_PEM_LABEL: &str = "<private key PEM>";

/// Why a TLS server configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The file could not be opened or read.
    #[error("cannot read file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The file holds no `CERTIFICATE` PEM section.
    #[error("no certificate found in {}", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The file holds no private key PEM section (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found in {}", path.display())]
    NoPrivateKey {
        /// The private key file.
        path: PathBuf,
    },
    /// The file is not well-formed PEM.
    #[error("malformed PEM in {}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: pem::Error,
    },
    /// The private key is not the key of the first certificate.
    #[error(
        "the private key in {} does not match the certificate in {}",
        key.display(),
        certificate.display()
    )]
    KeyMismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// rustls refused the certificate or key (e.g. an unsupported key type).
    #[error(
        "TLS rejected the certificate in {} or the key in {}: {source}",
        certificate.display(),
        key.display()
    )]
    Rustls {
        /// The certificate file.
        certificate: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// Builds a TLS server configuration from a PEM certificate chain file (leaf
/// first) and a PEM private key file.
pub fn load_server_config(
    certificate: &Path,
    private_key: &Path,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let certs = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| pem_error(certificate, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(certificate, e))?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: certificate.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsConfigError::NoPrivateKey {
            path: private_key.to_path_buf(),
        },
        e => pem_error(private_key, e),
    })?;
    build(certs, key, certificate, private_key)
}

/// Builds a TLS server configuration from PEM bytes: a certificate chain (leaf
/// first) and a private key. Errors name the inputs `<certificate PEM>` and
/// `<private key PEM>`.
pub fn server_config_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let cert_label = Path::new(CERT_PEM_LABEL);
    let key_label = Path::new(KEY_PEM_LABEL);
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_label, e))?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: cert_label.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsConfigError::NoPrivateKey {
            path: key_label.to_path_buf(),
        },
        e => pem_error(key_label, e),
    })?;
    build(certs, key, cert_label, key_label)
}

/// The ring provider, rustls's safe default protocol versions (TLS 1.2 and
/// 1.3), no client certificates, one certificate chain for every SNI name.
fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    certificate: &Path,
    private_key: &Path,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let rustls_error = |source| match source {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            TlsConfigError::KeyMismatch {
                certificate: certificate.to_path_buf(),
                key: private_key.to_path_buf(),
            }
        }
        source => TlsConfigError::Rustls {
            certificate: certificate.to_path_buf(),
            key: private_key.to_path_buf(),
            source,
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_error)?;
    // After the handshake the record layer runs outside rustls, in place (`tls_records`).
    config.enable_secret_extraction = true;
    // No 0-RTT: early data would arrive before the handoff, outside the record layer.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// Maps a PEM loading error for `path` to the matching variant.
fn pem_error(path: &Path, e: pem::Error) -> TlsConfigError {
    match e {
        pem::Error::Io(source) => TlsConfigError::Read {
            path: path.to_path_buf(),
            source,
        },
        source => TlsConfigError::Pem {
            path: path.to_path_buf(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("turnstone-tls-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn self_signed() -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (ck.cert.pem(), ck.key_pair.serialize_pem())
    }

    #[test]
    fn generated_certificate_and_key_files_load() {
        let dir = TempDir::new();
        let (cert, key) = self_signed();
        let cert_path = dir.write("cert.pem", &cert);
        let key_path = dir.write("key.pem", &key);
        let config = load_server_config(&cert_path, &key_path).unwrap();
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn pem_bytes_load() {
        let (cert, key) = self_signed();
        server_config_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    }

    #[test]
    fn missing_file_is_named_as_unreadable() {
        let dir = TempDir::new();
        let (_, key) = self_signed();
        let key_path = dir.write("key.pem", &key);
        let missing = dir.0.join("nope.pem");
        let err = load_server_config(&missing, &key_path).unwrap_err();
        assert!(matches!(&err, TlsConfigError::Read { path, .. } if *path == missing));
        assert!(err.to_string().starts_with("cannot read file "));
        assert!(err.to_string().contains("nope.pem"));
    }

    #[test]
    fn empty_certificate_file_has_no_certificate() {
        let dir = TempDir::new();
        let (_, key) = self_signed();
        let cert_path = dir.write("cert.pem", "");
        let key_path = dir.write("key.pem", &key);
        let err = load_server_config(&cert_path, &key_path).unwrap_err();
        assert!(matches!(&err, TlsConfigError::NoCertificate { path } if *path == cert_path));
        assert!(err.to_string().contains("no certificate found in"));
    }

    #[test]
    fn empty_key_file_has_no_private_key() {
        let dir = TempDir::new();
        let (cert, _) = self_signed();
        let cert_path = dir.write("cert.pem", &cert);
        let key_path = dir.write("key.pem", "");
        let err = load_server_config(&cert_path, &key_path).unwrap_err();
        assert!(matches!(&err, TlsConfigError::NoPrivateKey { path } if *path == key_path));
    }

    #[test]
    fn key_file_holding_only_a_certificate_has_no_private_key() {
        let dir = TempDir::new();
        let (cert, _) = self_signed();
        let cert_path = dir.write("cert.pem", &cert);
        let err = load_server_config(&cert_path, &cert_path).unwrap_err();
        assert!(matches!(err, TlsConfigError::NoPrivateKey { .. }));
    }

    #[test]
    fn key_of_another_certificate_is_a_mismatch() {
        let dir = TempDir::new();
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let cert_path = dir.write("cert.pem", &cert);
        let key_path = dir.write("key.pem", &other_key);
        let err = load_server_config(&cert_path, &key_path).unwrap_err();
        assert!(matches!(err, TlsConfigError::KeyMismatch { .. }), "{err:?}");
        assert!(err.to_string().contains("does not match"));
    }

    #[test]
    fn malformed_pem_is_reported_with_its_file() {
        let dir = TempDir::new();
        let (_, key) = self_signed();
        let cert_path = dir.write(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        );
        let key_path = dir.write("key.pem", &key);
        let err = load_server_config(&cert_path, &key_path).unwrap_err();
        assert!(matches!(&err, TlsConfigError::Pem { path, .. } if *path == cert_path));
    }
}
