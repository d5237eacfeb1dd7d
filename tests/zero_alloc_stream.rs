//! Relaying over TCP and over TLS allocates nothing per packet, in either direction, in the
//! running server: its data-plane thread, which serves the connection and its relay, and
//! everything else (DESIGN.md §1, issue 14 item 3). A counting global allocator counts every
//! thread of the process; the client and the echoing peer of the measured phase allocate
//! nothing themselves, so what is counted is the server's. Over TLS that holds because the
//! records are sealed and opened in the connection's own buffers after rustls's handshake
//! (`io/tls_records.rs`); rustls itself allocates a buffer per record.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turnstone::core::Transport;
use turnstone::proto::{Method, attr};

#[allow(dead_code)]
#[path = "it/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "it/common.rs"]
mod common;

use client::{Conn, TurnClient, channel_data};
use common::{PASSWORD, TestServer, USER};

struct Counting;

/// Every thread's allocations.
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's: the test's client (a current_thread runtime) runs on the test's thread,
    /// so the server's count is the difference. It matters over TLS, where the client's
    /// rustls allocates too.
    static MINE: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: a thread being torn down has no thread-locals left, and is not the test's.
    let _ = MINE.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations by every thread but this one (the server's, here).
fn server_allocations() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed) - MINE.with(Cell::get)
}

/// The tests run one at a time: the counter is process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Round trips before counting: every buffer on the path reaches its working size.
const WARM_UP: usize = 2_000;
/// Round trips of the shorter measured phase; the longer one makes four times as many.
const N: usize = 2_000;
/// Allocations the server may make in a measured phase whatever its length: once a second
/// the data-plane thread publishes metrics and does housekeeping, and the test's own runtime
/// may grow a timer or waker list once. Far below one per packet: a per-packet allocation
/// would count at least N.
const BACKGROUND: usize = 200;

/// A UDP peer that echoes every datagram, allocating nothing per datagram.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop2.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Allocates over `transport`, binds a channel to an echoing peer, warms up, then returns
/// the allocations counted during `N` and during `4 N` ChannelData round trips (one packet
/// relayed each way per round trip).
async fn allocations_per_phase(transport: Transport) -> (usize, usize) {
    let server = TestServer::start();
    let peer = Echo::start();
    let conn = Conn::connect(&server, transport).await;
    let mut client = TurnClient::new(conn, USER, PASSWORD);
    client.allocate().await;
    let peer_addr = peer.addr;
    let channel = 0x4001;
    client
        .request_ok(Method::CHANNEL_BIND, |w| {
            w.add_u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
                .unwrap();
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                .unwrap();
        })
        .await;
    let Conn::Stream { mut io, buf, .. } = client.conn else {
        panic!("a stream transport");
    };
    assert!(buf.is_empty(), "nothing pending after the ChannelBind");
    // 101 bytes: the stream's padding to 4 bytes is exercised both ways.
    let frame = channel_data(channel, &[0x5A; 101], true);
    let mut reply = vec![0u8; frame.len()];
    let mut round_trips = async |count: usize| {
        for _ in 0..count {
            io.write_all(&frame).await.unwrap();
            io.flush().await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), io.read_exact(&mut reply))
                .await
                .expect("the echo came back")
                .unwrap();
            assert_eq!(reply, frame);
        }
    };
    round_trips(WARM_UP).await;
    let before = server_allocations();
    round_trips(N).await;
    let short = server_allocations() - before;
    let before = server_allocations();
    round_trips(4 * N).await;
    let long = server_allocations() - before;
    (short, long)
}

/// Runs `allocations_per_phase` alone in the process, on a current_thread runtime of the
/// test's thread.
fn measure(transport: Transport) -> (usize, usize) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(allocations_per_phase(transport))
}

#[test]
fn relaying_over_tcp_allocates_nothing_per_packet_in_either_direction() {
    let (short, long) = measure(Transport::Tcp);
    println!(
        "TCP: {short} server allocations over {N} round trips, {long} over {}",
        4 * N
    );
    assert!(
        short <= BACKGROUND && long <= BACKGROUND,
        "allocations per phase must not grow with the packets relayed: {short} over {N} round trips, {long} over {}",
        4 * N
    );
}

#[test]
fn relaying_over_tls_allocates_nothing_per_packet_in_either_direction() {
    let (short, long) = measure(Transport::Tls);
    println!(
        "TLS: {short} server allocations over {N} round trips, {long} over {}",
        4 * N
    );
    assert!(
        short <= BACKGROUND && long <= BACKGROUND,
        "allocations per phase must not grow with the packets relayed: {short} over {N} round trips, {long} over {}",
        4 * N
    );
}
