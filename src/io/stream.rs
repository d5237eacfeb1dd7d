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
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::core::{ClientAddr, FiveTuple, Transport};
use crate::proto::MAX_FRAME;

use super::accept::AcceptBackoff;
use super::clock;
use super::conn_slots::SlotCaps;
use super::spec::TlsSlot;
use super::stream_buf::InputBuffer;
use super::stream_frames::handle_run;
use super::stream_out::{StreamOut, write_buffer};
use super::stream_timers::Deadlines;
use super::tcp_tasks;
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
                client: ClientAddr(client),
                server: local,
                transport: Transport::Tcp,
            };
            // A duplicate of the socket lets peer data go straight to the kernel from the
            // data-plane thread (`stream_out`); without one, everything goes through the task.
            let direct = stream
                .as_fd()
                .try_clone_to_owned()
                .ok()
                .map(std::net::TcpStream::from);
            run(worker, stream, ft, accepted, direct).await;
        }
        Some(config) => {
            let handshake = TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(worker.limits.handshake_timeout, handshake).await {
                Ok(Ok(tls_stream)) => {
                    let ft = FiveTuple {
                        client: ClientAddr(client),
                        server: local,
                        transport: Transport::Tls,
                    };
                    run(worker, tls_stream, ft, accepted, None).await;
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
    direct: Option<std::net::TcpStream>,
) {
    let out = Arc::new(StreamOut::new(direct));
    worker.lock().streams.insert(ft, Arc::clone(&out));
    // Declared before the stream's halves, so dropped after them, also when the task
    // unwinds: a panicking task must leave neither its socket's duplicate nor its allocation.
    let _registered = Registered {
        worker,
        ft,
        out: Arc::clone(&out),
    };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input = InputBuffer::new();
    // Room for one reply, the replies of one run of frames, and what peers sent: allocated
    // once per connection and reused.
    let mut scratch = vec![0u8; 2048];
    let mut replies = Vec::with_capacity(2048);
    let mut writes = Writes {
        out: &out,
        pending: write_buffer(),
        within: worker.limits.handshake_timeout,
    };
    let mut timers = Deadlines::new(&worker.limits, accepted, Instant::now());
    // RFC 6062 §5.4: after a successful ConnectionBind the connection carries raw bytes to
    // and from a peer: the peer connection, and what followed the request in the input.
    let mut spliced = None;
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
                    let mut run = handle_run(worker, ft, &input.data()[consumed..], &mut scratch, &mut replies);
                    let start = consumed;
                    consumed += run.consumed;
                    if !run.spawns.is_empty() {
                        tcp_tasks::spawn(worker, std::mem::take(&mut run.spawns));
                    }
                    if run.framed {
                        timers.first_frame = None;
                    }
                    if run.own_traffic {
                        timers.allocation_traffic(Instant::now());
                    }
                    if !replies.is_empty() {
                        let written = writes.write(&mut writer, &replies, &mut timers).await;
                        replies.clear();
                        if !written {
                            break 'conn;
                        }
                    }
                    if run.unframeable {
                        tracing::debug!(target: "turnstone::io", client = %ft.client, "unframeable stream data; closing");
                        break 'conn;
                    }
                    if !run.more {
                        break;
                    }
                    if let Some(range) = run.bind {
                        let frame = &input.data()[start + range.start..start + range.end];
                        let bound = tcp_tasks::connection_bind(worker, ft, frame);
                        if !writes.write(&mut writer, &bound.reply, &mut timers).await {
                            break 'conn;
                        }
                        if let Some(splice) = bound.splice {
                            spliced = Some((splice, input.data()[consumed..].to_vec()));
                            break 'conn;
                        }
                        continue;
                    }
                    if run.opens.is_empty() {
                        continue;
                    }
                    // An Allocate: its relay is bound now, without the lock (DESIGN.md §3),
                    // and the answer is written here, in order with the other replies.
                    let (mine, udp): (Vec<_>, Vec<_>) = worker
                        .open_relays(clock::now(), run.opens, Some(ft))
                        .into_iter()
                        .partition(|(to, _)| *to == ft);
                    worker.send_udp_answers(udp);
                    // A TCP allocation's listener starts accepting (RFC 6062 §5.3).
                    let spawns = worker.lock().tcp.take_spawns();
                    tcp_tasks::spawn(worker, spawns);
                    for (_, answer) in mine {
                        if !writes.write(&mut writer, &answer, &mut timers).await {
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
                if !writes.write(&mut writer, &[], &mut timers).await {
                    break 'conn;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                // Peer data written straight to the socket is allocation traffic the task
                // did not see: it may have moved the idle deadline.
                if let Some(at) = out.last_direct() {
                    timers.traffic_at(Instant::from_std(at));
                }
                if timers.next().0 > Instant::now() {
                    continue;
                }
                tracing::debug!(target: "turnstone::io", client = %ft.client, reason = why, "connection closed");
                break 'conn;
            }
        }
    }
    if let Some(((owner, ready), early)) = spliced {
        // Raw bytes from here: the framing buffers go, only the splice's own stay.
        drop((input, scratch, replies, writes));
        tcp_tasks::splice(owner, ready, &mut reader, &mut writer, &early).await;
    }
}

/// The connection's registration with its worker; dropping it (at the end of the task, or
/// when it unwinds) ends the allocation and closes the socket's duplicate.
struct Registered<'a> {
    worker: &'a Worker,
    ft: FiveTuple,
    out: Arc<StreamOut>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.out.close();
        let dropped = self.out.dropped();
        if dropped > 0 {
            tracing::debug!(target: "turnstone::io", client = %self.ft.client, dropped, "peer data dropped: the client read too slowly");
        }
        let mut core = self.worker.lock();
        let core = &mut *core;
        core.streams.remove(&self.ft);
        core.server.handle_connection_closed(clock::now(), self.ft);
        core.drain_commands();
    }
}

/// The task's writes: what peers left pending goes first, and nothing is written straight to
/// the socket by another thread meanwhile (`StreamOut::begin_write`).
struct Writes<'a> {
    out: &'a StreamOut,
    /// Swapped with the connection's pending buffer, so no write allocates.
    pending: Vec<u8>,
    /// Bound of each write (the handshake timeout).
    within: Duration,
}

impl Writes<'_> {
    /// Writes pending peer data, then `bytes`; false when a write fails or stalls.
    async fn write<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        bytes: &[u8],
        timers: &mut Deadlines,
    ) -> bool {
        self.out.begin_write(&mut self.pending);
        if !self.pending.is_empty() {
            // Only data from the allocation's permitted peers and answers to this
            // connection's requests are pushed there.
            timers.allocation_traffic(Instant::now());
        }
        let written = (self.pending.is_empty()
            || write_within(writer, &self.pending, self.within).await)
            && (bytes.is_empty() || write_within(writer, bytes, self.within).await)
            // TLS: `write_all` returns once rustls has taken the plaintext, and records
            // the socket could not take yet would wait for the next write.
            && matches!(
                tokio::time::timeout(self.within, writer.flush()).await,
                Ok(Ok(()))
            );
        if !written {
            // A failed or stalled write may have left half a message on the wire: nothing
            // may follow it from the data-plane thread before the connection closes.
            self.out.close();
        }
        self.out.end_write();
        written
    }
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
