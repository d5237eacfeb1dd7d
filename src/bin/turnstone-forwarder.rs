//! `turnstone-forwarder`: the floor of `cargo bench --bench compare`. A UDP forwarder with no
//! TURN logic at all: one thread, raw epoll, recvmmsg/sendmmsg, a static channel map.
//!
//! Lane i (set up by a raw-mode hello, see `turnstone::loadgen::Hello`) owns relay socket i,
//! connected to the peer the hello named. ChannelData on channel 0x4000 + i from a client goes
//! out of relay socket i; whatever relay socket i receives goes back as ChannelData on that
//! channel to the address lane i last sent from (RFC 8656 §12 framing, no padding over UDP).
//!
//! Usage: `turnstone-forwarder --listen 127.0.0.1:PORT [--max-lanes N]`. Runs until killed.

use std::io;
use std::mem;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::ExitCode;

use socket2::SockRef;
use turnstone::loadgen::{FIRST_RAW_CHANNEL, HELLO_LEN, Hello, HelloKind, MAX_RAW_LANES};

/// Datagrams per recvmmsg/sendmmsg.
const BATCH: usize = 64;
/// Bytes per datagram slot (payloads up to 1500 plus the 4-byte ChannelData header).
const SLOT: usize = 2048;
/// Receive calls per ready socket per wakeup, so one busy socket cannot starve the rest.
const ROUNDS: usize = 8;
/// epoll token of the client-facing socket; relay sockets use their lane index.
const LISTENER: u64 = u64::MAX;
/// Socket buffers asked for (the kernel caps them at rmem_max/wmem_max).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

fn main() -> ExitCode {
    match parse_args().and_then(|(listen, lanes)| Forwarder::new(listen, lanes)?.run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("turnstone-forwarder: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> io::Result<(SocketAddrV4, usize)> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
    let mut listen = None;
    let mut lanes = MAX_RAW_LANES;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| bad("every option takes a value"))?;
        match arg.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|_| bad("--listen IPv4:PORT"))?),
            "--max-lanes" => lanes = value.parse().map_err(|_| bad("--max-lanes N"))?,
            _ => return Err(bad("usage: --listen IPv4:PORT [--max-lanes N]")),
        }
    }
    let listen = listen.ok_or_else(|| bad("--listen IPv4:PORT is required"))?;
    Ok((listen, lanes.min(MAX_RAW_LANES)))
}

/// One lane: its relay socket and the client address its ChannelData goes back to.
struct Lane {
    socket: UdpSocket,
    client: libc::sockaddr_in,
}

/// Preallocated mmsghdr vectors over `BATCH` slots of `SLOT` bytes.
struct Batch {
    bufs: Vec<u8>,
    iov: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_in>,
    hdrs: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new() -> Self {
        // SAFETY: iovec, sockaddr_in and mmsghdr are plain C structs; all-zero is valid.
        let zero_iov: libc::iovec = unsafe { mem::zeroed() };
        let zero_name: libc::sockaddr_in = unsafe { mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        Self {
            bufs: vec![0; BATCH * SLOT],
            iov: vec![zero_iov; BATCH],
            names: vec![zero_name; BATCH],
            hdrs: vec![zero_hdr; BATCH],
        }
    }

    /// Points header `i` at `len` bytes of its slot from `offset`, with its address.
    fn aim(&mut self, i: usize, offset: usize, len: usize, named: bool) {
        let base = self.bufs.as_mut_ptr();
        // `i < BATCH` and `offset + len <= SLOT` at every call site: inside `bufs`.
        self.iov[i] = libc::iovec {
            iov_base: base.wrapping_add(i * SLOT + offset).cast(),
            iov_len: len,
        };
        let hdr = &mut self.hdrs[i].msg_hdr;
        hdr.msg_iov = &mut self.iov[i];
        hdr.msg_iovlen = 1;
        hdr.msg_control = std::ptr::null_mut();
        hdr.msg_controllen = 0;
        hdr.msg_flags = 0;
        if named {
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
            hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        } else {
            hdr.msg_name = std::ptr::null_mut();
            hdr.msg_namelen = 0;
        }
        self.hdrs[i].msg_len = 0;
    }

    /// recvmmsg into slots `from..`, each at `offset`; the number received (0: none queued).
    fn recv(&mut self, fd: RawFd, from: usize, offset: usize, named: bool) -> io::Result<usize> {
        for i in from..BATCH {
            self.aim(i, offset, SLOT - offset, named);
        }
        let want = (BATCH - from) as libc::c_uint;
        // SAFETY: headers `from..BATCH` point at live iovecs, buffers and names of `self`.
        let n = unsafe {
            let hdrs = self.hdrs.as_mut_ptr().add(from);
            libc::recvmmsg(fd, hdrs, want, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        done_or_would_block(n)
    }

    /// sendmmsg of headers `from..to` (already aimed) on `fd`; datagrams the kernel refuses
    /// are dropped, as a router would.
    fn send(&mut self, fd: RawFd, mut from: usize, to: usize) {
        while from < to {
            let want = (to - from) as libc::c_uint;
            // SAFETY: headers `from..to` were aimed at live iovecs, buffers and names.
            let n = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr().add(from), want, 0) };
            match done_or_would_block(n) {
                Ok(0) | Err(_) => from += 1, // skip the datagram that failed
                Ok(sent) => from += sent,
            }
        }
    }

    fn len(&self, i: usize) -> usize {
        self.hdrs[i].msg_len as usize
    }
}

/// A syscall count, with EAGAIN as 0.
fn done_or_would_block(n: libc::c_int) -> io::Result<usize> {
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(e),
    }
}

struct Forwarder {
    epoll: OwnedFd,
    listener: UdpSocket,
    lanes: Vec<Option<Lane>>,
    max_lanes: usize,
    /// Client → peer: received from the listener, sent in runs per relay socket.
    up: Batch,
    /// Peer → client: received from relay sockets, sent on the listener.
    down: Batch,
    down_len: usize,
}

impl Forwarder {
    fn new(listen: SocketAddrV4, max_lanes: usize) -> io::Result<Self> {
        let listener = open(SocketAddr::V4(listen))?;
        // SAFETY: no pointers; a non-negative result is a new fd that we own.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        let me = Self {
            epoll,
            listener,
            lanes: Vec::new(),
            max_lanes,
            up: Batch::new(),
            down: Batch::new(),
            down_len: 0,
        };
        me.watch(me.listener.as_raw_fd(), LISTENER)?;
        Ok(me)
    }

    fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both fds are open; the kernel only reads `event`.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn run(&mut self) -> io::Result<()> {
        // SAFETY: epoll_event is a plain C struct.
        let mut events = vec![unsafe { mem::zeroed::<libc::epoll_event>() }; 256];
        loop {
            // A timeout, not a busy loop: an idle forwarder costs no CPU.
            // SAFETY: `events` has 256 writable slots.
            let n =
                unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 256, 1000) };
            let n = done_or_would_block(n)?;
            for event in &events[..n] {
                let token = event.u64;
                if token == LISTENER {
                    self.drain_clients()?;
                } else {
                    self.drain_relay(token as usize)?;
                }
            }
            self.flush_down();
        }
    }

    /// ChannelData from clients → relay sockets; hellos set lanes up.
    fn drain_clients(&mut self) -> io::Result<()> {
        let fd = self.listener.as_raw_fd();
        for _ in 0..ROUNDS {
            let n = self.up.recv(fd, 0, 0, true)?;
            if n == 0 {
                break;
            }
            // Runs of datagrams for the same lane go out in one sendmmsg.
            let mut run: Option<(usize, usize, usize)> = None; // (lane, first header, next)
            for i in 0..n {
                let len = self.up.len(i);
                let slot = &self.up.bufs[i * SLOT..i * SLOT + len.min(SLOT)];
                if len == HELLO_LEN {
                    if let Some(hello) = Hello::decode(slot) {
                        self.hello(hello, self.up.names[i])?;
                        continue;
                    }
                }
                if len < 4 || slot[0] & 0xC0 != 0x40 {
                    continue; // not ChannelData (RFC 8656 §12: first two bits 01)
                }
                let channel = u16::from_be_bytes([slot[0], slot[1]]);
                let data_len = usize::from(u16::from_be_bytes([slot[2], slot[3]]));
                let lane = usize::from(channel.wrapping_sub(FIRST_RAW_CHANNEL));
                let Some(Some(l)) = self.lanes.get_mut(lane) else {
                    continue;
                };
                if 4 + data_len > len {
                    continue;
                }
                l.client = self.up.names[i];
                // Reuse header `at` (at <= i) for the outgoing datagram: data only, no name.
                let at = match run {
                    Some((l, first, next)) if l == lane => {
                        run = Some((l, first, next + 1));
                        next
                    }
                    Some((l, first, next)) => {
                        self.send_up(l, first, next);
                        run = Some((lane, next, next + 1));
                        next
                    }
                    None => {
                        run = Some((lane, 0, 1));
                        0
                    }
                };
                self.move_up(i, at, data_len);
            }
            if let Some((l, first, next)) = run {
                self.send_up(l, first, next);
            }
            if n < BATCH {
                break; // drained: level-triggered epoll reports anything newer
            }
        }
        Ok(())
    }

    /// Makes header `at` carry datagram `i`'s ChannelData payload (`at <= i`).
    fn move_up(&mut self, i: usize, at: usize, data_len: usize) {
        if at != i {
            self.up
                .bufs
                .copy_within(i * SLOT + 4..i * SLOT + 4 + data_len, at * SLOT + 4);
        }
        self.up.aim(at, 4, data_len, false);
    }

    fn send_up(&mut self, lane: usize, first: usize, next: usize) {
        if let Some(Some(l)) = self.lanes.get(lane) {
            let fd = l.socket.as_raw_fd();
            self.up.send(fd, first, next);
        }
    }

    /// Relay socket `lane` → ChannelData to its client, queued on the listener.
    fn drain_relay(&mut self, lane: usize) -> io::Result<()> {
        let Some(Some(l)) = self.lanes.get(lane) else {
            return Ok(());
        };
        let fd = l.socket.as_raw_fd();
        let client = l.client;
        let channel = FIRST_RAW_CHANNEL.wrapping_add(lane as u16).to_be_bytes();
        for _ in 0..ROUNDS {
            if self.down_len == BATCH {
                self.flush_down();
            }
            let from = self.down_len;
            let n = self.down.recv(fd, from, 4, false)?;
            if n == 0 {
                break;
            }
            for i in from..from + n {
                let len = self.down.len(i);
                let slot = &mut self.down.bufs[i * SLOT..i * SLOT + 4];
                slot[..2].copy_from_slice(&channel);
                slot[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                self.down.names[i] = client;
                self.down.aim(i, 0, 4 + len, true);
            }
            self.down_len += n;
            if self.down_len < BATCH {
                break; // drained
            }
        }
        Ok(())
    }

    fn flush_down(&mut self) {
        let len = mem::take(&mut self.down_len);
        self.down.send(self.listener.as_raw_fd(), 0, len);
    }

    /// Sets lane `hello.index` up (or re-aims it at a new peer) and welcomes the client.
    fn hello(&mut self, hello: Hello, from: libc::sockaddr_in) -> io::Result<()> {
        let index = hello.index as usize;
        if hello.kind != HelloKind::Hello || index >= self.max_lanes {
            return Ok(());
        }
        if self.lanes.len() <= index {
            self.lanes.resize_with(index + 1, || None);
        }
        if self.lanes[index].is_none() {
            let ip = *self.listener_addr()?.ip();
            let socket = open(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
            self.watch(socket.as_raw_fd(), index as u64)?;
            self.lanes[index] = Some(Lane {
                socket,
                client: from,
            });
        }
        let Some(lane) = self.lanes[index].as_mut() else {
            return Ok(());
        };
        lane.client = from;
        lane.socket.connect(hello.addr)?;
        let SocketAddr::V4(relay) = lane.socket.local_addr()? else {
            return Ok(());
        };
        let welcome = Hello {
            kind: HelloKind::Welcome,
            index: hello.index,
            addr: relay,
        };
        let to = SocketAddrV4::new(
            u32::from_be(from.sin_addr.s_addr).into(),
            u16::from_be(from.sin_port),
        );
        let _ = self.listener.send_to(&welcome.encode(), to);
        Ok(())
    }

    fn listener_addr(&self) -> io::Result<SocketAddrV4> {
        match self.listener.local_addr()? {
            SocketAddr::V4(a) => Ok(a),
            SocketAddr::V6(_) => Err(io::Error::other("the listener must be IPv4")),
        }
    }
}

/// A non-blocking UDP socket with large buffers.
fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)?;
    let sock = SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true)?;
    Ok(socket)
}
