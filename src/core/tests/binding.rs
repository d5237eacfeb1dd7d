//! Binding (RFC 8489 §7.3), unknown attributes (§7.3.1) and malformed input (§6.3).

use crate::core::{DropReason, Handled};
use crate::proto::{Class, Method, attr};

use super::harness::{Attr, Harness, SOFTWARE};

#[test]
fn binding_is_answered_with_xor_mapped_address_software_and_fingerprint() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.send(&mut c, Method::BINDING, &[]).ok();
    assert_eq!(resp.msg().method(), Method::BINDING);
    assert_eq!(resp.xor(attr::XOR_MAPPED_ADDRESS), Some(c.ft.client.addr()));
    assert_eq!(resp.msg().software(), Some(SOFTWARE));
    // Message::parse has already checked the CRC; FINGERPRINT must also be the last attribute.
    assert_eq!(resp.attr_types().last(), Some(&attr::FINGERPRINT));
    assert!(!resp.msg().has_integrity());
}

#[test]
fn unknown_comprehension_required_attribute_is_answered_420_with_unknown_attributes() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.send(
        &mut c,
        Method::BINDING,
        &[Attr::Raw(0x0031, vec![1, 2, 3, 4])],
    );
    resp.err(420);
    let unknown: Vec<u16> = resp.msg().unknown_attributes().collect();
    assert_eq!(unknown, vec![0x0031]);
    // An unknown comprehension-optional attribute is ignored.
    h.send(&mut c, Method::BINDING, &[Attr::Raw(0x8031, vec![0; 4])])
        .ok();
}

#[test]
fn malformed_input_is_dropped_silently_and_counted() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let mut bad_fingerprint = c.build(Method::BINDING, &[]);
    let last = bad_fingerprint.len() - 1;
    bad_fingerprint[last] ^= 0xff;
    let inputs: [&[u8]; 5] = [
        &[],
        &[0xff; 40],
        &[0x00, 0x01, 0x00, 0x00, 0x21, 0x12],
        &[0x40, 0x00, 0x00, 0x10, 1, 2],
        &bad_fingerprint,
    ];
    for pkt in inputs {
        assert_eq!(
            h.input(c.ft, pkt).0,
            Handled::Drop(DropReason::Malformed),
            "{pkt:02x?}"
        );
    }
    assert_eq!(h.server.counters().dropped_malformed, inputs.len() as u64);
    assert_eq!(
        h.server.counters().requests_ok + h.server.counters().requests_rejected,
        0
    );
    // A response is not a request: ignored, not answered.
    let resp = h.send(&mut c, Method::BINDING, &[]).ok();
    assert_eq!(resp.class(), Class::Success);
    assert_eq!(h.input(c.ft, &resp.0).0, Handled::Drop(DropReason::Ignored));
}
