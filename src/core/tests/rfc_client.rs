//! A client that follows RFC 8489 §9.2.5 to the letter: it reads the security feature bits
//! from the nonce, sends USERHASH when "username anonymity" is advertised and negotiates a
//! password algorithm when "password algorithms" is. Every credential the server accepts
//! must work for it, static or REST.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::Md5;
use sha2::{Digest, Sha256};

use crate::auth::rest_password;
use crate::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId, attr};

use super::harness::{Harness, REALM, SECRET_NEW, UNIX_START, settings};

/// What the client learned from a 401/438 (RFC 8489 §9.2.5).
struct Challenge {
    realm: Vec<u8>,
    nonce: Vec<u8>,
    algorithms: Option<Vec<u8>>,
}

/// How the client signed its request, so it can check the response (§9.2.5, §14.6).
struct Sent {
    key: Vec<u8>,
    used_userhash: bool,
    negotiated_sha256: bool,
}

/// The 24 feature bits after the nonce cookie, bit 0 least significant (erratum 6290).
fn feature_bits(nonce: &[u8]) -> u32 {
    let Some(rest) = nonce.strip_prefix(b"obMatJos2") else {
        return 0;
    };
    let bytes = STANDARD.decode(&rest[..4]).unwrap();
    u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]])
}

fn tid(n: u8) -> TransactionId {
    TransactionId([n; 12])
}

fn allocate(id: u8, signed: Option<(&str, &str, &Challenge)>) -> (Vec<u8>, Sent) {
    let mut buf = vec![0u8; 1024];
    let ty = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut w = MessageWriter::new(&mut buf, ty, tid(id)).unwrap();
    w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
    let mut sent = Sent {
        key: Vec::new(),
        used_userhash: false,
        negotiated_sha256: false,
    };
    if let Some((user, password, ch)) = signed {
        let bits = feature_bits(&ch.nonce);
        let (password_algorithms, username_anonymity) = (bits & 1 != 0, bits & 2 != 0);
        // §9.2.5: USERHASH when the nonce advertises username anonymity, else USERNAME.
        if username_anonymity {
            let hash = Sha256::digest([user.as_bytes(), b":", &ch.realm].concat());
            w.add(attr::USERHASH, &hash).unwrap();
            sent.used_userhash = true;
        } else {
            w.add(attr::USERNAME, user.as_bytes()).unwrap();
        }
        w.add(attr::REALM, &ch.realm).unwrap();
        w.add(attr::NONCE, &ch.nonce).unwrap();
        // §9.2.5: echo PASSWORD-ALGORITHMS and pick the first algorithm we support.
        let mut sha256 = false;
        if let (true, Some(list)) = (password_algorithms, &ch.algorithms) {
            let first = list
                .chunks(4)
                .map(|e| u16::from_be_bytes([e[0], e[1]]))
                .find(|&a| a == 1 || a == 2)
                .unwrap();
            sha256 = first == 2;
            w.add(attr::PASSWORD_ALGORITHMS, list).unwrap();
            w.add(attr::PASSWORD_ALGORITHM, &[0, first as u8, 0, 0])
                .unwrap();
            sent.negotiated_sha256 = sha256;
        }
        let input = [user.as_bytes(), b":", &ch.realm, b":", password.as_bytes()].concat();
        sent.key = if sha256 {
            Sha256::digest(&input).to_vec()
        } else {
            Md5::digest(&input).to_vec()
        };
        if sha256 {
            w.add_integrity_sha256(&sent.key).unwrap();
        } else {
            w.add_integrity(&sent.key).unwrap();
        }
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    (buf, sent)
}

fn learn(resp: &[u8]) -> Challenge {
    let msg = Message::parse(resp).unwrap();
    Challenge {
        realm: msg.realm().unwrap().unwrap().to_vec(),
        nonce: msg.nonce().unwrap().unwrap().to_vec(),
        algorithms: msg.get(attr::PASSWORD_ALGORITHMS).map(<[u8]>::to_vec),
    }
}

/// Allocates as `user`; returns whether USERHASH was used. Panics if it fails.
#[track_caller]
fn allocate_as(h: &mut Harness, user: &str, password: &str) -> bool {
    let ft = h.client("alice").ft;
    let (req, _) = allocate(1, None);
    let challenge = h.exchange(ft, &req);
    assert_eq!(challenge.code(), Some(401));
    let ch = learn(&challenge.0);
    let (req, sent) = allocate(2, Some((user, password, &ch)));
    let resp = h.exchange(ft, &req);
    assert_eq!(
        resp.code(),
        None,
        "{user}: {} {}",
        resp.0.len(),
        resp.reason()
    );
    let msg = resp.msg();
    // §9.2.4: MESSAGE-INTEGRITY-SHA256 when SHA-256 was negotiated, else MESSAGE-INTEGRITY.
    assert_eq!(msg.has_integrity_sha256(), sent.negotiated_sha256);
    msg.verify_integrity(&sent.key).unwrap();
    sent.used_userhash
}

#[test]
fn rfc_client_authenticates_static_and_rest_users_when_rest_secrets_are_configured() {
    let mut h = Harness::new();
    assert!(
        !allocate_as(&mut h, "alice", "alice-pw"),
        "no USERHASH offered"
    );
    let rest_user = format!("{}:carol", UNIX_START + 600);
    let password = rest_password(SECRET_NEW, &rest_user);
    assert!(!allocate_as(&mut h, &rest_user, &password));
    assert_eq!(h.server.allocation_count(), 2);
}

#[test]
fn rfc_client_uses_userhash_when_only_static_users_are_configured() {
    let mut h = Harness::with_store(settings(), Harness::store(REALM, false));
    assert!(allocate_as(&mut h, "alice", "alice-pw"), "USERHASH offered");
    assert_eq!(h.server.allocation_count(), 1);
}
