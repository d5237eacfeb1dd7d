//! The data plane: ChannelData both ways (RFC 8656 §12.4–12.6), padding on streams (§12.5),
//! Data indications (§11.3) and Send indications (§11.2).

use std::net::{IpAddr, Ipv4Addr};

use crate::core::{PeerHandled, Transport};
use crate::proto::{Class, Message, Method, attr};

use super::harness::{Harness, family, sa};

#[test]
fn channel_data_from_the_client_is_forwarded_with_its_payload_range() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4001, p).ok();
    let (handled, pkt) = h.channel_data(c.ft, 0x4001, b"hello");
    assert_eq!(handled, h.forward(relayed, p, 4..9));
    assert_eq!(&pkt[4..9], b"hello");
    assert_eq!(h.server.counters().bytes_to_peer, 5);
}

#[test]
fn padded_channel_data_from_a_tcp_client_is_forwarded_without_its_padding() {
    let mut h = Harness::new();
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
    let mut c = Harness::user_on(ft, "alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4001, p).ok();
    let (handled, pkt) = h.channel_data(ft, 0x4001, b"hello");
    assert_eq!(pkt.len(), 12);
    assert_eq!(handled, h.forward(relayed, p, 4..9));
}

#[test]
fn peer_data_on_a_channel_reaches_a_udp_client_as_unpadded_channel_data() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4001, p).ok();
    match h.peer_sends(relayed, p, b"hello") {
        (PeerHandled::ToClient { client, range }, buf) => {
            assert_eq!(client, c.ft);
            assert_eq!(buf[range], *b"\x40\x01\x00\x05hello");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn peer_data_on_a_channel_reaches_a_tcp_client_as_channel_data_padded_to_4() {
    let mut h = Harness::new();
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
    let mut c = Harness::user_on(ft, "alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:1000");
    h.bind(&mut c, 0x4001, p).ok();
    assert_eq!(
        h.delivered(relayed, p, b"hello"),
        b"\x40\x01\x00\x05hello\0\0\0"
    );
    assert_eq!(h.delivered(relayed, p, b"four"), b"\x40\x01\x00\x04four");
}

#[test]
fn peer_data_without_a_channel_reaches_the_client_as_a_data_indication() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[family(attr::ADDITIONAL_ADDRESS_FAMILY, 0x02)]);
    let v6_relay = sa("[2001:db8::10]:50002");
    for (relay, p) in [
        (relayed, sa("8.8.8.8:1000")),
        (v6_relay, sa("[2606:4700::1111]:443")),
    ] {
        h.permit(&mut c, &[p]).ok();
        let bytes = h.delivered(relay, p, b"hello");
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(
            (msg.method(), msg.class()),
            (Method::DATA, Class::Indication)
        );
        assert_eq!(msg.xor_address(attr::XOR_PEER_ADDRESS), Some(Ok(p)));
        assert_eq!(msg.get(attr::DATA), Some(&b"hello"[..]));
    }
    assert_eq!(h.server.counters().bytes_to_client, 10);
}

#[test]
fn send_indication_is_forwarded_to_its_peer() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:1000");
    h.permit(&mut c, &[p]).ok();
    let (handled, pkt) = h.send_indication(c.ft, p, b"hello");
    assert_eq!(handled, h.forward(relayed, p, 36..41));
    assert_eq!(&pkt[36..41], b"hello");
    h.refresh(&mut c, 0).ok();
    let usage = h.usage();
    assert_eq!(
        (
            usage[0].traffic.packets_to_peer,
            usage[0].traffic.bytes_to_peer
        ),
        (1, 5)
    );
    assert_eq!(usage[0].peers, 1);
}
