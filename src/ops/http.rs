//! The admin HTTP listener on its own thread: health and readiness for probes and load balancers.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::auth::CredentialStore;

/// What `/credentials` needs: the API key and how to mint.
pub struct CredentialIssuer {
    /// Bearer token signaling services present.
    pub api_key: String,
    /// Mints with the first REST secret.
    pub store: Arc<CredentialStore>,
    /// Credential lifetime.
    pub ttl: Duration,
    /// TURN URIs, one per listener.
    pub uris: Vec<String>,
}

/// What the admin endpoints report.
#[derive(Default)]
pub struct AdminState {
    ready: AtomicBool,
    metrics: Option<PrometheusHandle>,
    issuer: RwLock<Option<CredentialIssuer>>,
}

impl AdminState {
    /// State with a metrics handle (from [`super::install_recorder`]).
    pub fn new(metrics: Option<PrometheusHandle>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            metrics,
            issuer: RwLock::new(None),
        }
    }

    /// Sets or clears the credentials endpoint (SIGHUP may change it).
    pub fn set_issuer(&self, issuer: Option<CredentialIssuer>) {
        if let Ok(mut slot) = self.issuer.write() {
            *slot = issuer;
        }
    }

    /// Marks the server ready (listeners bound) or not (starting, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// A running admin listener; dropping it stops the listener.
pub struct AdminHandle {
    address: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl AdminHandle {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds `address` and serves the admin endpoints on a thread of its own.
pub fn spawn_admin(address: SocketAddr, state: Arc<AdminState>) -> std::io::Result<AdminHandle> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new().name("turnstone-admin".into()).spawn(move || {
        runtime.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = Arc::clone(&state);
                        tokio::spawn(async move {
                            let service = service_fn(move |req| route(Arc::clone(&state), req));
                            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                        });
                    }
                    _ = stopped.changed() => return,
                }
            }
        });
    })?;
    Ok(AdminHandle {
        address,
        stop,
        thread: Some(thread),
    })
}

async fn route(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body): (StatusCode, &str, String) =
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => (StatusCode::OK, TEXT, "ok\n".into()),
            (&Method::GET, "/readyz") if state.is_ready() => {
                (StatusCode::OK, TEXT, "ready\n".into())
            }
            (&Method::GET, "/readyz") => {
                (StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n".into())
            }
            (&Method::GET, "/metrics") => match &state.metrics {
                Some(handle) => (StatusCode::OK, "text/plain; version=0.0.4", handle.render()),
                None => (
                    StatusCode::NOT_FOUND,
                    TEXT,
                    "metrics recorder not installed\n".into(),
                ),
            },
            (&Method::GET, "/credentials") => credentials(&state, &req),
            _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
        };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// `GET /credentials?user=NAME` with `Authorization: Bearer KEY`: time-limited REST
/// credentials and a ready `iceServers` array for a signaling service to hand to a browser.
fn credentials(state: &AdminState, req: &Request<Incoming>) -> (StatusCode, &'static str, String) {
    let Ok(issuer) = state.issuer.read() else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            "unavailable\n".into(),
        );
    };
    let Some(issuer) = issuer.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            TEXT,
            "credentials endpoint not configured (set admin.api_key)\n".into(),
        );
    };
    let presented = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), issuer.api_key.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            TEXT,
            "missing or wrong API key\n".into(),
        );
    }
    let user = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("user=")))
        .filter(|u| valid_user(u));
    let unix_now = crate::io::clock::now().unix_secs;
    let Some((username, password)) = issuer.store.mint_rest(user, issuer.ttl.as_secs(), unix_now)
    else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "no REST secret configured\n".into(),
        );
    };
    let uris: Vec<String> = issuer.uris.iter().map(|u| format!("\"{u}\"")).collect();
    let uris = uris.join(",");
    let ttl = issuer.ttl.as_secs();
    let body = format!(
        "{{\"username\":\"{username}\",\"password\":\"{password}\",\"ttl\":{ttl},\"uris\":[{uris}],\
         \"iceServers\":[{{\"urls\":[{uris}],\"username\":\"{username}\",\"credential\":\"{password}\"}}]}}\n"
    );
    (StatusCode::OK, JSON, body)
}

/// User names are echoed into JSON and usage records: keep them to a safe alphabet.
fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 128
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
