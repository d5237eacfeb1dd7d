//! The eBPF maps' keys and values, byte for byte the structs of bpf/fastpath.bpf.c: ports in
//! network order, IPs as wire bytes (IPv4 in the first 4 of 16), every byte a named field.
//! Built from the core's [`MirroredChannel`]s; times are `CLOCK_MONOTONIC` nanoseconds, what
//! the program's `bpf_ktime_get_ns()` reads.

use crate::core::keys::{AddrKey, Tick};
use crate::core::{MirroredChannel, Traffic};

/// Allocation slots in the kernel's arrays (`MAX_SLOTS` in the program), shared out among
/// workers.
pub const MAX_SLOTS: u32 = 65536;

/// `struct chan_key`: client → peer, by the client's 5-tuple and channel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChanKey {
    pub client_ip: [u8; 16],
    pub server_ip: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub channel: u16,
    pub family: u8,
    pub pad: u8,
}

/// `struct chan_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChanVal {
    pub relay_ip: [u8; 16],
    pub peer_ip: [u8; 16],
    pub relay_port: u16,
    pub peer_port: u16,
    pub slot: u32,
    pub generation: u32,
    /// Learned by the program; 0 from userspace.
    pub client_ifindex: u32,
    pub expires: u64,
    pub permission_expires: u64,
    /// Learned by the program; 0 from userspace.
    pub peer_ifindex: u32,
    pub pad: u32,
}

/// `struct peer_key`: peer → client, by relay and peer address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerKey {
    pub relay_ip: [u8; 16],
    pub peer_ip: [u8; 16],
    pub relay_port: u16,
    pub peer_port: u16,
    pub family: u8,
    pub pad: [u8; 3],
}

/// `struct peer_val`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerVal {
    pub client_ip: [u8; 16],
    pub server_ip: [u8; 16],
    pub client_port: u16,
    pub server_port: u16,
    pub channel: u16,
    pub pad: u16,
    pub slot: u32,
    pub generation: u32,
    pub expires: u64,
    pub permission_expires: u64,
    /// Learned by the program; 0 from userspace.
    pub peer_ifindex: u32,
    /// Learned by the program; 0 from userspace.
    pub client_ifindex: u32,
}

/// `struct slot`: an allocation's generation and expiry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotVal {
    pub generation: u32,
    pub pad: u32,
    pub expires: u64,
}

/// `struct slot_stats`: what the program relayed for one slot (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotStats {
    pub packets_to_peer: u64,
    pub bytes_to_peer: u64,
    pub packets_to_client: u64,
    pub bytes_to_client: u64,
}

// SAFETY: plain #[repr(C)] integers and byte arrays with no implicit padding (sizes asserted
// below), valid for any bit pattern.
unsafe impl aya::Pod for ChanKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ChanVal {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerKey {}
// SAFETY: as above.
unsafe impl aya::Pod for PeerVal {}
// SAFETY: as above.
unsafe impl aya::Pod for SlotVal {}
// SAFETY: as above.
unsafe impl aya::Pod for SlotStats {}

/// Turns ticks into the kernel's clock: `epoch_ns` is tick 0 in `CLOCK_MONOTONIC`; tick 0
/// itself (no permission) stays 0, which is always expired.
#[derive(Clone, Copy, Debug)]
pub struct KernelClock {
    pub epoch_ns: u64,
}

impl KernelClock {
    pub fn at(self, tick: Tick) -> u64 {
        if tick.0 == 0 {
            0
        } else {
            self.epoch_ns.saturating_add(tick.0)
        }
    }
}

/// The four entries of a mirrored channel, with slot indices offset by the worker's base.
pub fn entries(
    c: &MirroredChannel,
    clock: KernelClock,
    base: u32,
) -> ((ChanKey, ChanVal), (PeerKey, PeerVal)) {
    let (slot, generation) = (base + c.slot.index, c.slot.generation);
    let (expires, permission_expires) = (clock.at(c.expires), clock.at(c.permission_expires));
    let chan_key = ChanKey {
        client_ip: c.client.ip,
        server_ip: c.server.ip,
        client_port: c.client.port.to_be(),
        server_port: c.server.port.to_be(),
        channel: c.channel,
        family: c.client.family,
        pad: 0,
    };
    let chan_val = ChanVal {
        relay_ip: c.relay.ip,
        peer_ip: c.peer.ip,
        relay_port: c.relay.port.to_be(),
        peer_port: c.peer.port.to_be(),
        slot,
        generation,
        client_ifindex: 0,
        expires,
        permission_expires,
        peer_ifindex: 0,
        pad: 0,
    };
    (
        (chan_key, chan_val),
        (
            peer_key(&c.relay, &c.peer),
            peer_val(c, slot, expires, permission_expires),
        ),
    )
}

fn peer_key(relay: &AddrKey, peer: &AddrKey) -> PeerKey {
    PeerKey {
        relay_ip: relay.ip,
        peer_ip: peer.ip,
        relay_port: relay.port.to_be(),
        peer_port: peer.port.to_be(),
        family: peer.family,
        pad: [0; 3],
    }
}

fn peer_val(c: &MirroredChannel, slot: u32, expires: u64, permission_expires: u64) -> PeerVal {
    PeerVal {
        client_ip: c.client.ip,
        server_ip: c.server.ip,
        client_port: c.client.port.to_be(),
        server_port: c.server.port.to_be(),
        channel: c.channel,
        pad: 0,
        slot,
        generation: c.slot.generation,
        expires,
        permission_expires,
        peer_ifindex: 0,
        client_ifindex: 0,
    }
}

impl SlotStats {
    /// The sum over CPUs.
    pub fn total<'a>(per_cpu: impl IntoIterator<Item = &'a SlotStats>) -> SlotStats {
        per_cpu
            .into_iter()
            .fold(SlotStats::default(), |a, s| SlotStats {
                packets_to_peer: a.packets_to_peer + s.packets_to_peer,
                bytes_to_peer: a.bytes_to_peer + s.bytes_to_peer,
                packets_to_client: a.packets_to_client + s.packets_to_client,
                bytes_to_client: a.bytes_to_client + s.bytes_to_client,
            })
    }

    /// What was added since `earlier` (counters only grow while a slot keeps its generation).
    pub fn since(&self, earlier: &SlotStats) -> Traffic {
        Traffic {
            packets_to_peer: self.packets_to_peer.saturating_sub(earlier.packets_to_peer),
            bytes_to_peer: self.bytes_to_peer.saturating_sub(earlier.bytes_to_peer),
            packets_to_client: self
                .packets_to_client
                .saturating_sub(earlier.packets_to_client),
            bytes_to_client: self.bytes_to_client.saturating_sub(earlier.bytes_to_client),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn structs_have_the_programs_sizes() {
        assert_eq!(size_of::<ChanKey>(), 40);
        assert_eq!(size_of::<ChanVal>(), 72);
        assert_eq!(size_of::<PeerKey>(), 40);
        assert_eq!(size_of::<PeerVal>(), 72);
        assert_eq!(size_of::<SlotVal>(), 16);
        assert_eq!(size_of::<SlotStats>(), 32);
    }

    #[test]
    fn a_channel_maps_to_wire_order_keys_and_kernel_times() {
        use crate::core::keys::Slot;
        let c = MirroredChannel {
            client: AddrKey::new("127.0.0.2:40000".parse().unwrap()),
            server: AddrKey::new("127.0.0.1:3478".parse().unwrap()),
            channel: 0x4001,
            relay: AddrKey::new("127.0.0.1:50000".parse().unwrap()),
            peer: AddrKey::new("127.0.0.3:6000".parse().unwrap()),
            expires: Tick(10),
            permission_expires: Tick(0),
            slot: Slot {
                index: 3,
                generation: 7,
            },
        };
        let ((ck, cv), (pk, pv)) = entries(&c, KernelClock { epoch_ns: 1000 }, 100);
        assert_eq!(ck.client_port.to_ne_bytes(), 40000u16.to_be_bytes());
        assert_eq!(&ck.client_ip[..4], &[127, 0, 0, 2]);
        assert_eq!((ck.channel, ck.family), (0x4001, 4));
        assert_eq!(
            (cv.slot, cv.generation, cv.expires, cv.permission_expires),
            (103, 7, 1010, 0)
        );
        assert_eq!(pk.relay_port.to_ne_bytes(), 50000u16.to_be_bytes());
        assert_eq!(&pk.peer_ip[..4], &[127, 0, 0, 3]);
        assert_eq!((pv.channel, pv.slot), (0x4001, 103));
        assert_eq!(pv.server_port.to_ne_bytes(), 3478u16.to_be_bytes());
    }
}
