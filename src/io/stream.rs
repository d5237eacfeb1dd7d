//! Accepting TCP and TLS clients, on the worker's stream runtime: the per-source and
//! server-wide connection caps (shared by the workers), the TLS handshake within the
//! handshake timeout, then the handoff to the data-plane thread (`streams`), which frames
//! STUN and ChannelData on the stream (RFC 8656 §12.5) and keeps the other deadlines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};

use crate::core::{ClientAddr, FiveTuple, Transport};

use super::accept::AcceptBackoff;
use super::clock;
use super::conn_slots::{Slot, SlotCaps};
use super::spec::TlsSlot;
use super::streams::Adopted;
use super::tls_handoff;
use super::worker::Worker;

/// Accepts connections on one listener until the task is dropped.
pub(crate) async fn accept_loop(
    worker: Arc<Worker>,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<TlsSlot>,
) {
    let name = format!("{} {local}", if tls.is_some() { "tls" } else { "tcp" });
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                backoff.after_error(&e, &name).await;
                continue;
            }
        };
        backoff.after_success(&name);
        let accepted = clock::now().mono;
        let limits = &worker.limits;
        let caps = SlotCaps {
            total: limits.max_connections,
            per_source: limits.max_connections_per_ip,
            ipv6_prefix: limits.ipv6_prefix_length,
        };
        let slot = match worker.shared.streams.acquire(client.ip(), caps) {
            Ok(slot) => slot,
            Err(why) => {
                // Debug only: a flood of refused connections must not flood the log too.
                tracing::debug!(target: "turnstone::io", %client, "connection refused: {why}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Read the current certificate per connection, so SIGHUP can swap it.
        let tls = tls
            .as_ref()
            .and_then(|slot| slot.read().ok().map(|c| Arc::clone(&c)));
        if tls.is_none() {
            serve_connection(&worker, stream, client, local, None, accepted, slot).await;
            continue;
        }
        let worker = Arc::clone(&worker);
        tokio::spawn(async move {
            serve_connection(&worker, stream, client, local, tls, accepted, slot).await;
        });
    }
}

/// Hands an accepted connection to the data-plane thread: at once over TCP, after the
/// handshake over TLS.
async fn serve_connection(
    worker: &Arc<Worker>,
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    accepted: Instant,
    slot: Slot,
) {
    let (socket, transport, records, early) = match tls {
        None => match stream.into_std() {
            Ok(socket) => (socket, Transport::Tcp, None, Vec::new()),
            Err(_) => return,
        },
        Some(config) => {
            match tls_handoff::handshake(config, stream, worker.limits.handshake_timeout).await {
                Ok(established) => (
                    established.socket,
                    Transport::Tls,
                    Some((established.records, established.input)),
                    established.early,
                ),
                Err(e) => {
                    worker.shared.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "turnstone::io", %client, error = %e, "TLS client refused");
                    return;
                }
            }
        }
    };
    worker.adopt(Adopted {
        socket,
        ft: FiveTuple {
            client: ClientAddr(client),
            server: local,
            transport,
        },
        tls: records,
        early,
        slot,
        accepted,
    });
}
