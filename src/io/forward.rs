//! Client → peer datagrams of one receive batch, sent with one `sendmmsg` per run of datagrams
//! for the same relay socket instead of one `sendto` each. A client sending a burst (a video
//! frame is several packets) produces such runs; a burst from one relay to one peer costs one
//! syscall, as in a bare forwarder.

use crate::core::{PeerAddr, RelayId};

use super::relay::Relays;
use crate::sys::mmsg::SendBatch;

/// Forwards from stream clients sent with one `sendmmsg` (per run of the same relay) at most.
pub(crate) const FORWARD_BATCH: usize = 32;
/// Largest forward that goes through the batch; a larger ChannelData payload (up to 64 KiB
/// over a stream) is sent on its own, after what the batch holds.
pub(crate) const FORWARD_MAX: usize = 4096;

/// Forwards queued during one receive batch.
pub(crate) struct ForwardBatch {
    batch: SendBatch,
    /// The relay each queued datagram leaves from. Ids, not descriptors: a relay closed while
    /// its datagrams wait (Refresh with lifetime 0 later in the same batch) is simply gone at
    /// flush time, and ids are never reused, so nothing can leave from another allocation's
    /// socket.
    relays: Box<[RelayId]>,
}

impl ForwardBatch {
    /// Room for `count` datagrams of up to `max_len` bytes.
    pub fn new(count: usize, max_len: usize) -> Self {
        let batch = SendBatch::new(count, max_len);
        Self {
            batch,
            relays: vec![RelayId(0); count].into_boxed_slice(),
        }
    }

    /// Queues `data` to leave relay `relay` for `peer`, flushing first when the batch is full.
    pub fn push(&mut self, relays: &Relays, relay: RelayId, data: &[u8], peer: PeerAddr) {
        if self.batch.len() == self.relays.len() {
            self.flush(relays);
        }
        let at = self.batch.len();
        if self.batch.push(data, peer.0) {
            self.relays[at] = relay;
        }
    }

    /// Sends everything queued, one `sendmmsg` per run of the same relay, and empties the batch.
    pub fn flush(&mut self, relays: &Relays) {
        let len = self.batch.len();
        let mut start = 0;
        while start < len {
            let relay = self.relays[start];
            let end = (start..len)
                .find(|&i| self.relays[i] != relay)
                .unwrap_or(len);
            if let Some(fd) = relays.socket(relay) {
                self.batch.send_range(fd, start..end);
            }
            start = end;
        }
        self.batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{SocketAddr, UdpSocket};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::core::RelayRequest;
    use crate::io::ports::RelayPorts;
    use crate::sys::poller::Poller;

    fn relays() -> Relays {
        let ports = RelayPorts::new(40000..=49999, Arc::default(), 7);
        Relays::new(Arc::new(ports), Poller::new().unwrap())
    }

    fn recv_all(sock: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            got.push((buf[..n].to_vec(), from));
        }
        got
    }

    #[test]
    fn runs_leave_from_their_own_relay_in_order_and_a_closed_relay_sends_nothing() {
        let mut relays = relays();
        let ip = "127.0.0.1".parse().unwrap();
        let a = relays.open(RelayRequest::Any { ip }).unwrap();
        let b = relays.open(RelayRequest::Any { ip }).unwrap();
        let c = relays.open(RelayRequest::Any { ip }).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = PeerAddr(peer.local_addr().unwrap());
        let mut batch = ForwardBatch::new(4, 64);
        // Five datagrams through a batch of four: the fifth push flushes the first four.
        for (relay, data) in [(a.id, b"a1"), (a.id, b"a2"), (c.id, b"c1"), (b.id, b"b1")] {
            batch.push(&relays, relay, data, to);
        }
        relays.close(c.id);
        batch.push(&relays, a.id, b"a3", to);
        batch.flush(&relays);
        let got = recv_all(&peer);
        let expect = [
            (&b"a1"[..], a.addr.0),
            (b"a2", a.addr.0),
            (b"b1", b.addr.0),
            (b"a3", a.addr.0),
        ];
        let got: Vec<_> = got.iter().map(|(d, f)| (d.as_slice(), *f)).collect();
        assert_eq!(got, expect);
    }
}
