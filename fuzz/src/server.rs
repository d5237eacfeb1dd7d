//! `server_unauthed` and `server_authed`: the sans-IO core fed arbitrary client and peer bytes
//! through a checking [`Session`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use turnstone::core::{ClientAddr, FiveTuple, RelayId, Transport};
use turnstone::proto::{Class, MessageType, MessageWriter, Method, attr, next_frame};

use super::session::{PEER, Session, five_tuple};

/// The second client of `server_authed`, on TCP; it starts without an allocation.
const TCP_CLIENT: FiveTuple = FiveTuple {
    client: ClientAddr(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40101)),
    server: super::session::LISTENER,
    transport: Transport::Tcp,
};

/// `server_unauthed`: the input as a UDP datagram, as TCP stream frames, and as a peer datagram.
pub fn check_unauthed(data: &[u8]) {
    let mut s = Session::new();
    s.client(five_tuple(40000, Transport::Udp), data);
    s.client(five_tuple(40001, Transport::Tcp), data);
    let tcp = five_tuple(40002, Transport::Tcp);
    let mut rest = data;
    while let Ok(Some(frame)) = next_frame(rest) {
        s.client(tcp, &rest[..frame.len]);
        rest = &rest[frame.len..];
    }
    s.peer(RelayId(1), PEER, data);
    s.finish();
}

/// `server_authed`: after [`Session::authenticated`], the input is a list of records
/// `[op: u8][len: u16 BE][body]`, each one client or peer input (see [`apply`]).
pub fn check_authed(data: &[u8]) {
    let mut s = Session::authenticated();
    let mut rest = data;
    while let [op, hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        let (body, next) = tail.split_at(len);
        apply(&mut s, *op, body);
        rest = next;
    }
    s.finish();
}

/// One record of `server_authed`; ops 8 to 12 are RFC 6062 TCP relay records (`tcp`).
fn apply(s: &mut Session, op: u8, body: &[u8]) {
    if (8..=12).contains(&op) {
        super::tcp::apply(s, op, body);
        return;
    }
    match op % 8 {
        // Raw bytes from the allocation's 5-tuple.
        0 => {
            s.client(s.ft, body);
        }
        // Raw bytes from other 5-tuples, UDP and TCP.
        1 => {
            s.client(five_tuple(40100, Transport::Udp), body);
            s.client(TCP_CLIENT, body);
        }
        // A correctly signed request: [flags][type: u16][attributes as (type u16, len u8, value)];
        // flags bit 0: MESSAGE-INTEGRITY-SHA256, bit 1: from the TCP client.
        2 => {
            let [flags, t0, t1, attrs @ ..] = body else {
                return;
            };
            let ty = u16::from_be_bytes([*t0, *t1]) & 0x3FFF;
            let Some(ty) = MessageType::from_u16(ty) else {
                return;
            };
            let pkt = s.signed_request(ty, flags & 1 != 0, |w| {
                let mut rest = attrs;
                while let [a, b, len, tail @ ..] = rest {
                    let len = usize::from(*len).min(tail.len());
                    w.add(u16::from_be_bytes([*a, *b]), &tail[..len])?;
                    rest = &tail[len..];
                }
                Ok(())
            });
            let ft = if flags & 2 != 0 { TCP_CLIENT } else { s.ft };
            let reply = s.client(ft, &pkt);
            s.learn(&reply);
        }
        // A datagram from the bound peer.
        3 => s.peer(s.relay, PEER, body),
        // A datagram from any peer, to any open relay: [relay index][address][payload].
        4 => {
            let Some((index, rest)) = body.split_first() else {
                return;
            };
            let Some((peer, payload)) = address(rest) else {
                return;
            };
            let mut ids: Vec<RelayId> = s.h.relays.open.keys().copied().collect();
            ids.sort();
            let relay = ids.get(usize::from(*index) % ids.len().max(1)).copied();
            s.peer(relay.unwrap_or(s.relay), peer, payload);
        }
        // Time passes: [seconds: u16]; or, with no body, the TCP client's connection closes.
        5 => match body {
            [a, b, ..] => s.advance(u64::from(u16::from_be_bytes([*a, *b]))),
            [a] => s.advance(u64::from(*a)),
            [] => s.close_connection(TCP_CLIENT),
        },
        // Well-formed ChannelData: [channel: u16][data]; the channel's top bit picks the TCP
        // client, whose ChannelData is padded (RFC 8656 §12.5).
        6 => {
            let [c0, c1, data @ ..] = body else { return };
            let mut pkt = vec![(*c0 & 0x3F) | 0x40, *c1];
            pkt.extend_from_slice(&(data.len() as u16).to_be_bytes());
            pkt.extend_from_slice(data);
            let ft = if c0 & 0x80 != 0 {
                pkt.resize(pkt.len().div_ceil(4) * 4, 0);
                TCP_CLIENT
            } else {
                s.ft
            };
            s.client(ft, &pkt);
        }
        // A Send indication: [address][data].
        _ => {
            let Some((peer, data)) = address(body) else {
                return;
            };
            let ty = MessageType::new(Method::SEND, Class::Indication);
            let mut buf = vec![0u8; data.len() + 64];
            let tid = s.tid();
            let Ok(mut w) = MessageWriter::new(&mut buf, ty, tid) else {
                return;
            };
            if w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).is_err()
                || w.add(attr::DATA, data).is_err()
            {
                return;
            }
            let n = w.finish();
            s.client(s.ft, &buf[..n]);
        }
    }
}

/// A peer address: `[0][ip4][port]` or `[1][ip6][port]` (the low bit of the first byte picks
/// the family); returns it and the bytes after it.
pub(crate) fn address(bytes: &[u8]) -> Option<(SocketAddr, &[u8])> {
    let (family, rest) = bytes.split_first()?;
    let (ip, rest) = if family & 1 == 0 {
        let (ip, rest) = rest.split_first_chunk::<4>()?;
        (IpAddr::V4(Ipv4Addr::from(*ip)), rest)
    } else {
        let (ip, rest) = rest.split_first_chunk::<16>()?;
        (IpAddr::V6(Ipv6Addr::from(*ip)), rest)
    };
    let (port, rest) = rest.split_first_chunk::<2>()?;
    Some((SocketAddr::new(ip, u16::from_be_bytes(*port)), rest))
}
