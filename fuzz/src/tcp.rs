//! `server_authed` records for RFC 6062 TCP relays: a TCP allocation on the TCP client,
//! Connect (confirmed by the scripted IO side, failing for odd peer ports), peers connecting
//! in, ConnectionBind from new connections, relayed bytes and closes; with checks on every
//! answer, indication and verdict, and at shutdown on every peer connection.

use std::net::SocketAddr;

use turnstone::core::{ConnectionId, Direction, PeerAddr, TcpRelayed, Transport};
use turnstone::proto::{Class, Message, Method, attr};

use super::server::address;
use super::session::{PEER, Session, five_tuple, request};

/// The TCP client of `server_authed` (see `server::TCP_CLIENT`).
fn tcp_client() -> turnstone::core::FiveTuple {
    five_tuple(40101, Transport::Tcp)
}

/// One TCP relay record: `op` is 8 to 12.
pub fn apply(s: &mut Session, op: u8, body: &[u8]) {
    match op {
        // A TCP allocation on the TCP client and a permission for PEER's IP (no body), or a
        // Connect from it to `[address]`.
        8 => match address(body) {
            None => allocate(s),
            Some((peer, _)) => connect(s, peer),
        },
        // A peer connects in: [relay index][address].
        9 => {
            let Some((index, rest)) = body.split_first() else {
                return;
            };
            let Some((peer, _)) = address(rest) else {
                return;
            };
            arrive(s, *index, peer);
        }
        // ConnectionBind: [connection index or raw CONNECTION-ID: 1 or 4 bytes][port].
        10 => {
            let (id, rest) = match body {
                [a, b, c, d, rest @ ..] if body.len() >= 5 => {
                    (ConnectionId(u32::from_be_bytes([*a, *b, *c, *d])), rest)
                }
                [index, rest @ ..] => match s
                    .connections
                    .get(usize::from(*index) % s.connections.len().max(1))
                {
                    Some(id) => (*id, rest),
                    None => return,
                },
                [] => return,
            };
            let port = 40200 + u16::from(rest.first().copied().unwrap_or(0) % 16);
            bind(s, id, port);
        }
        // Bytes relayed on a connection: [connection index][direction][len: u16].
        11 => {
            let [index, dir, hi, lo, ..] = body else {
                return;
            };
            let Some(id) = s
                .connections
                .get(usize::from(*index) % s.connections.len().max(1))
            else {
                return;
            };
            let direction = if dir & 1 == 0 {
                Direction::ToPeer
            } else {
                Direction::ToClient
            };
            let now = s.h.now();
            let verdict = s.h.server.handle_tcp_relayed(
                now,
                *id,
                direction,
                usize::from(u16::from_be_bytes([*hi, *lo])),
            );
            if let TcpRelayed::Wait(wait) = verdict {
                assert!(wait.as_secs() < 3600, "absurd pause {wait:?}");
            }
        }
        // A peer connection closes: [connection index].
        _ => {
            let Some(index) = body.first() else { return };
            let Some(&id) = s
                .connections
                .get(usize::from(*index) % s.connections.len().max(1))
            else {
                return;
            };
            let now = s.h.now();
            s.h.server.handle_peer_connection_closed(now, id);
            s.h.relays.connections.retain(|c| *c != id);
            let verdict = s.h.server.handle_tcp_relayed(now, id, Direction::ToPeer, 1);
            assert_eq!(
                verdict,
                TcpRelayed::Closed,
                "a closed connection relays nothing"
            );
        }
    }
}

/// A signed request from `ft`, resent once after a 401/438 (the nonce is per 5-tuple).
fn signed(
    s: &mut Session,
    ft: turnstone::core::FiveTuple,
    method: Method,
    body: impl Fn(&mut turnstone::proto::MessageWriter<'_>) -> Result<(), turnstone::proto::WriteError>,
) -> Vec<u8> {
    let mut reply = Vec::new();
    for _ in 0..2 {
        let pkt = s.signed_request(request(method), false, &body);
        reply = s.client(ft, &pkt);
        if !s.learn(&reply) {
            break;
        }
    }
    reply
}

fn allocate(s: &mut Session) {
    signed(s, tcp_client(), Method::ALLOCATE, |w| {
        w.add(attr::REQUESTED_TRANSPORT, &[6, 0, 0, 0]).map(drop)
    });
    signed(s, tcp_client(), Method::CREATE_PERMISSION, |w| {
        w.add_xor_address(attr::XOR_PEER_ADDRESS, PEER).map(drop)
    });
}

fn connect(s: &mut Session, peer: SocketAddr) {
    let reply = signed(s, tcp_client(), Method::CONNECT, |w| {
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).map(drop)
    });
    let Ok(msg) = Message::parse(&reply) else {
        return;
    };
    assert_eq!(msg.method(), Method::CONNECT);
    if msg.class() == Class::Success {
        let id = msg.u32_attr(attr::CONNECTION_ID);
        let id = id
            .expect("a Connect success carries CONNECTION-ID")
            .expect("4 bytes");
        s.connections.push(ConnectionId(id));
    }
}

fn arrive(s: &mut Session, index: u8, peer: SocketAddr) {
    let mut ids: Vec<_> = s.h.relays.tcp.clone();
    ids.sort();
    let Some(&relay) = ids.get(usize::from(index) % ids.len().max(1)) else {
        return;
    };
    let now = s.h.now();
    let mut out = vec![0u8; 2048];
    let Ok(arrived) =
        s.h.server
            .peer_connection_arrived(now, relay, PeerAddr(peer), &mut out)
    else {
        return;
    };
    s.h.relays.connections.push(arrived.connection);
    s.connections.push(arrived.connection);
    let indication =
        Message::parse(&out[..arrived.indication.len]).expect("ConnectionAttempt parses");
    assert_eq!(indication.method(), Method::CONNECTION_ATTEMPT);
    assert_eq!(indication.class(), Class::Indication);
    assert_eq!(
        indication.u32_attr(attr::CONNECTION_ID),
        Some(Ok(arrived.connection.0))
    );
    assert_eq!(
        indication.xor_address(attr::XOR_PEER_ADDRESS),
        Some(Ok(peer))
    );
    assert_eq!(
        arrived.indication.to.transport,
        Transport::Tcp,
        "indications go to the control connection"
    );
    s.h.pump();
}

fn bind(s: &mut Session, id: ConnectionId, port: u16) {
    let ft = five_tuple(port, Transport::Tcp);
    let splices = s.h.relays.splices.len();
    let reply = signed(s, ft, Method::CONNECTION_BIND, |w| {
        w.add_u32(attr::CONNECTION_ID, id.0).map(drop)
    });
    let Ok(msg) = Message::parse(&reply) else {
        return;
    };
    let spliced = s.h.relays.splices.len() > splices;
    assert_eq!(
        msg.class() == Class::Success,
        spliced,
        "a splice exactly for each success"
    );
    if spliced {
        assert_eq!(s.h.relays.splices.last(), Some(&(ft, id)));
    }
}
