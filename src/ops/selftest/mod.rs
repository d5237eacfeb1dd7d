//! The public self-test page (`[selftest]`): its own HTTP or HTTPS listener, separate from the
//! private admin listener, serving
//!
//! - `GET /`: one self-contained page (inline HTML, CSS and JS, no external assets) that runs
//!   the test in the visitor's browser: candidate gathering with the server's STUN, then for
//!   each transport the server offers (UDP, TCP, TLS) a relay candidate and a relay-only data
//!   channel between two peer connections of the page, through this server (RTT, loss,
//!   throughput over a bounded run), and plain-words results with a report ID;
//! - `POST /credential`: a self-test credential (`auth::selftest`) for a fresh report ID, the
//!   URLs to test and the run's bounds;
//! - `POST /report`: the page's results, checked against the credential that names the report
//!   ID, logged once as one line (target `turnstone::selftest`) and counted in
//!   `turnstone_selftest_reports_total{outcome}`.
//!
//! Anyone may open it. What a self-test credential can do is bounded in the core (own relays
//! only, lifetime, bandwidth, per-source and total allocations); here requests are limited per
//! source, connections per source and in total, request heads and bodies in size and time.

mod api;
mod limiter;
mod report;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use crate::auth::SelftestKey;
use crate::config::{BuildError, Config};
use crate::core::Transport;
use crate::io::accept::AcceptBackoff;
use crate::io::clock;
use crate::io::conn_slots::{ConnectionSlots, SlotCaps};

use limiter::Limiter;

/// The page, built into the binary.
const PAGE: &str = include_str!("page.html");

/// Time to send a request head, and to finish a TLS handshake.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Connections at once, and from one source.
const MAX_CONNECTIONS: usize = 256;
const MAX_CONNECTIONS_PER_IP: u32 = 8;

/// What the page's listener serves: built from the configuration and the bound listeners.
pub struct SelftestSite {
    address: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    key: SelftestKey,
    credential_ttl: Duration,
    /// The configured host for the URLs; `None`: the request's Host, else `fallback_host`.
    host: Option<String>,
    fallback_host: String,
    /// First bound listener per transport, UDP first.
    listeners: Vec<(Transport, u16)>,
    test_duration: Duration,
    test_bytes: u64,
    requests_per_minute: u32,
}

impl SelftestSite {
    /// The site of `config`'s `[selftest]` (`None` when the section is absent), for a server
    /// bound at `bound`, minting with `key` (the key the credential store checks).
    pub fn from_config(
        config: &Config,
        bound: &[(Transport, SocketAddr)],
        key: SelftestKey,
    ) -> Result<Option<Self>, BuildError> {
        let Some(t) = &config.selftest else {
            return Ok(None);
        };
        let tls = config.selftest_tls()?;
        let tls = tls.map(|c| {
            let mut c = Arc::unwrap_or_clone(c);
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(c)
        });
        let host = t
            .public_host
            .clone()
            .or_else(|| config.admin.as_ref().and_then(|a| a.public_host.clone()));
        let fallback = config
            .relay
            .external_address
            .or(config.relay.address)
            .or_else(|| {
                bound
                    .first()
                    .map(|(_, a)| a.ip())
                    .filter(|ip| !ip.is_unspecified())
            })
            .map_or_else(|| "localhost".to_owned(), host_of);
        let mut listeners = Vec::new();
        for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            if let Some((_, addr)) = bound.iter().find(|(tr, _)| *tr == transport) {
                listeners.push((transport, addr.port()));
            }
        }
        Ok(Some(Self {
            address: t.address,
            tls,
            key,
            credential_ttl: t.credential_ttl,
            host,
            fallback_host: fallback,
            listeners,
            test_duration: t.test_duration,
            test_bytes: t.test_bytes,
            requests_per_minute: t.requests_per_minute_per_ip,
        }))
    }
}

/// A running self-test listener; dropping it stops it.
pub struct SelftestHandle {
    address: SocketAddr,
    https: bool,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl SelftestHandle {
    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The page's URL (with the bound address as host).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}/", self.address)
    }
}

impl Drop for SelftestHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    site: SelftestSite,
    limiter: Mutex<Limiter>,
}

/// Binds the site's address and serves the page on a thread of its own.
pub fn spawn_selftest(site: SelftestSite) -> std::io::Result<SelftestHandle> {
    let listener = std::net::TcpListener::bind(site.address)?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let https = site.tls.is_some();
    let (stop, mut stopped) = watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let state = Arc::new(State {
        limiter: Mutex::new(Limiter::new(site.requests_per_minute)),
        site,
    });
    let thread = std::thread::Builder::new()
        .name("turnstone-selftest".into())
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
                                backoff.after_success("selftest");
                                serve(stream, peer, &state, &slots);
                            }
                            Err(e) => backoff.after_error(&e, "selftest").await,
                        },
                        _ = stopped.changed() => return,
                    }
                }
            });
        })?;
    Ok(SelftestHandle {
        address,
        https,
        stop,
        thread: Some(thread),
    })
}

/// Serves one connection on its own task, within the connection caps.
fn serve(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: &Arc<State>,
    slots: &Arc<ConnectionSlots>,
) {
    let caps = SlotCaps {
        total: MAX_CONNECTIONS,
        per_source: MAX_CONNECTIONS_PER_IP,
        ipv6_prefix: 64,
    };
    let Ok(slot) = slots.acquire(peer.ip(), caps) else {
        return; // dropping the stream closes it
    };
    let state = Arc::clone(state);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CONNECTION_LIFETIME, async {
            match state.site.tls.clone() {
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await
                    {
                        serve_http(TokioIo::new(tls), peer, state).await;
                    }
                }
                None => serve_http(TokioIo::new(stream), peer, state).await,
            }
        })
        .await;
        drop(slot);
    });
}

async fn serve_http<I>(io: I, peer: SocketAddr, state: Arc<State>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| route(Arc::clone(&state), peer.ip(), req));
    let mut builder = http1::Builder::new();
    // Without a timer hyper has no header-read timeout at all (slowloris).
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(16 * 1024)
        .max_headers(64);
    let _ = builder.serve_connection(io, service).await;
}

type Answer = (StatusCode, &'static str, String);

async fn route(
    state: Arc<State>,
    client: IpAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let now = clock::now();
    let allowed = state
        .limiter
        .lock()
        .map(|mut l| l.allow(client, now.mono))
        .unwrap_or(false);
    let (status, content_type, body): Answer = if !allowed {
        (
            StatusCode::TOO_MANY_REQUESTS,
            TEXT,
            "too many requests from your address; try again in a minute\n".into(),
        )
    } else {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => (StatusCode::OK, HTML, PAGE.to_owned()),
            (&Method::POST, "/credential") if has_body(&req) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT,
                "no body expected\n".into(),
            ),
            (&Method::POST, "/credential") => api::credential(&state.site, &req, now.unix_secs),
            (&Method::POST, "/report") => api::report(&state, client, req).await,
            (_, "/" | "/credential" | "/report") => (
                StatusCode::METHOD_NOT_ALLOWED,
                TEXT,
                "method not allowed\n".into(),
            ),
            _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
        }
    };
    Ok(respond(status, content_type, body))
}

const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// The page needs nothing from elsewhere: its own inline script and style, fetches to itself.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ] {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// Whether the request announces a body (RFC 9112 §6.3).
fn has_body(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    }
}
