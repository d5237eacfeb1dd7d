//! The admin HTTP listener on its own thread: health and readiness for probes and load balancers.
//! Bounded against slow and hostile clients: header-read timeout (which also ends idle
//! keep-alive connections), a connection lifetime, a connection cap with a smaller cap per
//! source address under it (one local client cannot starve the kubelet's probes), and a
//! request size cap.

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
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::auth::CredentialStore;
use crate::io::accept::AcceptBackoff;
use crate::io::conn_slots::{ConnectionSlots, SlotCaps};

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

/// Limits that keep slow or hostile clients from tying up the admin listener.
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Time to send a request's head; also how long a kept-alive connection may sit idle
    /// before its next request (hyper runs the timer while it waits for a head).
    pub header_read_timeout: Duration,
    /// Longest life of one connection, whatever it does (a client that never reads its
    /// response holds it no longer).
    pub connection_lifetime: Duration,
    /// Connections served at once; beyond it new ones are closed at once.
    pub max_connections: usize,
    /// Connections served at once from one source address, under `max_connections`, so
    /// one client holding connections leaves room for the probes of others.
    pub max_connections_per_ip: usize,
    /// Largest request head in bytes (at least 8 KiB, hyper's floor); bodies are refused
    /// with 413, as no endpoint takes one.
    pub max_request_bytes: usize,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(60),
            max_connections: 64,
            max_connections_per_ip: 16,
            max_request_bytes: 16 * 1024,
        }
    }
}

/// Binds `address` and serves the admin endpoints on a thread of its own, with the default
/// [`AdminLimits`].
pub fn spawn_admin(address: SocketAddr, state: Arc<AdminState>) -> std::io::Result<AdminHandle> {
    spawn_admin_with(address, state, AdminLimits::default())
}

/// [`spawn_admin`] with explicit limits.
pub fn spawn_admin_with(
    address: SocketAddr,
    state: Arc<AdminState>,
    limits: AdminLimits,
) -> std::io::Result<AdminHandle> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = std::thread::Builder::new()
        .name("turnstone-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let slots = Arc::new(ConnectionSlots::default());
                let mut backoff = AcceptBackoff::default();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, peer)) => {
                                backoff.after_success("admin");
                                serve(stream, peer, &state, &slots, limits);
                            }
                            Err(e) => backoff.after_error(&e, "admin").await,
                        },
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

/// Serves one connection on its own task, unless `max_connections` are open already, or
/// `max_connections_per_ip` from `peer`'s address.
fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: &Arc<AdminState>,
    slots: &Arc<ConnectionSlots>,
    limits: AdminLimits,
) {
    let caps = SlotCaps {
        total: limits.max_connections,
        per_source: u32::try_from(limits.max_connections_per_ip).unwrap_or(u32::MAX),
        // Admin clients are few and local (probes come from the node's own address): count
        // each address on its own.
        ipv6_prefix: 128,
    };
    let Ok(slot) = slots.acquire(peer.ip(), caps) else {
        return; // dropping the stream closes it
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let service = service_fn(move |req| route(Arc::clone(&state), req));
        let mut builder = http1::Builder::new();
        // Without a timer hyper has no header-read timeout at all (slowloris).
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_request_bytes.max(MIN_BUF))
            .max_headers(64);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
        drop(slot);
    });
}

/// hyper's smallest read buffer.
const MIN_BUF: usize = 8192;

async fn route(
    state: Arc<AdminState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body): (StatusCode, &str, String) =
        match (req.method(), req.uri().path()) {
            // No endpoint takes a body: refuse one unread rather than buffer it.
            _ if has_body(&req) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT,
                "request bodies are not accepted\n".into(),
            ),
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

/// Whether the request announces a body (RFC 9112 §6.3: Transfer-Encoding or a non-zero
/// Content-Length).
fn has_body(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    headers.contains_key(hyper::header::TRANSFER_ENCODING)
        || headers
            .get(hyper::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
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
