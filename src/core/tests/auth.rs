//! The long-term credential mechanism (RFC 8489 §9.2), TURN REST credentials, password
//! algorithms (§9.2.4), USERHASH (§14.4) and MESSAGE-INTEGRITY-SHA256 (§14.6).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::auth::{NONCE_COOKIE, PasswordAlgorithm, rest_password};
use crate::core::Transport;
use crate::proto::{Method, attr};

use super::harness::{
    ALGORITHMS, Attr, Client, Harness, REALM, SECRET_NEW, SECRET_OLD, UNIX_START, udp,
};

#[test]
fn first_request_is_challenged_401_with_realm_nonce_and_password_algorithms() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.send(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(401);
    assert_eq!(resp.get(attr::REALM).unwrap(), REALM.as_bytes());
    assert!(resp.get(attr::NONCE).unwrap().starts_with(NONCE_COOKIE));
    assert_eq!(resp.get(attr::PASSWORD_ALGORITHMS).unwrap(), ALGORITHMS);
    assert!(!resp.msg().has_integrity(), "a challenge cannot be signed");
    assert_eq!(
        h.server.counters().auth_failures,
        0,
        "the first 401 is no failure"
    );
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn signed_md5_request_succeeds_and_its_response_is_signed_with_the_same_key() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
    assert!(!resp.msg().has_integrity_sha256());
    resp.msg().verify_integrity(&c.key()).unwrap();
}

#[test]
fn wrong_password_is_answered_401_with_a_new_challenge() {
    let mut h = Harness::new();
    let ft = h.client("alice").ft;
    let mut c = Client::new(ft, "alice", "not-the-password");
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(401);
    assert!(resp.get(attr::NONCE).is_some());
    assert_eq!(h.server.counters().auth_failures, 1);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn unknown_user_is_answered_401() {
    let mut h = Harness::new();
    let ft = h.client("alice").ft;
    let mut c = Client::new(ft, "mallory", "whatever");
    h.request(&mut c, Method::ALLOCATE, &[udp()]).err(401);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn stale_nonce_is_answered_438_with_a_fresh_nonce() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.challenge(&mut c);
    let old = c.nonce.clone().unwrap();
    h.advance(Duration::from_secs(601));
    let resp = h.send(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(438);
    assert_eq!(resp.get(attr::REALM).unwrap(), REALM.as_bytes());
    assert_eq!(resp.get(attr::PASSWORD_ALGORITHMS).unwrap(), ALGORITHMS);
    assert!(c.learn(&resp));
    assert_ne!(c.nonce.as_deref(), Some(&old[..]));
    h.send(&mut c, Method::ALLOCATE, &[udp()]).ok();
}

#[test]
fn nonce_issued_to_another_ip_is_answered_438() {
    let mut h = Harness::new();
    let mut first = h.client("alice");
    h.challenge(&mut first);
    let ft = h.five_tuple(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), Transport::Udp);
    let mut other = Harness::user_on(ft, "alice");
    (other.realm, other.nonce, other.algorithms) = (first.realm, first.nonce, first.algorithms);
    let resp = h.send(&mut other, Method::ALLOCATE, &[udp()]);
    resp.err(438);
    assert!(other.learn(&resp));
    h.send(&mut other, Method::ALLOCATE, &[udp()]).ok();
}

fn rest_client(h: &mut Harness, expiry: u64, secret: &[u8]) -> Client {
    let ft = h.client("alice").ft;
    let username = format!("{expiry}:carol");
    let password = rest_password(secret, &username);
    Client::new(ft, &username, &password)
}

#[test]
fn rest_credential_is_accepted_and_names_the_allocation() {
    let mut h = Harness::new();
    let mut c = rest_client(&mut h, UNIX_START + 3600, SECRET_NEW);
    h.allocate(&mut c, &[]);
    h.refresh(&mut c, 0).ok();
    assert_eq!(h.usage()[0].user, format!("{}:carol", UNIX_START + 3600));
}

#[test]
fn expired_rest_credential_is_answered_401() {
    let mut h = Harness::new();
    let mut c = rest_client(&mut h, UNIX_START - 1, SECRET_NEW);
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(401);
    // The wire says what every 401 says; the metric keeps the detail.
    assert_eq!(resp.reason(), "Unauthorized");
    let by_reason = h.server.counters().auth_failures_by_reason;
    assert_eq!(by_reason, vec![("expired_credential", 1)]);
}

#[test]
fn rest_credentials_of_both_rotated_secrets_verify() {
    let mut h = Harness::new();
    for secret in [SECRET_NEW, SECRET_OLD] {
        let mut c = rest_client(&mut h, UNIX_START + 60, secret);
        h.allocate(&mut c, &[]);
    }
    let mut forged = rest_client(&mut h, UNIX_START + 60, b"unknown-secret");
    h.request(&mut forged, Method::ALLOCATE, &[udp()]).err(401);
    assert_eq!(h.server.allocation_count(), 2);
}

#[test]
fn sha256_password_algorithm_with_echoed_password_algorithms_is_accepted() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    c.alg = PasswordAlgorithm::Sha256;
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
    assert_eq!(c.key().len(), 32);
    resp.msg().verify_integrity(&c.key()).unwrap();
}

#[test]
fn tampered_password_algorithms_is_answered_400() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    c.alg = PasswordAlgorithm::Sha256;
    h.challenge(&mut c);
    // A man in the middle removed SHA-256 from the list (bid-down, RFC 8489 §9.2.4).
    c.algorithms = Some(vec![0, 1, 0, 0]);
    h.send(&mut c, Method::ALLOCATE, &[udp()]).err(400);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn userhash_of_a_static_user_is_accepted() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    c.userhash = true;
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
    resp.msg().verify_integrity(&c.key()).unwrap();
    h.refresh(&mut c, 0).ok();
    assert_eq!(h.usage()[0].user, "alice");
}

#[test]
fn negotiated_sha256_request_gets_a_message_integrity_sha256_response() {
    // RFC 8489 §9.2.4: MESSAGE-INTEGRITY-SHA256 unless processed as though MD5; a request
    // signed with MESSAGE-INTEGRITY also gets MESSAGE-INTEGRITY, the MAC it can check.
    for mi_sha256 in [false, true] {
        let mut h = Harness::new();
        let mut c = h.client("alice");
        c.alg = PasswordAlgorithm::Sha256;
        c.mi_sha256 = mi_sha256;
        let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
        assert!(resp.msg().has_integrity_sha256());
        assert_eq!(
            resp.attr_types().contains(&attr::MESSAGE_INTEGRITY),
            !mi_sha256
        );
        resp.msg().verify_integrity(&c.key()).unwrap();
        if !mi_sha256 {
            resp.msg().verify_message_integrity(&c.key()).unwrap();
        }
    }
}

#[test]
fn explicit_md5_choice_signed_with_message_integrity_gets_both_macs_with_the_md5_key() {
    // RFC 8489 §9.2.4: an algorithm was negotiated, so MESSAGE-INTEGRITY-SHA256 (with the
    // MD5 key); the client signed with MESSAGE-INTEGRITY, so that comes too, first.
    let mut h = Harness::new();
    let mut c = h.client("alice");
    h.challenge(&mut c);
    let req = c.build(
        Method::ALLOCATE,
        &[
            udp(),
            Attr::Raw(attr::PASSWORD_ALGORITHMS, ALGORITHMS.to_vec()),
            Attr::Raw(attr::PASSWORD_ALGORITHM, vec![0, 1, 0, 0]),
        ],
    );
    let resp = h.exchange(c.ft, &req).ok();
    let types = resp.attr_types();
    let mi = types.iter().position(|&t| t == attr::MESSAGE_INTEGRITY);
    let mi_sha256 = types
        .iter()
        .position(|&t| t == attr::MESSAGE_INTEGRITY_SHA256);
    assert!(mi.is_some() && mi < mi_sha256, "{types:04x?}");
    resp.msg().verify_message_integrity(&c.key()).unwrap();
    resp.msg().verify_integrity(&c.key()).unwrap();
}

/// A bare 20-byte Allocate (no attributes, no FINGERPRINT): its 401 has no room for
/// PASSWORD-ALGORITHMS within the amplification limit.
fn challenge_a_20_byte_allocate(h: &mut Harness, c: &mut Client) {
    let mut pkt = vec![0x00, 0x03, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    pkt.extend([9; 12]);
    let resp = h.exchange(c.ft, &pkt);
    resp.err(401);
    assert!(c.learn(&resp));
    assert_eq!(c.algorithms, None);
}

#[test]
fn md5_request_after_a_challenge_without_password_algorithms_succeeds() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    challenge_a_20_byte_allocate(&mut h, &mut c);
    let resp = h.send(&mut c, Method::ALLOCATE, &[udp()]).ok();
    assert!(!resp.msg().has_integrity_sha256());
    resp.msg().verify_integrity(&c.key()).unwrap();
}

#[test]
fn password_algorithms_echoed_for_a_nonce_that_never_offered_them_is_answered_400() {
    // RFC 8489 §9.2.4: PASSWORD-ALGORITHMS must match the response that sent the nonce,
    // which had none.
    let mut h = Harness::new();
    let mut c = h.client("alice");
    challenge_a_20_byte_allocate(&mut h, &mut c);
    c.alg = PasswordAlgorithm::Sha256;
    c.algorithms = Some(ALGORITHMS.to_vec());
    h.send(&mut c, Method::ALLOCATE, &[udp()]).err(400);
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn nonce_from_an_earlier_tcp_connection_is_answered_438_with_a_fresh_nonce() {
    // Each TCP connection has its own source port and a nonce is bound to the port
    // (RFC 8489 §9.2.4), so a reused nonce is stale, not wrong: 438 and a transparent retry.
    let mut h = Harness::new();
    let first = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
    let mut old = Harness::user_on(first, "alice");
    h.allocate(&mut old, &[]);
    let second = h.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
    let mut c = Harness::user_on(second, "alice");
    (c.realm, c.nonce, c.algorithms) = (old.realm, old.nonce.clone(), old.algorithms);
    let resp = h.send(&mut c, Method::ALLOCATE, &[udp()]);
    resp.err(438);
    assert!(c.learn(&resp));
    assert_ne!(c.nonce, old.nonce);
    h.send(&mut c, Method::ALLOCATE, &[udp()]).ok();
    assert_eq!(h.server.allocation_count(), 2);
}

#[test]
fn request_without_password_algorithm_gets_a_message_integrity_response() {
    // RFC 8489 §9.2.4: processed as though PASSWORD-ALGORITHM were MD5, so MESSAGE-INTEGRITY,
    // whichever MAC the request carried.
    let mut h = Harness::new();
    let mut c = h.client("alice");
    c.mi_sha256 = true;
    let resp = h.request(&mut c, Method::ALLOCATE, &[udp()]).ok();
    assert!(!resp.msg().has_integrity_sha256());
    assert!(resp.attr_types().contains(&attr::MESSAGE_INTEGRITY));
    resp.msg().verify_integrity(&c.key()).unwrap();
}
