//! The probe's TLS client (RFC 8656 §3.1 TURN over TLS): rustls with the ring provider, trusting
//! the system CA bundle or a given CA file; `--insecure` accepts any certificate but still
//! records what a real check would have said.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::verdict::Verdict;
use super::verdict_net::{certificate_problem, tls_failed, tls_io_failed};

/// Where the system CA bundle usually lives (Debian/Ubuntu first); `SSL_CERT_FILE` wins.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A TLS client configuration and what the `--insecure` verifier saw.
pub(crate) struct TlsClient {
    connector: TlsConnector,
    /// With `--insecure`: every refusal a real verification would have given.
    finding: Option<Arc<Mutex<Vec<rustls::Error>>>>,
    /// Where the trusted roots came from, and how many.
    pub(crate) roots: String,
}

/// A finished handshake.
pub(crate) struct Handshake {
    pub(crate) stream: TlsStream<TcpStream>,
    /// "TLSv1_3, TLS13_AES_256_GCM_SHA384".
    pub(crate) parameters: String,
    /// With `--insecure`: what is wrong with the certificate, if anything.
    pub(crate) unverified: Option<Verdict>,
}

impl TlsClient {
    /// Trusts `ca_file`, else the system bundle; `insecure` accepts any certificate.
    pub(crate) fn new(insecure: bool, ca_file: Option<&Path>) -> Result<Self, Verdict> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (roots, source) = load_roots(ca_file)?;
        let roots_text = format!("{} trusted root(s) from {source}", roots.len());
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .ok();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| verdict(format!("TLS setup failed: {e}"), "report this as a bug"))?;
        let (config, finding) = if insecure {
            let finding = Arc::new(Mutex::new(Vec::new()));
            let verifier = Recording {
                inner: webpki,
                provider,
                finding: Arc::clone(&finding),
            };
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            (config, Some(finding))
        } else {
            let Some(webpki) = webpki else {
                return Err(verdict(
                    format!("no trusted CA certificates found ({source})"),
                    "install the ca-certificates package, pass --ca-file, or --insecure for testing",
                ));
            };
            let config = builder.with_webpki_verifier(webpki).with_no_client_auth();
            (config, None)
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            finding,
            roots: roots_text,
        })
    }

    /// Runs the TLS handshake on `tcp` for `host`, bounded by `timeout`.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        host: &str,
        timeout: Duration,
    ) -> Result<Handshake, Verdict> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            verdict(
                format!("{host:?} is not a valid TLS server name"),
                "use the DNS name the certificate was issued for",
            )
        })?;
        let stream = match tokio::time::timeout(timeout, self.connector.connect(name, tcp)).await {
            Err(_) => return Err(tls_io_failed(&std::io::ErrorKind::TimedOut.into())),
            Ok(Err(e)) => {
                let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
                return Err(match inner {
                    Some(tls) => tls_failed(host, tls),
                    None => tls_io_failed(&e),
                });
            }
            Ok(Ok(stream)) => stream,
        };
        let session = stream.get_ref().1;
        let parameters = format!(
            "{}, {}",
            session
                .protocol_version()
                .map_or_else(|| "?".to_owned(), |v| format!("{v:?}")),
            session
                .negotiated_cipher_suite()
                .map_or_else(|| "?".to_owned(), |c| format!("{:?}", c.suite()))
        );
        let unverified = self.finding.as_ref().and_then(|f| {
            let found = std::mem::take(&mut *f.lock().ok()?);
            let verdicts: Vec<Verdict> = found
                .iter()
                .map(|e| match e {
                    rustls::Error::InvalidCertificate(c) => certificate_problem(host, c),
                    other => tls_failed(host, other),
                })
                .collect();
            combine(verdicts)
        });
        Ok(Handshake {
            stream,
            parameters,
            unverified,
        })
    }
}

/// The trusted roots and a description of where they came from.
fn load_roots(ca_file: Option<&Path>) -> Result<(RootCertStore, String), Verdict> {
    let mut roots = RootCertStore::empty();
    if let Some(path) = ca_file {
        let certs = read_certs(path).map_err(|e| {
            verdict(
                format!("cannot read --ca-file {}: {e}", path.display()),
                "give a PEM file with the CA certificate(s)",
            )
        })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(verdict(
                format!("--ca-file {} holds no usable certificate", path.display()),
                "give a PEM file with the CA certificate(s)",
            ));
        }
        return Ok((roots, path.display().to_string()));
    }
    let candidates: Vec<PathBuf> = match std::env::var_os("SSL_CERT_FILE") {
        Some(file) => vec![PathBuf::from(file)],
        None => SYSTEM_BUNDLES.iter().map(PathBuf::from).collect(),
    };
    for path in &candidates {
        if let Ok(certs) = read_certs(path) {
            roots.add_parsable_certificates(certs);
            return Ok((roots, path.display().to_string()));
        }
    }
    let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
    Ok((roots, format!("none of {}", looked.join(", "))))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    CertificateDer::pem_file_iter(path)?.collect()
}

/// Several certificate problems as one verdict: each finding, then each thing to do.
fn combine(verdicts: Vec<Verdict>) -> Option<Verdict> {
    let mut it = verdicts.into_iter();
    let first = it.next()?;
    Some(it.fold(first, |mut all, v| {
        all.what = format!("{}; and {}", all.what, v.what);
        all.todo = format!("{}; {}", all.todo, v.todo);
        all
    }))
}

fn verdict(what: impl Into<String>, todo: impl Into<String>) -> Verdict {
    Verdict {
        expected: false,
        what: what.into(),
        todo: todo.into(),
    }
}

/// `--insecure`: accepts every certificate, remembering why a real check would refuse it.
/// Handshake signatures are still verified, so the server proves it holds the key.
#[derive(Debug)]
struct Recording {
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
    finding: Arc<Mutex<Vec<rustls::Error>>>,
}

/// Problems of the same kind (an expired date, a wrong name, ...) count once.
fn same_kind(a: &rustls::Error, b: &rustls::Error) -> bool {
    use rustls::CertificateError as C;
    let kind = |e: &rustls::Error| -> String {
        match e {
            rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
                format!("{:?}", C::NotValidForName)
            }
            rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => {
                format!("{:?}", C::Expired)
            }
            rustls::Error::InvalidCertificate(C::NotValidYetContext { .. }) => {
                format!("{:?}", C::NotValidYet)
            }
            other => format!("{other:?}"),
        }
    };
    kind(a) == kind(b)
}

impl Recording {
    /// Every problem a real check finds, not only the first: webpki stops at an unknown
    /// issuer, so the chain is checked again against its own top certificate (which shows an
    /// expired or not-yet-valid certificate), and the name is checked on its own.
    fn findings(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Vec<rustls::Error> {
        let unknown = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let first = match &self.inner {
            Some(inner) => inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .err(),
            None => Some(unknown.clone()),
        };
        let mut found: Vec<rustls::Error> = first.into_iter().collect();
        if found.iter().any(|e| same_kind(e, &unknown)) {
            let top = intermediates.last().unwrap_or(end_entity);
            let mut roots = RootCertStore::empty();
            let own = roots.add(top.clone().into_owned()).ok().and_then(|()| {
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .ok()
            });
            if let Some(own) = own
                && let Err(e) = own.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )
            {
                found.push(e);
            }
        }
        if let Ok(parsed) = rustls::server::ParsedCertificate::try_from(end_entity)
            && let Err(e) = rustls::client::verify_server_name(&parsed, server_name)
        {
            found.push(e);
        }
        let mut unique: Vec<rustls::Error> = Vec::new();
        for e in found {
            if !unique.iter().any(|u| same_kind(u, &e)) {
                unique.push(e);
            }
        }
        unique
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let found = self.findings(end_entity, intermediates, server_name, ocsp_response, now);
        if let Ok(mut slot) = self.finding.lock() {
            *slot = found;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("turnstone-diag-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_ca_file_is_trusted_instead_of_the_system_bundle() {
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        let path = temp_file("ca.pem", &ca.cert.pem());
        let (roots, source) = load_roots(Some(&path)).unwrap();
        assert_eq!(roots.len(), 1);
        assert_eq!(source, path.display().to_string());
        assert!(TlsClient::new(false, Some(&path)).is_ok());
    }

    #[test]
    fn an_unreadable_or_empty_ca_file_is_a_verdict() {
        let missing = Path::new("/nonexistent/turnstone/ca.pem");
        let v = load_roots(Some(missing)).err().unwrap();
        assert!(
            v.what.starts_with("cannot read --ca-file /nonexistent"),
            "{}",
            v.what
        );
        let empty = temp_file("empty.pem", "no PEM here\n");
        let v = load_roots(Some(&empty)).err().unwrap();
        assert!(v.what.contains("holds no usable certificate"), "{}", v.what);
    }

    #[test]
    fn insecure_mode_needs_no_trusted_roots() {
        let missing = temp_file("unrelated.txt", "");
        assert!(TlsClient::new(true, None).is_ok());
        assert!(
            TlsClient::new(true, Some(&missing)).is_err(),
            "a bad --ca-file still fails"
        );
    }

    /// A self-signed certificate for `names`, valid until `until` (year).
    fn self_signed(names: &[&str], until: i32) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(until, 1, 1);
        params.self_signed(&key).unwrap().der().clone()
    }

    fn findings_for(cert: &CertificateDer<'_>, host: &str) -> Vec<String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let recording = Recording {
            inner: None,
            provider,
            finding: Arc::new(Mutex::new(Vec::new())),
        };
        let name = ServerName::try_from(host.to_owned()).unwrap();
        recording
            .findings(cert, &[], &name, &[], UnixTime::now())
            .iter()
            .map(|e| format!("{e:?}"))
            .collect()
    }

    #[test]
    fn insecure_mode_lists_every_certificate_problem_not_only_the_issuer() {
        // Self-signed (unknown issuer), for another name, and expired: all three are named.
        let cert = self_signed(&["other.example"], 2021);
        let found = findings_for(&cert, "turn.example.com");
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("UnknownIssuer"), "{found:?}");
        assert!(found.iter().any(|f| f.contains("Expired")), "{found:?}");
        assert!(
            found.iter().any(|f| f.contains("NotValidForName")),
            "{found:?}"
        );
        // The right name and in date: only the issuer.
        let cert = self_signed(&["turn.example.com"], 2100);
        let found = findings_for(&cert, "turn.example.com");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("UnknownIssuer"), "{found:?}");
    }
}
