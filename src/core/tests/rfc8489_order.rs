//! RFC 8489 §6.3 order (unknown attributes after authentication), §6.3.2 (indications with
//! unknown comprehension-required attributes are dropped), one reason phrase for every 401,
//! and nonces scoped to the client's IP address and port (§9.2.4).

use std::net::SocketAddr;

use crate::core::{DropReason, Handled};
use crate::proto::{Class, MessageType, MessageWriter, Method, TransactionId, attr};

use super::harness::{Attr, Harness, sa, udp};

const UNKNOWN: u16 = 0x0031;

#[test]
fn unknown_attribute_in_an_unauthenticated_allocate_is_challenged_first() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.send(
        &mut c,
        Method::ALLOCATE,
        &[udp(), Attr::Raw(UNKNOWN, vec![])],
    );
    resp.err(401);
    assert!(resp.get(attr::NONCE).is_some());
}

#[test]
fn unknown_attribute_in_an_authenticated_allocate_is_answered_420_signed() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.challenge(&mut c);
    let resp = h.send(
        &mut c,
        Method::ALLOCATE,
        &[udp(), Attr::Raw(UNKNOWN, vec![1, 2])],
    );
    resp.err(420);
    let unknown: Vec<u16> = resp.msg().unknown_attributes().collect();
    assert_eq!(unknown, vec![UNKNOWN]);
    resp.msg().verify_integrity(&c.key()).unwrap();
    assert_eq!(h.server.allocation_count(), 0);
}

fn send_indication(to: SocketAddr, extra: Option<u16>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let ty = MessageType::new(Method::SEND, Class::Indication);
    let mut w = MessageWriter::new(&mut buf, ty, TransactionId([3; 12])).unwrap();
    w.add_xor_address(attr::XOR_PEER_ADDRESS, to).unwrap();
    w.add(attr::DATA, b"hello").unwrap();
    if let Some(ty) = extra {
        w.add(ty, &[0; 4]).unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

#[test]
fn send_indication_with_an_unknown_comprehension_required_attribute_is_dropped() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let relayed = h.allocate(&mut c, &[]);
    let p = sa("8.8.8.8:1000");
    h.permit(&mut c, &[p]).ok();
    let (handled, _) = h.input(c.ft, &send_indication(p, Some(UNKNOWN)));
    assert_eq!(handled, Handled::Drop(DropReason::Malformed));
    // A comprehension-optional one is ignored and the data goes through.
    let pkt = send_indication(p, Some(0x8031));
    let (handled, _) = h.input(c.ft, &pkt);
    assert!(matches!(handled, Handled::Forward { .. }), "{handled:?}");
    let _ = relayed;
}

#[test]
fn unknown_user_and_wrong_password_get_the_same_reason_phrase() {
    let mut h = Harness::new();
    let ft = h.client("alice").ft;
    let mut wrong_password = super::harness::Client::new(ft, "alice", "not-the-password");
    let a = h.request(&mut wrong_password, Method::ALLOCATE, &[udp()]);
    let ft = h.client("alice").ft;
    let mut unknown_user = super::harness::Client::new(ft, "mallory", "whatever");
    let b = h.request(&mut unknown_user, Method::ALLOCATE, &[udp()]);
    a.err(401);
    b.err(401);
    assert_eq!(a.reason(), b.reason());
    // The metric keeps the detail.
    let by_reason = h.server.counters().auth_failures_by_reason;
    assert_eq!(by_reason.len(), 2, "{by_reason:?}");
}

#[test]
fn nonce_issued_to_another_port_of_the_same_ip_is_answered_438() {
    // RFC 8489 §9.2.4: two clients behind one NAT never share a nonce.
    let mut h = Harness::new();
    let mut first = h.client("alice");
    h.challenge(&mut first);
    let mut other = h.client("alice");
    assert_eq!(other.ft.client.addr().ip(), first.ft.client.addr().ip());
    (other.realm, other.nonce) = (first.realm.clone(), first.nonce.clone());
    let resp = h.send(&mut other, Method::ALLOCATE, &[udp()]);
    resp.err(438);
    assert!(other.learn(&resp));
    h.send(&mut other, Method::ALLOCATE, &[udp()]).ok();
}

#[test]
fn nonce_advertising_username_anonymity_is_stale_once_rest_secrets_are_added() {
    // A reload that adds REST secrets withdraws username anonymity: a client holding the old
    // nonce gets 438 and a fresh nonce without the bit (RFC 8489 §9.2.4, §9.2.5).
    use super::harness::{REALM, settings};
    let mut h = Harness::with_store(settings(), Harness::store(REALM, false));
    let mut c = h.client("alice");
    h.challenge(&mut c);
    assert_eq!(&c.nonce.as_deref().unwrap()[9..13], b"AAAD");
    h.server
        .set_credentials(std::sync::Arc::new(Harness::store(REALM, true)));
    let resp = h.send(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(438);
    assert!(c.learn(&resp));
    assert_eq!(&c.nonce.as_deref().unwrap()[9..13], b"AAAB");
    h.send(&mut c, Method::ALLOCATE, &[udp()]).ok();
}
