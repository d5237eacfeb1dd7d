//! Codec micro-benchmarks: parsing, integrity and writing of the messages on the hot path.
//!
//! Run with `cargo bench --bench codec`; the allocation profiler reports allocations per
//! iteration, which must stay at zero (DESIGN.md: the codec never allocates).

use std::hint::black_box;
use std::net::SocketAddr;

use divan::Bencher;
use turnstone::auth::{PasswordAlgorithm, long_term_key};
use turnstone::proto::{
    ChannelData, Class, Message, MessageType, MessageWriter, Method, TransactionId, attr,
    write_channel_data,
};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

const TID: TransactionId = TransactionId([0x5a; 12]);
const CLIENT: &str = "203.0.113.7:51234";
const RELAYED: &str = "192.0.2.10:50002";
/// A realistic nonce length (the server's nonces are 32 printable bytes).
const NONCE: &[u8] = b"obMatJos2gAAAadlbaVJ5IzdpZfeGD0t";
const SOFTWARE: &str = "turnstone 0.1.0";

fn md5_key() -> Vec<u8> {
    long_term_key(
        PasswordAlgorithm::Md5,
        b"alice",
        b"example.org",
        b"alice-pw",
    )
    .as_bytes()
    .to_vec()
}

/// A Binding request with FINGERPRINT, as ICE agents send them (RFC 8489 §7.2.1).
fn binding_request() -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let ty = MessageType::new(Method::BINDING, Class::Request);
    let mut w = MessageWriter::new(&mut buf, ty, TID).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// An authenticated Allocate: REQUESTED-TRANSPORT, USERNAME, REALM, NONCE, MESSAGE-INTEGRITY,
/// FINGERPRINT (RFC 8656 §7.1, RFC 8489 §9.2.4).
fn allocate_request() -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let ty = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut w = MessageWriter::new(&mut buf, ty, TID).unwrap();
    w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
    w.add(attr::USERNAME, b"alice").unwrap();
    w.add(attr::REALM, b"example.org").unwrap();
    w.add(attr::NONCE, NONCE).unwrap();
    w.add_integrity(&md5_key()).unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

#[divan::bench]
fn parse_binding_request(bencher: Bencher) {
    let pkt = binding_request();
    bencher.bench(|| Message::parse(black_box(&pkt)).map(|m| m.transaction_id()));
}

#[divan::bench]
fn parse_allocate_authenticated(bencher: Bencher) {
    let pkt = allocate_request();
    bencher.bench(|| {
        let msg = Message::parse(black_box(&pkt)).ok()?;
        // What the server reads before checking the MAC.
        Some((
            msg.username(),
            msg.realm(),
            msg.nonce(),
            msg.requested_transport(),
        ))
    });
}

#[divan::bench]
fn verify_allocate_integrity(bencher: Bencher) {
    let pkt = allocate_request();
    let key = md5_key();
    let msg = Message::parse(&pkt).unwrap();
    assert!(msg.verify_integrity(&key).is_ok());
    bencher.bench(|| black_box(&msg).verify_integrity(black_box(&key)));
}

#[divan::bench]
fn write_binding_success(bencher: Bencher) {
    let client: SocketAddr = CLIENT.parse().unwrap();
    let mut out = [0u8; 2048];
    bencher.bench_local(|| {
        let ty = MessageType::new(Method::BINDING, Class::Success);
        let mut w = MessageWriter::new(&mut out, ty, black_box(TID))?;
        w.add_xor_address(attr::XOR_MAPPED_ADDRESS, black_box(client))?;
        w.add(attr::SOFTWARE, SOFTWARE.as_bytes())?;
        w.add_fingerprint()?;
        Ok::<_, turnstone::proto::WriteError>(w.finish())
    });
}

#[divan::bench]
fn write_allocate_success_with_integrity(bencher: Bencher) {
    let client: SocketAddr = CLIENT.parse().unwrap();
    let relayed: SocketAddr = RELAYED.parse().unwrap();
    let key = md5_key();
    let mut out = [0u8; 2048];
    bencher.bench_local(|| {
        let ty = MessageType::new(Method::ALLOCATE, Class::Success);
        let mut w = MessageWriter::new(&mut out, ty, black_box(TID))?;
        w.add_xor_address(attr::XOR_RELAYED_ADDRESS, black_box(relayed))?;
        w.add_u32(attr::LIFETIME, 600)?;
        w.add_xor_address(attr::XOR_MAPPED_ADDRESS, black_box(client))?;
        w.add(attr::SOFTWARE, SOFTWARE.as_bytes())?;
        w.add_integrity(black_box(&key))?;
        w.add_fingerprint()?;
        Ok::<_, turnstone::proto::WriteError>(w.finish())
    });
}

/// Typical payloads: an Opus audio frame and a full-size video packet.
const PAYLOADS: [usize; 2] = [160, 1200];

#[divan::bench(args = PAYLOADS)]
fn parse_channel_data(bencher: Bencher, len: usize) {
    let mut pkt = vec![0xAB; 4 + len];
    write_channel_data(&mut pkt, 0x4000, len, false).unwrap();
    bencher.bench(|| ChannelData::parse(black_box(&pkt)).map(|cd| (cd.channel(), cd.data().len())));
}

#[divan::bench(args = PAYLOADS)]
fn write_channel_data_header(bencher: Bencher, len: usize) {
    // The payload already sits at buf[4..]; the header (and stream padding) goes around it.
    let mut buf = vec![0xAB; 4 + len + 4];
    bencher.bench_local(|| write_channel_data(black_box(&mut buf), 0x4000, black_box(len), true));
}
