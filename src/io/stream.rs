//! TCP and TLS client connections: one task each, STUN and ChannelData framed on the stream
//! (RFC 8656 §12.5), a bounded buffer for data from peers, handshake and idle timeouts. The
//! frames of one read are handled under one acquisition of the worker's lock
//! (`stream_frames`); peer data arrives in place in the connection's buffer (`stream_out`)
//! and leaves with one write per batch.
//!
//! Connections cannot be hoarded: a server-wide and a per-source cap (shared by the
//! workers), a deadline to get an allocation, an idle timer that only the connection's
//! allocation traffic resets, and buffers that shrink back after a large frame.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::core::{FiveTuple, Transport};
use crate::proto::MAX_FRAME;

use super::accept::AcceptBackoff;
use super::clock;
use super::conn_slots::SlotCaps;
use super::spec::{MAX_STREAM_TIMEOUT, StreamLimits, TlsSlot};
use super::stream_buf::InputBuffer;
use super::stream_frames::handle_run;
use super::stream_out::{StreamOut, write_buffer};
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
        let accepted = Instant::now();
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
        let worker = Arc::clone(&worker);
        // Read the current certificate per connection, so SIGHUP can swap it.
        let tls = tls
            .as_ref()
            .and_then(|slot| slot.read().ok().map(|c| Arc::clone(&c)));
        tokio::spawn(async move {
            serve_connection(&worker, stream, client, local, tls, accepted).await;
            drop(slot);
        });
    }
}

async fn serve_connection(
    worker: &Arc<Worker>,
    stream: TcpStream,
    client: SocketAddr,
    local: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    accepted: Instant,
) {
    match tls {
        None => {
            let ft = FiveTuple {
                client,
                server: local,
                transport: Transport::Tcp,
            };
            run(worker, stream, ft, accepted).await;
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
                    run(worker, tls_stream, ft, accepted).await;
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

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    worker: &Arc<Worker>,
    stream: S,
    ft: FiveTuple,
    accepted: Instant,
) {
    let out = Arc::new(StreamOut::default());
    worker.lock().streams.insert(ft, Arc::clone(&out));
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input = InputBuffer::new();
    // Room for one reply, the replies of one run of frames, and what peers sent: allocated
    // once per connection and reused.
    let mut scratch = vec![0u8; 2048];
    let mut replies = Vec::with_capacity(2048);
    let mut to_client = write_buffer();
    let mut timers = Deadlines::new(&worker.limits, accepted, Instant::now());
    let write_timeout = worker.limits.handshake_timeout;
    'conn: loop {
        let (deadline, why) = timers.next();
        tokio::select! {
            read = reader.read_buf(input.for_read()) => {
                match read {
                    Ok(0) | Err(_) => break 'conn,
                    Ok(_) => {}
                }
                let mut consumed = 0;
                loop {
                    let run = handle_run(worker, ft, &input.data()[consumed..], &mut scratch, &mut replies);
                    consumed += run.consumed;
                    if run.framed {
                        timers.first_frame = None;
                    }
                    if run.own_traffic {
                        timers.allocation_traffic(Instant::now());
                    }
                    if !replies.is_empty() {
                        let written = write_within(&mut writer, &replies, write_timeout).await;
                        replies.clear();
                        if !written {
                            break 'conn;
                        }
                    }
                    if run.unframeable {
                        tracing::debug!(target: "turnstone::io", client = %ft.client, "unframeable stream data; closing");
                        break 'conn;
                    }
                    if run.opens.is_empty() {
                        break;
                    }
                    // An Allocate: its relay is bound now, without the lock (DESIGN.md §3),
                    // and the answer is written here, in order with the other replies.
                    let (mine, udp): (Vec<_>, Vec<_>) = worker
                        .open_relays(clock::now(), run.opens, Some(ft))
                        .into_iter()
                        .partition(|(to, _)| *to == ft);
                    worker.send_udp_answers(udp);
                    for (_, answer) in mine {
                        if !write_within(&mut writer, &answer, write_timeout).await {
                            break 'conn;
                        }
                        // Allocation traffic only when the Allocate succeeded, as before.
                        if worker.lock().server.has_allocation(&ft) {
                            timers.allocation_traffic(Instant::now());
                        }
                    }
                }
                input.consume(consumed);
                if input.len() > MAX_FRAME {
                    break 'conn;
                }
                timers.partial_frame(!input.is_empty(), consumed > 0, Instant::now());
            }
            () = out.ready() => {
                out.take(&mut to_client);
                if to_client.is_empty() {
                    continue;
                }
                // Only data from the allocation's permitted peers and answers to this
                // connection's requests are pushed here.
                timers.allocation_traffic(Instant::now());
                if !write_within(&mut writer, &to_client, write_timeout).await {
                    break 'conn;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!(target: "turnstone::io", client = %ft.client, reason = why, "connection closed");
                break 'conn;
            }
        }
    }
    let dropped = out.dropped();
    if dropped > 0 {
        tracing::debug!(target: "turnstone::io", client = %ft.client, dropped, "peer data dropped: the client read too slowly");
    }
    let mut core = worker.lock();
    let core = &mut *core;
    core.streams.remove(&ft);
    core.server.handle_connection_closed(clock::now(), ft);
    core.drain_commands();
}

/// Writes `bytes`; false when the write fails or cannot finish within `within`. A client
/// that stops reading fills the socket's send buffer: without the bound the task would wait
/// in the write forever, past every deadline, holding its slot and its allocation.
async fn write_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    within: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(within, writer.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

/// `now + d`, with `d` capped at [`MAX_STREAM_TIMEOUT`]: configuration refuses longer
/// timeouts, and one given through the library (say `Duration::MAX`) must not overflow
/// `Instant` and panic the connection's task.
fn after(now: Instant, d: Duration) -> Instant {
    now + d.min(MAX_STREAM_TIMEOUT)
}

/// When a connection is closed, whichever comes first.
struct Deadlines {
    /// The first complete message (the handshake timeout after the connection is set up).
    first_frame: Option<Instant>,
    /// An allocation, counted from the TCP accept; cleared by the allocation's first traffic.
    auth: Option<Instant>,
    /// The idle timeout after the last traffic of the connection's allocation.
    idle: Instant,
    /// The rest of a started message: otherwise a client could pin up to a 64 KiB partial
    /// frame by trickling bytes (handshake timeout). Counted from the last completed frame,
    /// not from when the buffer was last empty: a fast client whose reads keep ending
    /// mid-frame is never idle, and each completed frame proves it is not trickling.
    partial: Option<Instant>,
    idle_timeout: Duration,
    partial_timeout: Duration,
}

impl Deadlines {
    fn new(limits: &StreamLimits, accepted: Instant, now: Instant) -> Self {
        Self {
            first_frame: Some(after(now, limits.handshake_timeout)),
            auth: Some(after(accepted, limits.auth_timeout)),
            idle: after(now, limits.idle_timeout),
            partial: None,
            idle_timeout: limits.idle_timeout,
            partial_timeout: limits.handshake_timeout,
        }
    }

    /// The earliest deadline and why it closes the connection.
    fn next(&self) -> (Instant, &'static str) {
        [
            (self.first_frame, "no message in time"),
            (self.auth, "no allocation in time"),
            (Some(self.idle), "idle"),
            (self.partial, "message not completed in time"),
        ]
        .into_iter()
        .filter_map(|(at, why)| at.map(|at| (at, why)))
        .min_by_key(|(at, _)| *at)
        .unwrap_or((self.idle, "idle"))
    }

    fn allocation_traffic(&mut self, now: Instant) {
        self.auth = None;
        self.idle = after(now, self.idle_timeout);
    }

    /// After a read: `pending` when a started message remains, `completed` when the read
    /// completed at least one frame.
    fn partial_frame(&mut self, pending: bool, completed: bool, now: Instant) {
        self.partial = match (pending, self.partial) {
            (false, _) => None,
            (true, Some(since)) if !completed => Some(since),
            (true, _) => Some(after(now, self.partial_timeout)),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout: Duration) -> StreamLimits {
        StreamLimits {
            handshake_timeout: timeout,
            idle_timeout: timeout,
            max_connections: 1,
            max_connections_per_ip: 1,
            auth_timeout: timeout,
            ipv6_prefix_length: 64,
        }
    }

    #[test]
    fn absurd_timeouts_are_capped_instead_of_overflowing_instant() {
        let now = Instant::now();
        let mut timers = Deadlines::new(&limits(Duration::MAX), now, now);
        timers.allocation_traffic(now);
        timers.partial_frame(true, false, now);
        let (at, _) = timers.next();
        assert_eq!(at, now + MAX_STREAM_TIMEOUT);
    }

    #[test]
    fn a_completed_frame_restarts_the_partial_message_deadline() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut timers = Deadlines::new(&limits(second), t0, t0);
        timers.partial_frame(true, true, t0);
        assert_eq!(timers.partial, Some(t0 + second));
        // Bytes arrive but no frame completes: the deadline stays.
        timers.partial_frame(true, false, t0 + second / 2);
        assert_eq!(timers.partial, Some(t0 + second));
        // A frame completes and the next one is already started: counted from now.
        let t1 = t0 + second * 3 / 4;
        timers.partial_frame(true, true, t1);
        assert_eq!(timers.partial, Some(t1 + second));
        timers.partial_frame(false, true, t1);
        assert_eq!(timers.partial, None);
    }
}
