//! Raw mode: the generator against a plain forwarder (`turnstone-forwarder`, the floor of the
//! comparison harness) instead of a TURN server. No Allocate, no authentication: each lane
//! says hello once, naming its index and its echo peer, and the forwarder answers with the
//! relay socket it set aside for that lane. Data then flows as ChannelData on channel
//! 0x4000 + index (RFC 8656 §12 framing, so the data loop is the same as in TURN mode).
//!
//! Hello and welcome share one 14-byte layout: `0xFF`, `"TS"`, a kind byte (`H` or `W`), the
//! lane index (u32), an IPv4 address and a port, big-endian. The first byte 0xFF is neither
//! STUN (RFC 8489 §5: top two bits 0) nor ChannelData (top two bits 01).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use super::control::Auth;
use super::lane::Lane;
use super::link::UdpLink;
use super::setup::tune;
use super::{LoadConfig, LoadError, mono_now, wire};
use crate::sys::clock;

/// Bytes of a hello or welcome datagram.
pub const HELLO_LEN: usize = 14;
/// Lanes raw mode supports: channels 0x4000 + index must stay at or below 0x7FFF, the top of
/// the ChannelData range (RFC 8656 §12).
pub const MAX_RAW_LANES: usize = 0x4000;
/// Channel of lane 0; lane i uses `FIRST_RAW_CHANNEL + i`.
pub const FIRST_RAW_CHANNEL: u16 = 0x4000;
/// How long to wait for a welcome before sending the hello again.
const HELLO_TIMEOUT: Duration = Duration::from_millis(200);
/// Hellos sent per lane before giving up.
const HELLO_ATTEMPTS: u32 = 10;

/// Which way a [`Hello`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloKind {
    /// Client → forwarder: "lane `index` echoes through peer `addr`".
    Hello,
    /// Forwarder → client: "lane `index` relays from `addr`".
    Welcome,
}

/// The setup message of raw mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Hello or welcome.
    pub kind: HelloKind,
    /// The lane; its channel is `FIRST_RAW_CHANNEL + index`.
    pub index: u32,
    /// The peer (hello) or the relay socket (welcome).
    pub addr: SocketAddrV4,
}

impl Hello {
    /// The 14 bytes on the wire.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..3].copy_from_slice(&[0xFF, b'T', b'S']);
        out[3] = match self.kind {
            HelloKind::Hello => b'H',
            HelloKind::Welcome => b'W',
        };
        out[4..8].copy_from_slice(&self.index.to_be_bytes());
        out[8..12].copy_from_slice(&self.addr.ip().octets());
        out[12..14].copy_from_slice(&self.addr.port().to_be_bytes());
        out
    }

    /// Parses a hello or welcome; `None` for anything else.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let b: &[u8; HELLO_LEN] = buf.try_into().ok()?;
        if b[..3] != [0xFF, b'T', b'S'] {
            return None;
        }
        let kind = match b[3] {
            b'H' => HelloKind::Hello,
            b'W' => HelloKind::Welcome,
            _ => return None,
        };
        let index = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let ip = Ipv4Addr::new(b[8], b[9], b[10], b[11]);
        let port = u16::from_be_bytes([b[12], b[13]]);
        Some(Self {
            kind,
            index,
            addr: SocketAddrV4::new(ip, port),
        })
    }
}

/// Sets up one lane per allocation by hello/welcome, in turn.
pub(super) fn setup(
    config: &LoadConfig,
    peers: &[UdpSocket],
    lanes: &mut Vec<Lane<UdpLink>>,
) -> Result<(), LoadError> {
    let wire_len = wire::wire_len(config.payload);
    let unix_now = clock::now().unix_secs;
    for i in 0..config.allocations {
        let index = u32::try_from(i).map_err(|_| LoadError::Config("too many allocations"))?;
        let channel = u16::try_from(i)
            .ok()
            .and_then(|i| FIRST_RAW_CHANNEL.checked_add(i))
            .ok_or(LoadError::Config("too many raw lanes"))?;
        let peer = peers[i % peers.len()].local_addr()?;
        let SocketAddr::V4(peer_v4) = peer else {
            return Err(LoadError::Config("raw mode needs IPv4 peers"));
        };
        let socket = hello(config.server, index, peer_v4)?;
        tune(&socket)?;
        // Never used: raw lanes neither refresh nor delete anything.
        let auth = Auth::new(&config.credentials, unix_now, Duration::from_secs(3600));
        let link = UdpLink::new(socket, config.server, wire_len);
        let mut lane = Lane::new(link, auth, peer, index, config.ring());
        lane.channel = channel;
        lanes.push(lane);
    }
    Ok(())
}

/// Opens the lane's client socket, connected to the forwarder, and greets until welcomed.
fn hello(server: SocketAddr, index: u32, peer: SocketAddrV4) -> Result<UdpSocket, LoadError> {
    let local = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let socket = UdpSocket::bind(local).map_err(|source| LoadError::Bind {
        addr: local,
        source,
    })?;
    socket.connect(server)?;
    let out = Hello {
        kind: HelloKind::Hello,
        index,
        addr: peer,
    }
    .encode();
    let mut buf = [0u8; 64];
    for _ in 0..HELLO_ATTEMPTS {
        socket.send(&out)?;
        let deadline = mono_now() + HELLO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(mono_now());
            if left.is_zero() {
                break;
            }
            socket.set_read_timeout(Some(left))?;
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                // Nothing bound there yet: the forwarder may still be starting, so this attempt
                // waits out its timer rather than burning the next one at once.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(LoadError::Io(e)),
            };
            let welcomed = Hello::decode(&buf[..n])
                .is_some_and(|h| h.kind == HelloKind::Welcome && h.index == index);
            if welcomed {
                return Ok(socket);
            }
        }
    }
    Err(LoadError::Timeout {
        what: "raw hello",
        server,
        attempts: HELLO_ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_is_neither_stun_nor_channel_data() {
        let h = Hello {
            kind: HelloKind::Welcome,
            index: 4095,
            addr: "127.0.0.1:40000".parse().unwrap(),
        };
        let bytes = h.encode();
        assert_eq!(Hello::decode(&bytes), Some(h));
        assert!(!crate::proto::looks_like_stun(&bytes));
        assert!(crate::proto::ChannelData::parse(&bytes).is_err());
        assert_eq!(Hello::decode(&bytes[..13]), None);
    }

    #[test]
    fn raw_lanes_echo_through_a_welcoming_forwarder() {
        // A forwarder in miniature: welcome lane 0, then bounce ChannelData through the peer.
        let fwd = UdpSocket::bind("127.0.0.1:0").unwrap();
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(relay_v4) = relay.local_addr().unwrap() else {
            unreachable!()
        };
        let server = fwd.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let (n, client) = fwd.recv_from(&mut buf).unwrap();
            let hello = Hello::decode(&buf[..n]).unwrap();
            let welcome = Hello {
                kind: HelloKind::Welcome,
                index: hello.index,
                addr: relay_v4,
            };
            fwd.send_to(&welcome.encode(), client).unwrap();
            relay.connect(hello.addr).unwrap();
            fwd.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            while let Ok((n, client)) = fwd.recv_from(&mut buf) {
                assert_eq!(u16::from_be_bytes([buf[0], buf[1]]), FIRST_RAW_CHANNEL);
                relay.send(&buf[4..n]).unwrap();
                let m = relay.recv(&mut buf[4..]).unwrap();
                fwd.send_to(&buf[..4 + m], client).unwrap();
            }
        });
        let mut config = LoadConfig::new(
            server,
            super::super::Credentials::Rest {
                secret: "unused".into(),
            },
        );
        config.raw = true;
        config.allocations = 1;
        config.rate = 500;
        config.duration = Duration::from_millis(200);
        let report = super::super::run(&config).unwrap();
        thread.join().unwrap();
        assert!(report.sent >= 90, "{}", report.to_table());
        assert_eq!(report.received, report.sent, "{}", report.to_table());
        assert_eq!(report.delete_failures, 0);
    }
}
