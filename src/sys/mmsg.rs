//! Batched UDP IO for non-blocking sockets (DESIGN.md §4 "Batching"): Linux
//! `recvmmsg`/`sendmmsg`, one `recvmsg`/`sendmsg` per datagram elsewhere.
//! Buffers, iovecs, addresses and headers are allocated once in `new`; `recv`
//! and `flush` only refresh pointers and lengths, so they never allocate.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::{fmt, io, mem, ptr};

/// Linux caps a `recvmmsg`/`sendmmsg` vector at UIO_MAXIOV (1024) messages.
const MAX_BATCH: usize = 1024;
/// No UDP payload is larger than this.
const MAX_DATAGRAM: usize = 65_535;
/// Source reported for a datagram whose address could not be parsed.
const UNKNOWN_PEER: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// Preallocated buffers for receiving up to `count` datagrams with one call.
#[derive(Debug)]
pub struct RecvBatch {
    slots: Slots,
    peers: Box<[SocketAddr]>,
    len: usize,
    /// Leading slots whose lengths the last call changed (all of them before the first call):
    /// only those need resetting, which keeps a wake-up for one datagram cheap.
    stale: usize,
}

/// Preallocated buffers for queueing up to `count` datagrams to send at once.
#[derive(Debug)]
pub struct SendBatch {
    slots: Slots,
    len: usize,
    stats: FlushStats,
}

/// What a [`SendBatch::flush`] did with the queued datagrams.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Datagrams the kernel accepted.
    pub sent: usize,
    /// Datagrams the kernel refused with a per-datagram error; they are gone.
    pub dropped: usize,
}

impl RecvBatch {
    /// Allocates room for `count` datagrams of up to `max_len` bytes each.
    /// `count` is clamped to 1..=1024 and `max_len` to at most 65535.
    pub fn new(count: usize, max_len: usize) -> Self {
        let slots = Slots::new(count, max_len);
        let peers = vec![UNKNOWN_PEER; slots.count()].into();
        let stale = slots.count();
        Self {
            slots,
            peers,
            len: 0,
            stale,
        }
    }

    /// Receives up to `count` datagrams without blocking; `Ok(n)` with `n >= 1`,
    /// `Err(WouldBlock)` when nothing is queued. Truncated datagrams (MSG_TRUNC)
    /// get an empty payload so callers drop them.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.len = 0;
        let slots = &mut self.slots;
        let stale = mem::take(&mut self.stale);
        slots.lens[..stale].fill(slots.max_len);
        slots.addr_lens[..stale].fill(mem::size_of::<libc::sockaddr_storage>() as _);
        slots.prepare(0..stale);
        // SAFETY: every header points at this batch's own buffers, iovecs and address slots
        // with their true capacities: `prepare` just reset the ones the last call used, and
        // the kernel wrote no others.
        let n = retry(|| unsafe { calls::recv_many(fd.as_raw_fd(), &mut slots.hdrs) })?;
        self.stale = n;
        for i in 0..n {
            let hdr = &slots.hdrs[i];
            let peer = decode(&slots.addrs[i], hdr.msg_hdr.msg_namelen);
            // A cut datagram is not the datagram the peer sent: drop it.
            let whole = peer.is_some() && hdr.msg_hdr.msg_flags & libc::MSG_TRUNC == 0;
            let len = (hdr.msg_len as usize).min(slots.max_len);
            slots.lens[i] = if whole { len } else { 0 };
            self.peers[i] = peer.unwrap_or(UNKNOWN_PEER);
        }
        self.len = n;
        Ok(n)
    }

    /// The number of datagrams held from the last `recv`.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last `recv` left no datagram (or none was made yet).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Payload and source of datagram `i` from the last `recv`; panics when
    /// `i >= self.len()`.
    pub fn datagram(&self, i: usize) -> (&[u8], SocketAddr) {
        assert!(i < self.len, "datagram index {i} out of range");
        let payload = &self.slots.bufs[i * self.slots.max_len..][..self.slots.lens[i]];
        (payload, self.peers[i])
    }

    /// Like [`RecvBatch::datagram`], with the payload writable in place.
    pub fn datagram_mut(&mut self, i: usize) -> (&mut [u8], SocketAddr) {
        assert!(i < self.len, "datagram index {i} out of range");
        let payload = &mut self.slots.bufs[i * self.slots.max_len..][..self.slots.lens[i]];
        (payload, self.peers[i])
    }
}

impl SendBatch {
    /// Allocates room for `count` datagrams of up to `max_len` bytes each.
    /// `count` is clamped to 1..=1024 and `max_len` to at most 65535.
    pub fn new(count: usize, max_len: usize) -> Self {
        let (slots, len, stats) = (Slots::new(count, max_len), 0, FlushStats::default());
        Self { slots, len, stats }
    }

    /// The buffer for the next datagram (`max_len` bytes), or `None` when the
    /// batch is full (flush first). Write into it, then [`SendBatch::commit`].
    pub fn next_buf(&mut self) -> Option<&mut [u8]> {
        if self.len == self.slots.count() {
            return None;
        }
        let start = self.len * self.slots.max_len;
        Some(&mut self.slots.bufs[start..start + self.slots.max_len])
    }

    /// Queues the first `len` bytes just written into `next_buf()` for `dest`.
    /// A commit on a full batch or with `len > max_len` is a caller bug: it
    /// asserts in debug builds and is ignored (the datagram is dropped) otherwise.
    pub fn commit(&mut self, len: usize, dest: SocketAddr) {
        self.commit_at(0, len, dest);
    }

    /// Queues bytes `start..start + len` of the buffer just written into `next_buf()`: the
    /// datagram need not begin at the buffer's start (a header written in front of a payload).
    pub fn commit_at(&mut self, start: usize, len: usize, dest: SocketAddr) {
        let fits = self.len < self.slots.count() && start + len <= self.slots.max_len;
        debug_assert!(fits, "commit on a full batch or past max_len");
        if !fits {
            return;
        }
        self.slots.starts[self.len] = start;
        self.slots.lens[self.len] = len;
        self.slots.addr_lens[self.len] = encode(dest, &mut self.slots.addrs[self.len]);
        self.len += 1;
    }

    /// Copies `data` and queues it for `dest`; `false` when the batch is full
    /// or `data` is longer than `max_len`.
    pub fn push(&mut self, data: &[u8], dest: SocketAddr) -> bool {
        let Some(buf) = self.next_buf().filter(|buf| data.len() <= buf.len()) else {
            return false;
        };
        buf[..data.len()].copy_from_slice(data);
        self.commit(data.len(), dest);
        true
    }

    /// The number of datagrams queued.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything queued (UDP may lose datagrams when the socket stays full).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Sends everything queued with as few `sendmmsg` calls as possible.
    /// Datagrams the kernel refuses with a per-datagram error (EHOSTUNREACH,
    /// EMSGSIZE, ECONNREFUSED, a foreign address family, ...) are dropped and
    /// counted. On `WouldBlock` the unsent rest stays queued, in order; its
    /// counts carry over to the next `Ok`, which reports all since the last
    /// `Ok`. EBADF/ENOTSOCK (a broken socket) empty the batch and are returned.
    pub fn flush(&mut self, fd: BorrowedFd<'_>) -> io::Result<FlushStats> {
        self.slots.prepare(0..self.len);
        let mut head = 0;
        while head < self.len {
            let hdrs = &mut self.slots.hdrs[head..self.len];
            // SAFETY: `prepare` pointed headers 0..len at this batch's own
            // buffers and addresses; nothing has touched them since.
            match retry(|| unsafe { calls::send_many(fd.as_raw_fd(), hdrs) }) {
                Ok(n) => (self.stats.sent, head) = (self.stats.sent + n, head + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.keep_from(head);
                    return Err(e);
                }
                // The socket itself is unusable: nothing queued can go out.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) => {
                    (self.len, self.stats) = (0, FlushStats::default());
                    return Err(e);
                }
                // sendmmsg stops at the first refused datagram and reports it
                // on the next call: skip it and carry on. UDP is best effort.
                Err(_) => (self.stats.dropped, head) = (self.stats.dropped + 1, head + 1),
            }
        }
        self.len = 0;
        Ok(mem::take(&mut self.stats))
    }

    /// Sends queued datagrams `range` on `fd`, for batches whose datagrams go out of different
    /// sockets (see `forward::ForwardBatch`); the queue itself is left as it is. Returns how
    /// many the kernel took: refused datagrams are skipped, and on a full socket buffer the
    /// rest of the range is dropped, as a router would.
    pub fn send_range(&mut self, fd: BorrowedFd<'_>, range: Range<usize>) -> usize {
        let end = range.end.min(self.len);
        let mut head = range.start;
        self.slots.prepare(head..end);
        let mut sent = 0;
        while head < end {
            let hdrs = &mut self.slots.hdrs[head..end];
            // SAFETY: `prepare` pointed headers head..end at this batch's own buffers and
            // addresses; nothing has touched them since.
            match retry(|| unsafe { calls::send_many(fd.as_raw_fd(), hdrs) }) {
                Ok(n) => (sent, head) = (sent + n, head + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK)) => break,
                Err(_) => head += 1,
            }
        }
        sent
    }

    /// Drops the first `head` datagrams (already sent or refused) and moves the
    /// rest to the front, keeping their order.
    fn keep_from(&mut self, head: usize) {
        let s = &mut self.slots;
        let m = s.max_len;
        for (j, i) in (head..self.len).enumerate() {
            let (start, len) = (s.starts[i], s.lens[i]);
            s.bufs
                .copy_within(i * m + start..i * m + start + len, j * m);
            s.starts[j] = 0;
            s.lens[j] = len;
            s.addrs[j] = s.addrs[i];
            s.addr_lens[j] = s.addr_lens[i];
        }
        self.len -= head;
    }
}

/// One buffer, payload length, C address and message header per datagram.
struct Slots {
    max_len: usize,
    bufs: Box<[u8]>,
    /// Where each datagram starts inside its buffer (0 unless sent with `commit_at`).
    starts: Box<[usize]>,
    lens: Box<[usize]>,
    addrs: Box<[libc::sockaddr_storage]>,
    addr_lens: Box<[libc::socklen_t]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[calls::Hdr]>,
    /// Whether the headers' fixed pointers are set (see `prepare`).
    linked: bool,
}

// SAFETY: the raw pointers inside `iovs` and `hdrs` only ever point into boxed
// slices owned by the same `Slots`, are rewritten right before every syscall
// and are never dereferenced by Rust code; moving `Slots` moves their targets.
unsafe impl Send for Slots {}

impl Slots {
    fn new(count: usize, max_len: usize) -> Self {
        let count = count.clamp(1, MAX_BATCH);
        let max_len = max_len.min(MAX_DATAGRAM);
        Self {
            max_len,
            bufs: vec![0; count * max_len].into_boxed_slice(),
            starts: vec![0; count].into_boxed_slice(),
            lens: vec![0; count].into_boxed_slice(),
            addrs: zeroed_slice(count),
            addr_lens: vec![0; count].into_boxed_slice(),
            iovs: zeroed_slice(count),
            hdrs: zeroed_slice(count),
            linked: false,
        }
    }

    fn count(&self) -> usize {
        self.lens.len()
    }

    /// Points headers `range` at their buffers (`lens` bytes from `starts`) and addresses
    /// (`addr_lens` bytes). The fixed links (address slot, iovec, no control data) are set on
    /// the first call only: the boxed slices never move, so they stay valid.
    fn prepare(&mut self, range: Range<usize>) {
        if !self.linked {
            let iov_ptr = self.iovs.as_mut_ptr();
            let addr_ptr = self.addrs.as_mut_ptr();
            for (i, hdr) in self.hdrs.iter_mut().enumerate() {
                let msg = &mut hdr.msg_hdr;
                msg.msg_name = addr_ptr.wrapping_add(i).cast();
                msg.msg_iov = iov_ptr.wrapping_add(i);
                msg.msg_iovlen = 1;
                msg.msg_control = ptr::null_mut();
                msg.msg_controllen = 0;
            }
            self.linked = true;
        }
        let base = self.bufs.as_mut_ptr();
        for i in range {
            let iov = &mut self.iovs[i];
            iov.iov_base = base.wrapping_add(i * self.max_len + self.starts[i]).cast();
            iov.iov_len = self.lens[i];
            let hdr = &mut self.hdrs[i];
            hdr.msg_hdr.msg_namelen = self.addr_lens[i];
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
    }
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots")
            .field("count", &self.count())
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

/// Repeats a batch syscall interrupted by a signal; no message moved at all
/// is reported as `WouldBlock`.
fn retry(mut call: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(0) => return Err(io::ErrorKind::WouldBlock.into()),
            result => return result,
        }
    }
}

/// Writes `dest` as a C socket address; returns its length.
fn encode(dest: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    // Only the family's own bytes are written (16 or 28, not all 128): this runs per datagram.
    match dest {
        SocketAddr::V4(a) => {
            // SAFETY: `sockaddr_storage` is large and aligned enough for any sockaddr.
            let sin = unsafe { &mut *ptr::from_mut(storage).cast::<libc::sockaddr_in>() };
            // SAFETY: all-zero is a valid `sockaddr_in` (it has padding bytes to clear).
            *sin = unsafe { mem::zeroed() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &mut *ptr::from_mut(storage).cast::<libc::sockaddr_in6>() };
            // SAFETY: all-zero is a valid `sockaddr_in6`.
            *sin6 = unsafe { mem::zeroed() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads a C socket address written by the kernel; `None` for other families.
fn decode(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a `sockaddr_in`, and
            // `sockaddr_storage` is large and aligned enough for any sockaddr.
            let sin = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(sin.sin_port)).into())
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for `sockaddr_in6`.
            let sin6 = unsafe { &*ptr::from_ref(storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// A boxed slice of C structs, all zero.
fn zeroed_slice<T: ZeroValid>(n: usize) -> Box<[T]> {
    // SAFETY: all-zero bytes are a valid `T` (see `ZeroValid`).
    (0..n).map(|_| unsafe { mem::zeroed() }).collect()
}

/// C structs of integers and raw pointers: all-zero bytes are a valid value.
trait ZeroValid {}
impl ZeroValid for libc::sockaddr_storage {}
impl ZeroValid for libc::iovec {}
impl ZeroValid for calls::Hdr {}

/// The syscalls. Safety contract of each function: every header must point at
/// live, exclusively owned buffers and addresses of the sizes it states.
mod calls {
    use std::{io, os::fd::RawFd};

    /// One message of a `recvmmsg`/`sendmmsg` vector.
    pub(super) type Hdr = libc::mmsghdr;

    // The calls go through `syscall(2)` rather than glibc's wrappers: those are thread
    // cancellation points, and in a multi-threaded process every call pays for enabling and
    // disabling asynchronous cancellation (1.4% of a worker's CPU at 40k pps). Nothing here
    // is ever cancelled.

    /// One `recvmmsg`, without blocking; returns how many were received.
    pub(super) unsafe fn recv_many(fd: RawFd, hdrs: &mut [Hdr]) -> io::Result<usize> {
        let (ptr, vlen) = (hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint);
        let null = std::ptr::null_mut::<libc::timespec>();
        // SAFETY: guaranteed by the caller; a null timeout means none.
        let n =
            unsafe { libc::syscall(libc::SYS_recvmmsg, fd, ptr, vlen, libc::MSG_DONTWAIT, null) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// One `sendmmsg`, without blocking; returns how many were sent before the
    /// first refusal (which the next call reports).
    pub(super) unsafe fn send_many(fd: RawFd, hdrs: &mut [Hdr]) -> io::Result<usize> {
        let (ptr, vlen) = (hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint);
        // SAFETY: guaranteed by the caller.
        let n = unsafe { libc::syscall(libc::SYS_sendmmsg, fd, ptr, vlen, libc::MSG_DONTWAIT) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;
    use std::time::Duration;

    fn bound(ip: &str) -> UdpSocket {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_nonblocking(true).unwrap();
        sock
    }

    fn client(ip: &str) -> UdpSocket {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        sock
    }

    fn round_trip_of_32(ip: &str) {
        let server = bound(ip);
        let server_addr = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..32).map(|_| client(ip)).collect();
        for (i, c) in clients.iter().enumerate() {
            c.send_to(format!("ping {i}").as_bytes(), server_addr)
                .unwrap();
        }

        let mut rx = RecvBatch::new(32, 1500);
        let mut got = Vec::new();
        while got.len() < 32 {
            let n = rx.recv(server.as_fd()).unwrap();
            assert_eq!(rx.len(), n);
            for i in 0..n {
                let (payload, from) = rx.datagram(i);
                got.push((payload.to_vec(), from));
            }
        }
        for (i, c) in clients.iter().enumerate() {
            let from = c.local_addr().unwrap();
            let (payload, _) = got.iter().find(|(_, f)| *f == from).unwrap();
            assert_eq!(payload, format!("ping {i}").as_bytes());
        }

        let mut tx = SendBatch::new(32, 1500);
        for (payload, from) in &got {
            let mut reply = payload.clone();
            reply.reverse();
            assert!(tx.push(&reply, *from));
        }
        assert_eq!(tx.len(), 32);
        let stats = tx.flush(server.as_fd()).unwrap();
        assert_eq!(
            stats,
            FlushStats {
                sent: 32,
                dropped: 0
            }
        );
        assert!(tx.is_empty());

        let mut buf = [0u8; 64];
        for (i, c) in clients.iter().enumerate() {
            let (n, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, server_addr);
            let mut expected = format!("ping {i}").into_bytes();
            expected.reverse();
            assert_eq!(&buf[..n], expected.as_slice());
        }
    }

    #[test]
    fn batch_of_32_round_trips_with_distinct_payloads_and_sources_over_ipv4() {
        round_trip_of_32("127.0.0.1");
    }

    #[test]
    fn batch_of_32_round_trips_with_distinct_payloads_and_sources_over_ipv6() {
        round_trip_of_32("::1");
    }

    #[test]
    fn recv_on_an_empty_socket_is_would_block() {
        let server = bound("127.0.0.1");
        let mut rx = RecvBatch::new(8, 1500);
        let err = rx.recv(server.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(rx.is_empty());
    }

    #[test]
    fn truncated_datagram_gets_an_empty_payload() {
        let server = bound("127.0.0.1");
        let c = client("127.0.0.1");
        let to = server.local_addr().unwrap();
        c.send_to(&[7u8; 100], to).unwrap();
        c.send_to(b"tiny", to).unwrap();

        let mut rx = RecvBatch::new(4, 8);
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 2);
        assert_eq!(rx.datagram(0), (&[][..], c.local_addr().unwrap()));
        assert_eq!(rx.datagram(1), (&b"tiny"[..], c.local_addr().unwrap()));
    }

    #[test]
    fn recv_takes_at_most_count_and_leaves_the_rest_queued() {
        let server = bound("127.0.0.1");
        let c = client("127.0.0.1");
        for i in 0..6u8 {
            c.send_to(&[i], server.local_addr().unwrap()).unwrap();
        }
        let mut rx = RecvBatch::new(4, 16);
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 4);
        assert_eq!(rx.datagram(3).0, &[3]);
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 2);
        assert_eq!(rx.datagram(1).0, &[5]);
    }

    #[test]
    fn slots_used_by_short_datagrams_take_full_sized_ones_next_time() {
        let server = bound("127.0.0.1");
        let c = client("127.0.0.1");
        let to = server.local_addr().unwrap();
        let mut rx = RecvBatch::new(4, 1000);
        for round in 0..3u8 {
            let n = usize::from(round) + 1;
            for i in 0..n {
                c.send_to(&[round; 3][..1 + i % 3], to).unwrap();
            }
            assert_eq!(rx.recv(server.as_fd()).unwrap(), n);
        }
        let big = [9u8; 1000];
        for _ in 0..4 {
            c.send_to(&big, to).unwrap();
        }
        assert_eq!(rx.recv(server.as_fd()).unwrap(), 4);
        for i in 0..4 {
            assert_eq!(rx.datagram(i), (&big[..], c.local_addr().unwrap()));
        }
    }

    #[test]
    fn datagram_mut_edits_the_payload_in_place() {
        let server = bound("127.0.0.1");
        let c = client("127.0.0.1");
        c.send_to(b"abc", server.local_addr().unwrap()).unwrap();
        let mut rx = RecvBatch::new(2, 16);
        rx.recv(server.as_fd()).unwrap();
        rx.datagram_mut(0).0[0] = b'x';
        assert_eq!(rx.datagram(0).0, b"xbc");
    }

    #[test]
    fn full_send_batch_refuses_more_until_flushed() {
        let server = bound("127.0.0.1");
        let c = client("127.0.0.1");
        let to = c.local_addr().unwrap();
        let mut tx = SendBatch::new(2, 4);
        assert!(!tx.push(b"too long", to));
        assert!(tx.push(b"one", to));
        let buf = tx.next_buf().unwrap();
        assert_eq!(buf.len(), 4);
        buf[..3].copy_from_slice(b"two");
        tx.commit(3, to);
        assert!(tx.next_buf().is_none());
        assert!(!tx.push(b"3", to));
        assert_eq!(tx.len(), 2);

        assert_eq!(tx.flush(server.as_fd()).unwrap().sent, 2);
        assert!(tx.next_buf().is_some());
        let mut buf = [0u8; 8];
        assert_eq!(c.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"one");
        assert_eq!(c.recv(&mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"two");
    }

    #[test]
    fn flush_of_an_empty_batch_sends_nothing() {
        let server = bound("127.0.0.1");
        let mut tx = SendBatch::new(4, 16);
        assert_eq!(tx.flush(server.as_fd()).unwrap(), FlushStats::default());
    }

    #[test]
    fn refused_datagram_is_dropped_and_the_rest_still_sent() {
        let server = bound("127.0.0.1");
        let c = client("127.0.0.1");
        let to = c.local_addr().unwrap();
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let mut tx = SendBatch::new(4, 16);
        assert!(tx.push(b"a", to));
        assert!(tx.push(b"b", v6)); // a v4 socket cannot send to a v6 address
        assert!(tx.push(b"c", to));
        let stats = tx.flush(server.as_fd()).unwrap();
        assert_eq!(
            stats,
            FlushStats {
                sent: 2,
                dropped: 1
            }
        );
        let mut buf = [0u8; 8];
        c.recv(&mut buf).unwrap();
        assert_eq!(buf[0], b'a');
        c.recv(&mut buf).unwrap();
        assert_eq!(buf[0], b'c');
    }

    #[test]
    fn keep_from_moves_the_unsent_rest_to_the_front_in_order() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "[::1]:2000".parse().unwrap();
        let mut tx = SendBatch::new(4, 8);
        assert!(tx.push(b"one", a));
        assert!(tx.push(b"two", a));
        assert!(tx.push(b"three", b));
        tx.keep_from(1);
        assert_eq!(tx.len(), 2);
        assert_eq!(&tx.slots.bufs[..3], b"two");
        assert_eq!(&tx.slots.bufs[8..13], b"three");
        assert_eq!(decode(&tx.slots.addrs[0], tx.slots.addr_lens[0]), Some(a));
        assert_eq!(decode(&tx.slots.addrs[1], tx.slots.addr_lens[1]), Some(b));
    }

    #[test]
    fn addresses_survive_encode_and_decode() {
        for text in ["127.0.0.1:3478", "[2001:db8::1]:5349", "[::ffff:1.2.3.4]:1"] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut storage = zeroed_slice::<libc::sockaddr_storage>(1);
            let len = encode(addr, &mut storage[0]);
            assert_eq!(decode(&storage[0], len), Some(addr));
        }
    }

    #[test]
    fn batches_can_move_to_another_thread() {
        fn is_send<T: Send>() {}
        is_send::<RecvBatch>();
        is_send::<SendBatch>();
    }
}
