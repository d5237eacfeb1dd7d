//! Before and after the data loop: the echo peers, one allocation per lane with its channel
//! or permission (over any [`Link`]), and their deletion at the end.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use socket2::SockRef;

use super::control::{self, Auth, CHANNEL, LIFETIME_SECS, Request, SOCKET_BUFFER_BYTES, bad};
use super::lane::Lane;
use super::link::{Connector, Link, UdpLink};
use super::{LoadConfig, LoadError, wire};
use crate::proto::{Message, attr};
use crate::sys::clock;

/// Echo peer sockets: non-blocking, large buffers.
pub(super) fn bind_peers(config: &LoadConfig) -> Result<Vec<UdpSocket>, LoadError> {
    let count = config.peers.min(config.allocations);
    (0..count)
        .map(|_| {
            let addr = SocketAddr::new(config.peer_ip, 0);
            let socket =
                UdpSocket::bind(addr).map_err(|source| LoadError::Bind { addr, source })?;
            tune(&socket)?;
            Ok(socket)
        })
        .collect()
}

/// Non-blocking with large buffers (best effort: the kernel caps them at rmem_max/wmem_max).
pub(super) fn tune(socket: &UdpSocket) -> Result<(), LoadError> {
    let sock = SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    Ok(())
}

/// Direct mode: one client socket per lane, connected to its echo peer; nothing to set up
/// beyond that (no server, no allocation).
pub(super) fn direct(
    config: &LoadConfig,
    peers: &[UdpSocket],
    lanes: &mut Vec<Lane<UdpLink>>,
) -> Result<(), LoadError> {
    let unix_now = clock::now().unix_secs;
    for i in 0..config.allocations {
        let index = u32::try_from(i).map_err(|_| LoadError::Config("too many allocations"))?;
        let peer = peers[i % peers.len()].local_addr()?;
        let local = SocketAddr::new(config.peer_ip, 0);
        let socket = UdpSocket::bind(local).map_err(|source| LoadError::Bind {
            addr: local,
            source,
        })?;
        socket.connect(peer)?;
        tune(&socket)?;
        // Never used: direct lanes neither refresh nor delete anything.
        let auth = Auth::new(&config.credentials, unix_now, Duration::from_secs(3600));
        let link = UdpLink::new(socket, peer, wire::wire_len(config.payload));
        lanes.push(Lane::new(link, auth, peer, index, config.ring()));
    }
    Ok(())
}

/// Allocates and binds each lane in turn; a lane is kept as soon as its allocation exists, so
/// teardown deletes it even when a later step fails.
pub(super) fn setup<L: Link>(
    config: &LoadConfig,
    connector: &Connector,
    peers: &[UdpSocket],
    lanes: &mut Vec<Lane<L>>,
) -> Result<(), LoadError> {
    let unix_now = clock::now().unix_secs;
    let valid_for =
        config.warmup + config.duration + config.loss_timeout + Duration::from_secs(3600);
    let mut buf = [0u8; 1500];
    for i in 0..config.allocations {
        let (link, auth) = allocate_fresh(config, connector, unix_now, valid_for)?;
        let peer = peers[i % peers.len()].local_addr()?;
        let index = u32::try_from(i).map_err(|_| LoadError::Config("too many allocations"))?;
        lanes.push(Lane::new(link, auth, peer, index, config.ring()));
        let lane = lanes.last_mut().ok_or(LoadError::Config("no lane"))?;
        let req = bind_request(config, peer);
        control::transact(&mut lane.link, &mut lane.auth, req, &mut buf)?;
        lane.link.set_blocking(false)?;
    }
    Ok(())
}

/// Allocates on a new link. A 437 (Allocation Mismatch, RFC 8656 §7.2) on a new 5-tuple means
/// the server still holds it from an allocation deleted moments ago (coturn does for about a
/// second): another source port is tried, up to 3 times.
fn allocate_fresh<L: Link>(
    config: &LoadConfig,
    connector: &Connector,
    unix_now: u64,
    valid_for: Duration,
) -> Result<(L, Auth), LoadError> {
    let mut tries = 0;
    loop {
        let auth = Auth::new(&config.credentials, unix_now, valid_for);
        match allocate(connector, auth, LIFETIME_SECS) {
            Err(LoadError::Rejected { code: 437, .. }) if tries < 3 => tries += 1,
            other => return other,
        }
    }
}

/// Opens a new link to the server and allocates a relay on it.
fn allocate<L: Link>(
    connector: &Connector,
    mut auth: Auth,
    lifetime: u32,
) -> Result<(L, Auth), LoadError> {
    let mut link = L::open(connector)?;
    let mut buf = [0u8; 1500];
    let req = Request::Allocate { lifetime };
    let n = control::transact(&mut link, &mut auth, req, &mut buf)?;
    let msg = Message::parse(&buf[..n]).map_err(|_| bad(req, "unparsable response"))?;
    // RFC 8656 §7.3: a success response carries the relayed address.
    if !matches!(msg.xor_address(attr::XOR_RELAYED_ADDRESS), Some(Ok(_))) {
        return Err(bad(req, "no XOR-RELAYED-ADDRESS"));
    }
    Ok((link, auth))
}

/// The request that installs the permission for `peer`.
pub(super) fn bind_request(config: &LoadConfig, peer: SocketAddr) -> Request {
    if config.send_indications {
        Request::CreatePermission { peer }
    } else {
        Request::ChannelBind {
            channel: CHANNEL,
            peer,
        }
    }
}

/// Deletes every allocation (RFC 8656 §8: Refresh with LIFETIME 0); returns the failures.
/// After one timeout the server is taken for gone and the rest are not tried.
pub(super) fn teardown<L: Link>(lanes: &mut [Lane<L>]) -> u64 {
    let mut failures = 0;
    let mut server_gone = false;
    let mut buf = [0u8; 1500];
    for lane in lanes.iter_mut() {
        if server_gone || lane.link.set_blocking(true).is_err() {
            failures += 1;
            continue;
        }
        let delete = Request::Refresh { lifetime: 0 };
        match control::transact(&mut lane.link, &mut lane.auth, delete, &mut buf) {
            Ok(_) => {}
            Err(LoadError::Timeout { .. }) => {
                server_gone = true;
                failures += 1;
            }
            Err(_) => failures += 1,
        }
    }
    failures
}
