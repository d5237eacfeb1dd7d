//! Responses to unauthenticated requests stay within 4x the request (no reflection amplifier
//! for spoofed sources): Binding, the 401 challenge, and 400/420 errors.

use std::net::{IpAddr, Ipv6Addr};

use crate::core::Transport;
use crate::core::reply::AMPLIFICATION_LIMIT;
use crate::proto::{Method, attr};

use super::harness::{ALGORITHMS, Attr, Harness, Resp, settings, udp};

/// A realm of 12 characters, the longest the limit is promised for.
const REALM_12: &str = "turn.example";

fn harness(software: Option<&str>) -> Harness {
    let mut s = settings();
    s.software = software.map(Into::into);
    Harness::with_store(s, Harness::store(REALM_12, true))
}

/// A request of `method` with no attributes but `attrs`, no credentials, no FINGERPRINT.
fn bare(method: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ty, value) in attrs {
        body.extend(ty.to_be_bytes());
        body.extend((value.len() as u16).to_be_bytes());
        body.extend(*value);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let mut pkt = method.to_be_bytes().to_vec();
    pkt.extend((body.len() as u16).to_be_bytes());
    pkt.extend(0x2112_A442u32.to_be_bytes());
    pkt.extend([7; 12]);
    pkt.extend(body);
    pkt
}

#[track_caller]
fn assert_within_limit(request: &[u8], resp: &Resp) {
    assert!(
        resp.0.len() <= AMPLIFICATION_LIMIT * request.len(),
        "{} bytes answered with {} bytes",
        request.len(),
        resp.0.len()
    );
}

#[test]
fn challenge_to_a_20_byte_allocate_is_at_most_80_bytes() {
    let mut h = harness(Some("turnstone/0.1.0"));
    let c = h.client("alice");
    let req = bare(0x0003, &[]);
    assert_eq!(req.len(), 20);
    let resp = h.exchange(c.ft, &req);
    resp.err(401);
    assert_within_limit(&req, &resp);
    assert_eq!(resp.0.len(), 80);
    // RFC 8489 §9.2.4: REALM and NONCE are never shed.
    assert_eq!(resp.get(attr::REALM).unwrap(), REALM_12.as_bytes());
    assert_eq!(resp.msg().software(), None);
    // No room for PASSWORD-ALGORITHMS, so the nonce does not advertise the feature
    // (RFC 8489 §9.2.5: a client seeing the bit without the attribute gives up).
    assert_eq!(resp.get(attr::PASSWORD_ALGORITHMS), None);
    assert!(resp.get(attr::NONCE).unwrap().starts_with(b"obMatJos2AAAA"));
}

#[test]
fn challenge_with_a_long_realm_sheds_password_algorithms_and_its_nonce_feature_bit() {
    let realm = "turn.example.with-a-33-char-realm";
    let mut h = Harness::with_store(settings(), Harness::store(realm, true));
    let c = h.client("alice");
    let req = bare(0x0003, &[(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])]);
    let resp = h.exchange(c.ft, &req);
    resp.err(401);
    assert_within_limit(&req, &resp);
    assert_eq!(resp.get(attr::PASSWORD_ALGORITHMS), None);
    assert!(resp.get(attr::NONCE).unwrap().starts_with(b"obMatJos2AAAA"));
}

#[test]
fn challenge_to_a_28_byte_allocate_is_at_most_112_bytes_and_keeps_password_algorithms() {
    let mut h = harness(Some("turnstone/0.1.0"));
    let c = h.client("alice");
    let req = bare(0x0003, &[(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])]);
    assert_eq!(req.len(), 28);
    let resp = h.exchange(c.ft, &req);
    resp.err(401);
    assert_within_limit(&req, &resp);
    assert_eq!(resp.0.len(), 112);
    assert_eq!(resp.get(attr::PASSWORD_ALGORITHMS).unwrap(), ALGORITHMS);
    assert!(resp.get(attr::NONCE).unwrap().starts_with(b"obMatJos2AAAB"));
    assert_eq!(resp.attr_types().last(), Some(&attr::FINGERPRINT));
    assert_eq!(resp.reason(), "Unauthorized");
    assert_eq!(resp.msg().software(), None);
}

#[test]
fn challenge_of_every_turn_method_without_attributes_stays_within_the_limit() {
    let mut h = harness(Some("turnstone/0.1.0"));
    let c = h.client("alice");
    for method in [0x0003, 0x0004, 0x0008, 0x0009] {
        let req = bare(method, &[]);
        let resp = h.exchange(c.ft, &req);
        resp.err(401);
        assert_within_limit(&req, &resp);
    }
}

#[test]
fn binding_answer_stays_within_the_limit_for_ipv4_and_ipv6_and_keeps_short_software() {
    let mut h = harness(Some("turnstone/0.1.0"));
    let v4 = h.client("alice").ft;
    let v6 = h.five_tuple(IpAddr::V6(Ipv6Addr::LOCALHOST), Transport::Udp);
    let req = bare(0x0001, &[]);
    for ft in [v4, v6] {
        let resp = h.exchange(ft, &req);
        assert_within_limit(&req, &resp);
        assert_eq!(resp.xor(attr::XOR_MAPPED_ADDRESS), Some(ft.client.addr()));
        assert_eq!(resp.msg().software(), Some("turnstone/0.1.0"));
        assert_eq!(resp.attr_types().last(), Some(&attr::FINGERPRINT));
    }
}

#[test]
fn binding_answer_sheds_a_long_software_rather_than_exceed_the_limit() {
    let long = "turnstone/0.1.0 (built for a very long vendor string)";
    let mut h = harness(Some(long));
    let ft = h.five_tuple(IpAddr::V6(Ipv6Addr::LOCALHOST), Transport::Udp);
    let req = bare(0x0001, &[]);
    let resp = h.exchange(ft, &req);
    assert_within_limit(&req, &resp);
    assert_eq!(resp.msg().software(), None);
    assert_eq!(resp.xor(attr::XOR_MAPPED_ADDRESS), Some(ft.client.addr()));
}

#[test]
fn error_answers_to_unauthenticated_requests_stay_within_the_limit_without_software() {
    let mut h = harness(Some("turnstone/0.1.0"));
    let mut c = h.client("alice");
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Unknown method: 400.
        (bare(0x0005, &[]), 400),
        // Unknown comprehension-required attribute in a Binding: 420.
        (bare(0x0001, &[(0x0031, &[])]), 420),
        // CHANGE-REQUEST without an alternate address: 420.
        (bare(0x0001, &[(attr::CHANGE_REQUEST, &[0, 0, 0, 6])]), 420),
        // An unknown attribute in an Allocate is looked at after authentication: 401.
        (bare(0x0003, &[(0x0031, &[])]), 401),
    ];
    for (req, code) in cases {
        let resp = h.exchange(c.ft, &req);
        resp.err(code);
        assert_within_limit(&req, &resp);
        assert_eq!(resp.msg().software(), None, "{code}");
    }
    // MESSAGE-INTEGRITY without USERNAME, REALM and NONCE: 400 (RFC 8489 §9.2.4), unsigned.
    let req = c.build(
        Method::REFRESH,
        &[Attr::Raw(attr::MESSAGE_INTEGRITY, vec![0; 20])],
    );
    let resp = h.exchange(c.ft, &req);
    resp.err(400);
    assert_within_limit(&req, &resp);
    assert_eq!(resp.msg().software(), None);
}

#[test]
fn signed_answers_keep_software() {
    let mut h = harness(Some("turnstone/0.1.0"));
    let mut c = h.client("alice");
    c.realm = Some(REALM_12.as_bytes().to_vec());
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
    assert_eq!(resp.msg().software(), Some("turnstone/0.1.0"));
}
