//! The tasks of RFC 6062 TCP relays, on a worker's stream runtime: accepting peers on a
//! relayed transport address (§5.3), connecting to a peer for a Connect (§5.2), a
//! ConnectionBind handed to the worker that owns its connection (§5.4), and the splice that
//! then copies raw bytes between the client data connection and the peer (§5.5).
//!
//! The splice keeps one bounded buffer per direction and never reads a side while the other
//! has not taken the last read (TCP flow control then slows the sender down): memory per
//! spliced pair is two buffers of [`SPLICE_BUFFER`] plus, over TLS, rustls's own.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::core::{
    ConnectError, ConnectionId, Direction, FiveTuple, PeerAddr, RelayId, TcpRelayed,
};
use crate::proto::{Message, attr};

use super::accept::AcceptBackoff;
use super::clock;
use super::conn_slots::SlotCaps;
use super::streams::Parts;
use super::tcp_relay::{PeerSocket, Ready, Spawn};
use super::tls_stream::RecordStream;
use super::worker::Worker;

/// Bytes read from one side of a spliced pair before they are written to the other.
pub(crate) const SPLICE_BUFFER: usize = 16 * 1024;

/// Starts the tasks `spawns` asks for on the current runtime (the worker's stream runtime).
pub(crate) fn spawn(worker: &Arc<Worker>, spawns: Vec<Spawn>) {
    for spawn in spawns {
        match spawn {
            Spawn::Accept {
                relay,
                listener,
                lease,
            } => {
                let name = format!("tcp relay {}", lease.addr);
                let task = worker.runtime.spawn(accept_peers(
                    Arc::clone(worker),
                    relay,
                    listener,
                    name,
                    lease,
                ));
                worker.lock().tcp.accepting(relay, task.abort_handle());
            }
            Spawn::Connect {
                connection,
                local,
                peer,
            } => {
                let task =
                    worker
                        .runtime
                        .spawn(connect_peer(Arc::clone(worker), connection, local, peer));
                worker
                    .lock()
                    .tcp
                    .connect_started(connection, task.abort_handle());
            }
        }
    }
}

/// The slot caps peer connections are held to: the same per-source and server-wide caps as
/// client connections, keyed by the peer's address.
fn caps(worker: &Worker) -> SlotCaps {
    let limits = &worker.limits;
    SlotCaps {
        total: limits.max_connections,
        per_source: limits.max_connections_per_ip,
        ipv6_prefix: limits.ipv6_prefix_length,
    }
}

/// Accepts peers on a TCP relay until aborted (`Command::CloseRelay`); the lease frees the
/// port when the task ends.
async fn accept_peers(
    worker: Arc<Worker>,
    relay: RelayId,
    listener: std::net::TcpListener,
    name: String,
    _lease: super::tcp_relay::PortLease,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        tracing::warn!(target: "turnstone::io", listener = name, "cannot watch a TCP relay listener");
        return;
    };
    let mut backoff = AcceptBackoff::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                backoff.after_error(&e, &name).await;
                continue;
            }
        };
        backoff.after_success(&name);
        let slot = match worker.shared.streams.acquire(peer.ip(), caps(&worker)) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(target: "turnstone::io", %peer, "peer connection refused: {why}");
                continue;
            }
        };
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        peer_arrived(&worker, relay, PeerAddr(peer), PeerSocket { stream, slot });
    }
}

/// Reports a peer connection to the core (RFC 6062 §5.3): kept and announced to the client
/// with a ConnectionAttempt, or closed at once (no permission, no room).
fn peer_arrived(worker: &Worker, relay: RelayId, peer: PeerAddr, socket: PeerSocket) {
    let mut out = [0u8; 128];
    let mut core = worker.lock();
    let core = &mut *core;
    match core
        .server
        .peer_connection_arrived(clock::now(), relay, peer, &mut out)
    {
        Ok(arrived) => {
            core.tcp.wait(arrived.connection, socket);
            if let Some(bytes) = out.get(..arrived.indication.len) {
                core.answer_stream(&arrived.indication.to, bytes);
                core.flush_streams();
            }
        }
        Err(reason) => {
            tracing::debug!(target: "turnstone::io", %peer, reason = reason.name(), "peer connection refused");
            drop(socket);
        }
    }
    core.drain_commands();
}

/// Connects from `local` (the relayed transport address) to `peer` within the connect
/// timeout (RFC 6062 §5.2), then confirms the result to the core, which answers the Connect.
async fn connect_peer(
    worker: Arc<Worker>,
    connection: ConnectionId,
    local: SocketAddr,
    peer: PeerAddr,
) {
    let result = match worker.shared.streams.acquire(peer.0.ip(), caps(&worker)) {
        Err(why) => {
            tracing::debug!(target: "turnstone::io", %peer, "connect refused: {why}");
            Err(ConnectError::Failed)
        }
        Ok(slot) => {
            match tokio::time::timeout(worker.limits.connect_timeout, dial(local, peer.0)).await {
                Ok(Ok(stream)) => Ok(PeerSocket { stream, slot }),
                Ok(Err(e)) => {
                    tracing::debug!(target: "turnstone::io", %peer, error = %e, "connect to peer failed");
                    Err(ConnectError::Failed)
                }
                Err(_) => Err(ConnectError::Timeout),
            }
        }
    };
    let mut out = [0u8; 512];
    let mut core = worker.lock();
    let core = &mut *core;
    if !core.tcp.connect_finished(connection) {
        // Closed meanwhile (its allocation ended): the socket just goes.
        return;
    }
    let confirmed = match result {
        Ok(socket) => {
            core.tcp.wait(connection, socket);
            Ok(())
        }
        Err(e) => Err(e),
    };
    if let Some(answer) = core
        .server
        .peer_connected(clock::now(), connection, confirmed, &mut out)
        && let Some(bytes) = out.get(..answer.len)
    {
        core.answer_stream(&answer.to, bytes);
        core.flush_streams();
    }
    core.drain_commands();
}

/// A TCP connection from the relay's address to `peer`, as a plain socket for later.
async fn dial(local: SocketAddr, peer: SocketAddr) -> io::Result<std::net::TcpStream> {
    let socket = crate::sys::socket::tcp_relay_connect_socket(local)?;
    let socket = tokio::net::TcpSocket::from_std_stream(socket);
    let stream = socket.connect(peer).await?;
    stream.into_std()
}

/// What a ConnectionBind got: the answer to write, and on success the peer connection to
/// splice the data connection with, and the worker that owns it.
pub(crate) struct Bound {
    pub reply: Vec<u8>,
    pub splice: Option<(Arc<Worker>, Ready)>,
}

/// Hands a ConnectionBind (RFC 6062 §5.4) from the connection `ft` to the worker whose core
/// made the CONNECTION-ID it names (any worker may have accepted the connection), and takes
/// the peer connection when the core accepted it.
pub(crate) fn connection_bind(worker: &Arc<Worker>, ft: FiveTuple, frame: &[u8]) -> Bound {
    let owner = owner_of(worker, frame);
    let mut scratch = [0u8; 2048];
    let mut core = owner.lock();
    let core = &mut *core;
    let reply = match core
        .server
        .handle_client(clock::now(), ft, frame, &mut scratch)
    {
        crate::core::Handled::Reply(len) => scratch.get(..len).map(<[u8]>::to_vec),
        _ => None,
    };
    core.drain_commands();
    let ready = core.tcp.take_ready(&ft);
    core.flush_streams();
    Bound {
        reply: reply.unwrap_or_default(),
        splice: ready.map(|ready| (Arc::clone(&owner), ready)),
    }
}

/// The worker owning the connection a ConnectionBind names; this one when it names none
/// (its core then answers the 400).
fn owner_of(worker: &Arc<Worker>, frame: &[u8]) -> Arc<Worker> {
    let id = Message::parse(frame)
        .ok()
        .and_then(|m| m.u32_attr(attr::CONNECTION_ID))
        .and_then(Result::ok)
        .map(ConnectionId);
    let count = u32::try_from(worker.set.count()).unwrap_or(1);
    id.and_then(|id| worker.set.get(id.worker(count) as usize))
        .unwrap_or_else(|| Arc::clone(worker))
}

/// Copies raw bytes both ways between a client data connection and its peer connection
/// until both sides are done, one fails, or the core closes the connection (RFC 6062 §5.5);
/// `early` is what the client sent after its ConnectionBind in the same read.
pub(crate) async fn splice<R, W>(
    owner: Arc<Worker>,
    ready: Ready,
    client_in: &mut R,
    client_out: &mut W,
    early: &[u8],
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Ready {
        connection,
        socket,
        stop,
        control,
    } = ready;
    let PeerSocket { stream, slot } = socket;
    if let Ok(peer) = TcpStream::from_std(stream) {
        let _ = peer.set_nodelay(true);
        let (mut peer_in, mut peer_out) = peer.into_split();
        let side = Side {
            owner: &owner,
            connection,
            control,
        };
        let to_peer = pump(side, Direction::ToPeer, client_in, &mut peer_out, early);
        let to_client = pump(side, Direction::ToClient, &mut peer_in, client_out, &[]);
        tokio::select! {
            () = stop.notified() => {}
            _ = async { tokio::try_join!(to_peer, to_client) } => {}
        }
    }
    drop(slot);
    let mut core = owner.lock();
    core.tcp.unsplice(connection);
    core.server
        .handle_peer_connection_closed(clock::now(), connection);
    core.drain_commands();
}

/// Starts the splice of a data connection the data-plane thread gave up after its
/// ConnectionBind (RFC 6062 §5.5), on `worker`'s runtime (the connection's own worker);
/// `owner` is the worker of the allocation. When it ends, the connection is closed.
pub(crate) fn spawn_splice(worker: &Arc<Worker>, owner: Arc<Worker>, ready: Ready, parts: Parts) {
    let worker = Arc::clone(worker);
    worker.runtime.clone().spawn(async move {
        let Parts {
            socket,
            ft,
            tls,
            out,
            early,
            slot,
        } = parts;
        if let Ok(tcp) = TcpStream::from_std(socket) {
            match tls {
                Some((records, input)) => {
                    let mut stream = RecordStream::new(tcp, records, input, out);
                    // The bind's answer (sealed already) goes first.
                    if stream.flush().await.is_ok() {
                        let (mut reader, mut writer) = tokio::io::split(stream);
                        splice(owner, ready, &mut reader, &mut writer, &early).await;
                    }
                }
                None => {
                    let (mut reader, mut writer) = tcp.into_split();
                    if writer.write_all(&out).await.is_ok() {
                        splice(owner, ready, &mut reader, &mut writer, &early).await;
                    }
                }
            }
        }
        drop(slot);
        let mut core = worker.lock();
        core.server.handle_connection_closed(clock::now(), ft);
        core.drain_commands();
    });
}

/// What both directions of a splice report to.
#[derive(Clone, Copy)]
struct Side<'a> {
    /// The worker whose core owns the connection.
    owner: &'a Worker,
    connection: ConnectionId,
    /// The allocation's control connection (its idle timer).
    control: Option<FiveTuple>,
}

/// One direction of a splice: read at most [`SPLICE_BUFFER`], report it to the core, write
/// it all, repeat; at the end of `from`, the end of `to` (a half close) and done.
async fn pump<R, W>(
    side: Side<'_>,
    direction: Direction,
    from: &mut R,
    to: &mut W,
    early: &[u8],
) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    if !early.is_empty() {
        relay(side, direction, to, early).await?;
    }
    let mut buf = vec![0u8; SPLICE_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        let Some(data) = buf.get(..n).filter(|d| !d.is_empty()) else {
            to.shutdown().await?;
            return Ok(());
        };
        relay(side, direction, to, data).await?;
    }
}

/// Counts `data` with the core (and honours a bandwidth cap's pause), then writes it.
async fn relay<W>(side: Side<'_>, direction: Direction, to: &mut W, data: &[u8]) -> io::Result<()>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let verdict = {
        let mut core = side.owner.lock();
        let now = clock::now();
        let verdict = core
            .server
            .handle_tcp_relayed(now, side.connection, direction, data.len());
        // The allocation's traffic keeps its control connection open (`tcp_idle_timeout`),
        // though it never crosses it.
        if let Some(control) = &side.control {
            core.streams.saw_traffic(control, now.mono);
        }
        verdict
    };
    if verdict == TcpRelayed::Closed {
        return Err(io::Error::other("connection closed by the server"));
    }
    to.write_all(data).await?;
    to.flush().await?;
    if let TcpRelayed::Wait(wait) = verdict {
        tokio::time::sleep(wait).await;
    }
    Ok(())
}
