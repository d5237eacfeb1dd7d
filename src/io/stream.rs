//! TCP and TLS client connections: one task each, STUN and ChannelData framed on the stream
//! (RFC 8656 §12.5), a bounded queue for data from peers, handshake and idle timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::core::{FiveTuple, Handled, Transport};
use crate::proto::{FramingError, MAX_FRAME, next_frame};

use super::admission::is_stun_request;
use super::clock;
use super::runtime::TlsSlot;
use super::worker::Worker;

/// Messages queued toward one client before further ones are dropped.
const QUEUE: usize = 256;

/// Accepts connections on one listener until the task is dropped.
pub(crate) async fn accept_loop(
    worker: Arc<Worker>,
    listener: TcpListener,
    local: SocketAddr,
    tls: Option<TlsSlot>,
) {
    loop {
        let Ok((stream, client)) = listener.accept().await else {
            continue;
        };
        let open = &worker.shared.open_streams;
        if open.fetch_add(1, Ordering::Relaxed) >= worker.limits.max_connections {
            open.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(target: "turnstone::io", %client, "connection refused: connection limit reached");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let worker = Arc::clone(&worker);
        // Read the current certificate per connection, so SIGHUP can swap it.
        let tls = tls
            .as_ref()
            .and_then(|slot| slot.read().ok().map(|c| Arc::clone(&c)));
        tokio::spawn(async move {
            serve_connection(&worker, stream, client, local, tls).await;
            worker.shared.open_streams.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

async fn serve_connection(
    worker: &Arc<Worker>,
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    match tls {
        None => {
            let ft = FiveTuple {
                client,
                server: local,
                transport: Transport::Tcp,
            };
            run(worker, stream, ft).await;
        }
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(worker.limits.handshake_timeout, handshake).await {
                Ok(Ok(tls_stream)) => {
                    let ft = FiveTuple {
                        client,
                        server: local,
                        transport: Transport::Tls,
                    };
                    run(worker, tls_stream, ft).await;
                }
                Ok(Err(e)) => {
                    worker.shared.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "turnstone::io", %client, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    worker.shared.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(target: "turnstone::io", %client, "TLS handshake timed out")
                }
            }
        }
    }
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(worker: &Arc<Worker>, stream: S, ft: FiveTuple) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(QUEUE);
    worker.lock().streams.insert(ft, tx);
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut inbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = vec![0u8; 2048];
    // The first message must come within the handshake timeout; after that, the idle timeout.
    let mut deadline = worker.limits.handshake_timeout;
    // A message, once started, must be complete within the handshake timeout too: otherwise a
    // client could hold up to a 64 KiB partial frame per connection by trickling bytes.
    let mut partial_since: Option<tokio::time::Instant> = None;
    'conn: loop {
        tokio::select! {
            read = reader.read(&mut chunk) => {
                let n = match read {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(n) => n,
                };
                inbuf.extend_from_slice(&chunk[..n]);
                let mut consumed = 0;
                loop {
                    let frame = match next_frame(&inbuf[consumed..]) {
                        Ok(Some(frame)) => frame,
                        Ok(None) => break,
                        Err(FramingError::UnknownKind | FramingError::BadStunHeader) => {
                            tracing::debug!(target: "turnstone::io", client = %ft.client, "unframeable stream data; closing");
                            break 'conn;
                        }
                    };
                    let pkt = &inbuf[consumed..consumed + frame.len];
                    consumed += frame.len;
                    deadline = worker.limits.idle_timeout;
                    if is_stun_request(pkt) && !worker.shared.admission.allow(ft.client.ip()) {
                        continue;
                    }
                    let handled = {
                        let mut core = worker.lock();
                        let core = &mut *core;
                        let handled = core.server.handle_client(clock::now(), ft, pkt, &mut out, &mut core.relays);
                        if let Handled::Forward { relay, peer, payload } = &handled {
                            core.relays.send(*relay, &pkt[payload.clone()], *peer);
                        }
                        core.drain_commands();
                        handled
                    };
                    if let Handled::Reply(len) = handled
                        && writer.write_all(&out[..len]).await.is_err()
                    {
                        break 'conn;
                    }
                }
                inbuf.drain(..consumed);
                if inbuf.len() > MAX_FRAME {
                    break 'conn;
                }
                partial_since = match (inbuf.is_empty(), partial_since) {
                    (true, _) => None,
                    (false, None) => Some(tokio::time::Instant::now()),
                    (false, since) => since,
                };
            }
            Some(msg) = rx.recv() => {
                if writer.write_all(&msg).await.is_err() {
                    break 'conn;
                }
            }
            () = tokio::time::sleep_until(match partial_since {
                Some(since) => since + worker.limits.handshake_timeout,
                None => tokio::time::Instant::now() + deadline,
            }) => {
                let why = if partial_since.is_some() { "message not completed in time" } else { "idle" };
                tracing::debug!(target: "turnstone::io", client = %ft.client, reason = why, "connection closed");
                break 'conn;
            }
        }
    }
    let mut core = worker.lock();
    let core = &mut *core;
    core.streams.remove(&ft);
    core.server
        .handle_connection_closed(clock::now(), ft, &mut core.relays);
    core.drain_commands();
}
