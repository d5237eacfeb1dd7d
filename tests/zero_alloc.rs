//! The hot path allocates nothing: parsing requests, and relaying ChannelData, Send and peer
//! datagrams through the core (DESIGN.md §1). A counting global allocator proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use turnstone::auth::{PasswordAlgorithm, long_term_key};
use turnstone::core::testkit::{self, Harness};
use turnstone::core::{Handled, PEER_HEADROOM, PEER_TAILROOM, PeerAddr, PeerHandled, Settings};
use turnstone::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId, attr};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: defers to the system allocator; only counts calls on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let r = f();
    (ALLOCATIONS.with(Cell::get) - before, r)
}

const REALM: &str = "zero.test";
const USER: &str = "alice";
const PASS: &str = "secret";

fn request(
    method: Method,
    tid: u8,
    nonce: Option<&[u8]>,
    add: impl FnOnce(&mut MessageWriter<'_>),
) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(method, Class::Request),
        TransactionId([tid; 12]),
    )
    .unwrap();
    add(&mut w);
    if let Some(nonce) = nonce {
        w.add(attr::USERNAME, USER.as_bytes()).unwrap();
        w.add(attr::REALM, REALM.as_bytes()).unwrap();
        w.add(attr::NONCE, nonce).unwrap();
        let key = long_term_key(
            PasswordAlgorithm::Md5,
            USER.as_bytes(),
            REALM.as_bytes(),
            PASS.as_bytes(),
        );
        w.add_integrity(key.as_bytes()).unwrap();
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

#[test]
fn the_counter_sees_allocations() {
    let (count, v) = allocations_during(|| vec![1u8; 16]);
    assert_eq!(v.len(), 16);
    assert!(count >= 1);
}

#[test]
fn parsing_binding_and_allocate_requests_allocates_nothing() {
    let binding = request(Method::BINDING, 1, None, |_| {});
    let allocate = request(Method::ALLOCATE, 2, Some(b"nonce-value"), |w| {
        w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
    });
    let (count, ok) = allocations_during(|| {
        let b = Message::parse(&binding).is_ok();
        let a = Message::parse(&allocate)
            .map(|m| (m.username().is_some(), m.requested_transport().is_some()));
        b && a == Ok((true, true))
    });
    assert!(ok);
    assert_eq!(count, 0, "parsing allocated");
}

#[test]
fn relaying_channel_data_send_and_peer_datagrams_allocates_nothing() {
    // The session is set up with the core's test kit: a scripted client, relays and clock.
    let mut h = Harness::with_settings(Settings {
        relay_v6: None,
        policy: testkit::policy(&["127.0.0.0/8"]),
        max_permissions: 8,
        max_channels: 8,
        ..testkit::settings()
    });
    let mut alice = h.client("alice");
    let peer: SocketAddr = "127.0.0.1:40001".parse().unwrap();
    let relayed = h.allocate(&mut alice, &[]);
    h.bind(&mut alice, 0x4000, peer).ok();
    let relay = h.relays.id_of(relayed).unwrap();
    let client = alice.ft;
    let mut out = vec![0u8; 2048];

    let channel_data = [0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4];
    let mut send = vec![0u8; 128];
    let mut w = MessageWriter::new(
        &mut send,
        MessageType::new(Method::SEND, Class::Indication),
        TransactionId([9; 12]),
    )
    .unwrap();
    w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    w.add(attr::DATA, b"hello").unwrap();
    let send_len = w.finish();
    let unbound_peer: SocketAddr = "127.0.0.1:40002".parse().unwrap();
    let mut peer_buf = vec![0u8; PEER_HEADROOM + 1200 + PEER_TAILROOM];
    h.advance(Duration::from_secs(1));
    let later = h.now();
    let server = &mut h.server;

    let (count, results) = allocations_during(|| {
        let mut ok = 0;
        for _ in 0..1000 {
            let to_peer = server.handle_client(later, client, &channel_data, &mut out);
            ok += usize::from(
                matches!(to_peer, Handled::Forward { payload, .. } if payload == (4..8)),
            );
            let sent = server.handle_client(later, client, &send[..send_len], &mut out);
            ok += usize::from(matches!(sent, Handled::Forward { .. }));
            let range = PEER_HEADROOM..PEER_HEADROOM + 1200;
            let channel =
                server.handle_peer(later, relay, PeerAddr(peer), &mut peer_buf, range.clone());
            ok += usize::from(matches!(channel, PeerHandled::ToClient { .. }));
            let indication =
                server.handle_peer(later, relay, PeerAddr(unbound_peer), &mut peer_buf, range);
            ok += usize::from(matches!(indication, PeerHandled::ToClient { .. }));
        }
        ok
    });
    assert_eq!(results, 4000, "every packet relayed");
    assert_eq!(
        count, 0,
        "the data plane allocated {count} times for 4000 packets"
    );
}
