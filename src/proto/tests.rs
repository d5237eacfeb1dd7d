//! Codec tests: RFC 5769 vectors, round trips, and one test per parse error.

use std::net::SocketAddr;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// RFC 5769 §2.1
fn sample_request() -> Vec<u8> {
    hex("00010058 2112a442 b7e7a701 bc34d686 fa87dfae
         80220010 5354554e 20746573 7420636c 69656e74
         00240004 6e0001ff
         80290008 932ff9b1 51263b36
         00060009 6576746a 3a683676 59202020
         00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
         80280004 e57a3bcf")
}

#[test]
fn rfc5769_sample_request_parses_and_verifies() {
    let buf = sample_request();
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(msg.software(), Some("STUN test client"));
    assert_eq!(msg.username().unwrap().unwrap(), b"evtj:h6vY");
    assert!(msg.unknown_required().is_empty(), "PRIORITY is understood");
    msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt").unwrap();
    assert_eq!(
        msg.verify_integrity(b"wrong"),
        Err(IntegrityError::Mismatch)
    );
}

#[test]
fn rfc5769_ipv4_response_parses_and_verifies() {
    let buf = hex("0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200008 0001a147 e112a643
         00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
         80280004 c07d4c96");
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.class(), Class::Success);
    let mapped = msg.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap().unwrap();
    assert_eq!(mapped, "192.0.2.1:32853".parse::<SocketAddr>().unwrap());
    msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt").unwrap();
}

#[test]
fn rfc5769_ipv6_response_parses_and_verifies() {
    let buf = hex("01010048 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
         00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
         80280004 c8fb0b4c");
    let msg = Message::parse(&buf).unwrap();
    let mapped = msg.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap().unwrap();
    assert_eq!(
        mapped,
        "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse::<SocketAddr>()
            .unwrap()
    );
    msg.verify_integrity(b"VOkJxbRl1RmTxUk/WvJxBt").unwrap();
}

#[test]
fn rfc5769_long_term_request_verifies_with_md5_key() {
    use md5::{Digest, Md5};
    let buf = hex("00010060 2112a442 78ad3433 c6ad72c0 29da412e
         00060012 e3839ee3 8388e383 aae38383 e382afe3 82b90000
         0015001c 662f2f34 39396b39 35346436 4f4c3334 6f4c3946 53547679 36347341
         0014000b 6578616d 706c652e 6f726700
         00080014 f6702465 6dd64a3e 02b8e071 2e85c9a2 8ca89666");
    let msg = Message::parse(&buf).unwrap();
    assert_eq!(msg.realm().unwrap().unwrap(), b"example.org");
    assert_eq!(
        msg.nonce().unwrap().unwrap(),
        b"f//499k954d6OL34oL9FSTvy64sA"
    );
    let user = msg.username().unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(user).unwrap(),
        "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}"
    );
    let mut h = Md5::new();
    h.update(user);
    h.update(b":example.org:TheMatrIX");
    let key = h.finalize();
    msg.verify_integrity(&key).unwrap();
}

fn tid() -> TransactionId {
    TransactionId([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
}

#[test]
fn written_message_round_trips_with_both_integrities_and_fingerprint() {
    let mut buf = [0u8; 512];
    let peer: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Request),
        tid(),
    )
    .unwrap();
    w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
    w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    w.add(attr::USERNAME, b"alice").unwrap();
    w.add(attr::SOFTWARE, b"odd").unwrap();
    w.add_integrity(b"key").unwrap();
    w.add_integrity_sha256(b"key").unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.method(), Method::ALLOCATE);
    assert_eq!(msg.transaction_id(), tid());
    assert_eq!(msg.requested_transport().unwrap().unwrap(), 17);
    assert_eq!(msg.peer_addresses().next().unwrap().unwrap(), peer);
    assert_eq!(msg.software(), Some("odd"));
    assert!(msg.has_integrity_sha256());
    msg.verify_integrity(b"key").unwrap();
    assert!(msg.verify_integrity(b"other").is_err());
}

#[test]
fn error_response_round_trips_code_and_unknown_attributes() {
    let mut buf = [0u8; 256];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Error),
        tid(),
    )
    .unwrap();
    w.add_error_code(error_code::UNKNOWN_ATTRIBUTE).unwrap();
    w.add_unknown_attributes(&[0x7777, 0x0042]).unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    let ec = msg.error_code().unwrap().unwrap();
    assert_eq!(ec.code, 420);
    assert_eq!(ec.reason, "Unknown Attribute");
    assert_eq!(
        msg.unknown_attributes().collect::<Vec<_>>(),
        vec![0x7777, 0x0042]
    );
}

#[test]
fn unknown_comprehension_required_attributes_are_collected_optional_ones_ignored() {
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid(),
    )
    .unwrap();
    w.add(0x7777, b"x").unwrap();
    w.add(0xC001, b"y").unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert_eq!(msg.unknown_required().as_slice(), &[0x7777]);
}

#[test]
fn attributes_after_message_integrity_are_ignored() {
    let mut buf = [0u8; 128];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid(),
    )
    .unwrap();
    w.add_integrity(b"k").unwrap();
    w.add(attr::USERNAME, b"late").unwrap();
    w.add(0x7777, b"late").unwrap();
    let n = w.finish();
    let msg = Message::parse(&buf[..n]).unwrap();
    assert!(msg.username().is_none());
    assert!(msg.unknown_required().is_empty());
}

fn binding_request() -> Vec<u8> {
    let mut buf = [0u8; 64];
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid(),
    )
    .unwrap();
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf[..n].to_vec()
}

#[test]
fn parse_error_too_short() {
    assert_eq!(Message::parse(&[0; 19]).unwrap_err(), ParseError::TooShort);
}

#[test]
fn parse_error_not_stun() {
    let mut b = binding_request();
    b[0] = 0x40;
    assert_eq!(Message::parse(&b).unwrap_err(), ParseError::NotStun);
}

#[test]
fn parse_error_bad_magic_cookie() {
    let mut b = binding_request();
    b[4] = 0;
    assert_eq!(Message::parse(&b).unwrap_err(), ParseError::BadMagicCookie);
}

#[test]
fn parse_error_length_mismatch_and_unaligned() {
    let mut b = binding_request();
    b.push(0);
    assert_eq!(Message::parse(&b).unwrap_err(), ParseError::BadLength);
    let mut b = binding_request();
    b[3] = 7;
    assert_eq!(Message::parse(&b).unwrap_err(), ParseError::BadLength);
}

#[test]
fn parse_error_truncated_attribute() {
    let mut b = hex("00010008 2112a442 000000000000000000000000 0006 0010 61626364");
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        ParseError::TruncatedAttribute
    );
    b.truncate(22);
    b[3] = 2;
    assert_eq!(Message::parse(&b).unwrap_err(), ParseError::BadLength);
}

#[test]
fn parse_error_misplaced_fingerprint() {
    let b = hex("00010010 2112a442 000000000000000000000000 80280004 00000000 00060004 61626364");
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        ParseError::MisplacedFingerprint
    );
}

#[test]
fn parse_error_bad_fingerprint() {
    let mut b = binding_request();
    let last = b.len() - 1;
    b[last] ^= 1;
    assert_eq!(Message::parse(&b).unwrap_err(), ParseError::BadFingerprint);
}

#[test]
fn parse_error_bad_integrity_length() {
    let b = hex("00010008 2112a442 000000000000000000000000 00080004 00000000");
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        ParseError::BadIntegrityLength
    );
    let b = hex("0001000c 2112a442 000000000000000000000000 001c0008 00000000 00000000");
    assert_eq!(
        Message::parse(&b).unwrap_err(),
        ParseError::BadIntegrityLength
    );
}

#[test]
fn bad_attribute_values_are_reported_by_getters() {
    let b = hex(
        "00010014 2112a442 000000000000000000000000 00120008 00030000 00000000 000d0002 00000000",
    );
    let msg = Message::parse(&b).unwrap();
    assert_eq!(
        msg.peer_addresses().next().unwrap(),
        Err(AttrError::BadFamily(attr::XOR_PEER_ADDRESS))
    );
    assert_eq!(
        msg.u32_attr(attr::LIFETIME).unwrap(),
        Err(AttrError::BadLength(attr::LIFETIME))
    );
}

#[test]
fn channel_data_parses_and_writes_with_stream_padding() {
    let mut buf = [0u8; 16];
    buf[4..9].copy_from_slice(b"hello");
    let n = write_channel_data(&mut buf, 0x4001, 5, true).unwrap();
    assert_eq!(n, 12);
    let cd = ChannelData::parse(&buf[..n]).unwrap();
    assert_eq!(cd.channel(), 0x4001);
    assert_eq!(cd.data(), b"hello");
    assert_eq!(write_channel_data(&mut buf, 0x4001, 5, false), Some(9));
    assert_eq!(
        ChannelData::parse(&buf[..3]),
        Err(ChannelDataError::TooShort)
    );
    assert_eq!(
        ChannelData::parse(&[0x40, 0, 0, 9, 1]),
        Err(ChannelDataError::BadLength)
    );
    assert_eq!(
        ChannelData::parse(&[0x00, 0, 0, 0]),
        Err(ChannelDataError::NotChannelData)
    );
}

#[test]
fn stream_framing_splits_interleaved_stun_and_padded_channel_data() {
    let stun = binding_request();
    let mut stream = stun.clone();
    stream.extend_from_slice(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]);
    stream.extend_from_slice(&stun);
    let f = next_frame(&stream).unwrap().unwrap();
    assert_eq!((f.kind, f.len), (FrameKind::Stun, stun.len()));
    let rest = &stream[f.len..];
    let f = next_frame(rest).unwrap().unwrap();
    assert_eq!((f.kind, f.len), (FrameKind::ChannelData, 12));
    let rest = &rest[f.len..];
    assert_eq!(next_frame(&rest[..10]).unwrap(), None);
    assert_eq!(next_frame(rest).unwrap().unwrap().len, stun.len());
    assert_eq!(next_frame(&[0x80]).unwrap_err(), FramingError::UnknownKind);
    let mut bad = stun.clone();
    bad[5] = 0;
    assert_eq!(next_frame(&bad).unwrap_err(), FramingError::BadStunHeader);
    assert_eq!(next_frame(&[]).unwrap(), None);
}

#[test]
fn writer_reports_small_buffers() {
    let mut buf = [0u8; 24];
    assert!(
        MessageWriter::new(
            &mut buf[..10],
            MessageType::new(Method::BINDING, Class::Request),
            tid()
        )
        .is_err()
    );
    let mut w = MessageWriter::new(
        &mut buf,
        MessageType::new(Method::BINDING, Class::Request),
        tid(),
    )
    .unwrap();
    assert_eq!(
        w.add(attr::USERNAME, b"abcdefgh").err(),
        Some(WriteError::BufferTooSmall)
    );
    assert_eq!(w.add_fingerprint().err(), Some(WriteError::BufferTooSmall));
}

#[test]
fn address_value_decodes_back_to_its_address_for_both_families() {
    for text in ["192.0.2.1:3479", "[2001:db8::2]:3479"] {
        let addr: SocketAddr = text.parse().unwrap();
        let value = AddressValue::new(addr);
        assert_eq!(value.as_bytes().len(), if addr.is_ipv4() { 8 } else { 20 });
        assert_eq!(
            decode_address(attr::OTHER_ADDRESS, value.as_bytes()),
            Ok(addr)
        );
    }
}
