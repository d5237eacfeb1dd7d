//! Keys and values of the flat tables (DESIGN.md §1), plain fixed-size structs of integers and
//! byte arrays — no pointers, no `String`, `#[repr(C)]` with explicit padding — so the kernel
//! fast path (next issue) can mirror them into eBPF maps as they are.
//!
//! - An address is a family (4 or 6), a port and 16 bytes of IP (an IPv4 address in the first
//!   four, the rest zero). A permission key is an address with port 0 (RFC 8656 §9: a
//!   permission is per IP, the port is ignored).
//! - Time is a [`Tick`]: nanoseconds since the table's epoch, the first `Instant` the core was
//!   given (the core reads no clock, DESIGN.md §3). Expiry stays a compare at use:
//!   `entry.expires > now`. A mirror into the kernel adds one offset (the epoch in
//!   `CLOCK_MONOTONIC`, which io knows) to compare with `bpf_ktime_get_ns()`.
//! - The per-allocation counters and bandwidth bucket are a [`Slot`]: an index into the
//!   worker's counters array plus a generation, so an entry can never count against a later
//!   allocation in the same slot.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::{ClientAddr, FiveTuple, Transport};

/// A point in time: nanoseconds since the table's epoch (see the module doc).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tick(pub u64);

impl Tick {
    /// `at` as nanoseconds since `epoch`; an instant before the epoch reads as the epoch. A
    /// u64 of nanoseconds lasts 584 years.
    pub fn since(epoch: Instant, at: Instant) -> Self {
        let nanos = at.saturating_duration_since(epoch).as_nanos();
        Self(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// A transport address: family, port, IP bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrKey {
    /// The IP: IPv4 in the first 4 bytes, the rest zero.
    pub ip: [u8; 16],
    /// The port (0 in a permission key).
    pub port: u16,
    /// 4 or 6.
    pub family: u8,
    /// Zero.
    pub pad: u8,
}

impl AddrKey {
    /// The key of a transport address.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            port: addr.port(),
            ..Self::ip_only(addr.ip())
        }
    }

    /// The key of an IP with port 0 (a permission).
    pub fn ip_only(ip: IpAddr) -> Self {
        let mut bytes = [0u8; 16];
        let family = match ip {
            IpAddr::V4(v4) => {
                bytes[..4].copy_from_slice(&v4.octets());
                4
            }
            IpAddr::V6(v6) => {
                bytes = v6.octets();
                6
            }
        };
        Self {
            ip: bytes,
            port: 0,
            family,
            pad: 0,
        }
    }

    /// The address back.
    pub fn addr(&self) -> SocketAddr {
        let ip = if self.family == 4 {
            IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.ip))
        };
        SocketAddr::new(ip, self.port)
    }
}

impl Hash for AddrKey {
    // Two word-sized writes instead of a length-prefixed byte slice and three small ones.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.ip));
        state.write_u32(u32::from(self.port) << 16 | u32::from(self.family) << 8);
    }
}

/// A client's 5-tuple (RFC 8656 §2) as a key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FiveTupleKey {
    /// The client's address.
    pub client: AddrKey,
    /// The listener address it reached.
    pub server: AddrKey,
    /// 17 UDP, 6 TCP (IANA protocol numbers); TLS over TCP is 6 + 0x80.
    pub transport: u8,
    /// Zero.
    pub pad: [u8; 3],
}

const TLS: u8 = 6 | 0x80;

impl FiveTupleKey {
    /// Everything but the IPs in one word (for hashing).
    fn small_fields(&self) -> u64 {
        u64::from(self.client.port)
            | u64::from(self.client.family) << 16
            | u64::from(self.server.port) << 24
            | u64::from(self.server.family) << 40
            | u64::from(self.transport) << 48
    }
}

// Hashing is per packet: two word-sized writes. The server's IP is left out of the hash (not
// out of equality): it is one of the few listener addresses, so it adds no spread.
impl Hash for FiveTupleKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.client.ip));
        state.write_u64(self.small_fields());
    }
}

impl FiveTupleKey {
    /// The key of a 5-tuple.
    pub fn new(ft: &FiveTuple) -> Self {
        Self {
            client: AddrKey::new(ft.client.addr()),
            server: AddrKey::new(ft.server),
            transport: match ft.transport {
                Transport::Udp => 17,
                Transport::Tcp => 6,
                Transport::Tls => TLS,
            },
            pad: [0; 3],
        }
    }

    /// The 5-tuple back.
    pub fn five_tuple(&self) -> FiveTuple {
        FiveTuple {
            client: ClientAddr(self.client.addr()),
            server: self.server.addr(),
            transport: match self.transport {
                17 => Transport::Udp,
                TLS => Transport::Tls,
                _ => Transport::Tcp,
            },
        }
    }
}

/// Where an entry's counters and bandwidth bucket are: an index into the counters array and
/// the generation of the allocation that held it when the entry was made.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Slot {
    /// Index into the counters array.
    pub index: u32,
    /// Must match the slot's current generation.
    pub generation: u32,
}

/// Client → peer: (client 5-tuple, channel number).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelKey {
    /// The client.
    pub client: FiveTupleKey,
    /// The channel number (RFC 8656 §12: 0x4000–0x4FFF).
    pub channel: u16,
    /// Zero.
    pub pad: u16,
}

impl ChannelKey {
    /// The key of channel `channel` of the client on `client`.
    pub fn new(client: &FiveTuple, channel: u16) -> Self {
        Self {
            client: FiveTupleKey::new(client),
            channel,
            pad: 0,
        }
    }
}

impl Hash for ChannelKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.client.client.ip));
        // All 16 bits of the channel (0x4000–0x4FFF) reach the hash; XOR with the transport
        // byte is harmless, the hasher mixes.
        state.write_u64(self.client.small_fields() ^ u64::from(self.channel) << 48);
    }
}

/// What a client's ChannelData needs: where it goes and until when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelEntry {
    /// The relay socket to send from.
    pub relay: u64,
    /// The address to send to: the bound peer, already translated from our advertised
    /// address to the bound one when the peer is our own relay behind 1:1 NAT.
    pub peer: AddrKey,
    /// Zero.
    pub pad: u32,
    /// The channel's expiry (RFC 8656 §12: 10 minutes after the last ChannelBind).
    pub expires: Tick,
    /// The expiry of the permission for the peer's IP (RFC 8656 §9), kept in step with the
    /// permission table so one lookup answers both.
    pub permission_expires: Tick,
    /// The allocation's counters.
    pub slot: Slot,
    /// 1 when the peer is our own relay address, valid only while a relay socket is open at
    /// its port (`PeerPolicy::is_live_gated`).
    pub live_gated: u8,
    /// Zero.
    pub tail: [u8; 7],
}

/// Peer → client: (relay, peer transport address as it arrives on the relay socket).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    /// The relay socket it arrived on.
    pub relay: u64,
    /// Who sent it.
    pub peer: AddrKey,
    /// Zero.
    pub pad: u32,
}

impl PeerKey {
    /// The key of what `peer` sends to relay socket `relay`.
    pub fn new(relay: u64, peer: SocketAddr) -> Self {
        Self {
            relay,
            peer: AddrKey::new(peer),
            pad: 0,
        }
    }
}

/// Relay id, port and family in one word (relay ids are small sequential numbers).
fn relay_port(relay: u64, peer: &AddrKey) -> u64 {
    relay << 24 ^ u64::from(peer.port) << 8 ^ u64::from(peer.family)
}

impl Hash for PeerKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.peer.ip));
        state.write_u64(relay_port(self.relay, &self.peer));
    }
}

/// A bound channel seen from the peer side: the client and the channel to frame it in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEntry {
    /// The client.
    pub client: FiveTupleKey,
    /// The channel number.
    pub channel: u16,
    /// Zero.
    pub pad: [u8; 2],
    /// The channel's expiry; once past, the peer's datagrams go as Data indications.
    pub expires: Tick,
    /// The permission's expiry, as in [`ChannelEntry`].
    pub permission_expires: Tick,
    /// The allocation's counters.
    pub slot: Slot,
}

/// (relay, peer IP with port 0): a permission (RFC 8656 §9).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PermissionKey {
    /// The relay of the peer's family.
    pub relay: u64,
    /// The peer IP, port 0.
    pub peer: AddrKey,
    /// Zero.
    pub pad: u32,
}

impl PermissionKey {
    /// The key of a permission for `peer`'s IP on relay socket `relay` (the port is ignored,
    /// RFC 8656 §9).
    pub fn new(relay: u64, peer: IpAddr) -> Self {
        Self {
            relay,
            peer: AddrKey::ip_only(peer),
            pad: 0,
        }
    }
}

impl Hash for PermissionKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.peer.ip));
        state.write_u64(relay_port(self.relay, &self.peer));
    }
}

/// A permission: its expiry, and where a Data indication goes (RFC 8656 §11.3).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PermissionEntry {
    /// The client.
    pub client: FiveTupleKey,
    /// Zero.
    pub pad: u32,
    /// The permission's expiry (RFC 8656 §9: 300 s after the last install or refresh).
    pub expires: Tick,
    /// The allocation's counters.
    pub slot: Slot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_key_gives_back_the_address_it_was_made_from() {
        for addr in ["192.0.2.7:3478", "[2001:db8::7]:49152", "0.0.0.0:0"] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(AddrKey::new(addr).addr(), addr);
        }
        let key = AddrKey::ip_only("192.0.2.7".parse().unwrap());
        assert_eq!((key.port, key.family, &key.ip[4..]), (0, 4, &[0u8; 12][..]));
    }

    #[test]
    fn a_five_tuple_key_gives_back_its_five_tuple_for_each_transport() {
        for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            let ft = FiveTuple {
                client: ClientAddr("198.51.100.1:40000".parse().unwrap()),
                server: "[2001:db8::1]:3478".parse().unwrap(),
                transport,
            };
            assert_eq!(FiveTupleKey::new(&ft).five_tuple(), ft);
        }
    }

    #[test]
    fn keys_and_values_are_fixed_size_with_every_byte_a_named_field() {
        // Sizes a kernel map declares; each equals the sum of the fields, so no implicit
        // padding can carry stale bytes into a map.
        use std::mem::size_of;
        assert_eq!(size_of::<AddrKey>(), 16 + 2 + 1 + 1);
        assert_eq!(size_of::<FiveTupleKey>(), 2 * 20 + 1 + 3);
        assert_eq!(size_of::<ChannelKey>(), 44 + 2 + 2);
        assert_eq!(size_of::<PeerKey>(), 8 + 20 + 4);
        assert_eq!(size_of::<PermissionKey>(), 8 + 20 + 4);
        assert_eq!(size_of::<ChannelEntry>(), 8 + 20 + 4 + 8 + 8 + 8 + 1 + 7);
        assert_eq!(size_of::<PeerEntry>(), 44 + 2 + 2 + 8 + 8 + 8);
        assert_eq!(size_of::<PermissionEntry>(), 44 + 4 + 8 + 8);
    }
}
