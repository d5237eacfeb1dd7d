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
    /// PASSWORD-ALGORITHM was sent (MD5 or SHA-256).
    negotiated: bool,
    /// Signed with MESSAGE-INTEGRITY-SHA256 rather than MESSAGE-INTEGRITY.
    signed_sha256: bool,
}

/// The client's choices beyond the RFC's rules.
#[derive(Clone, Copy, Default)]
struct Options {
    /// The first Allocate is a bare 20-byte header (no REQUESTED-TRANSPORT), as some
    /// clients send to learn the realm and nonce.
    bare_first: bool,
    /// Choose MD5 from PASSWORD-ALGORITHMS even when SHA-256 is offered first, and sign
    /// with MESSAGE-INTEGRITY (a client whose stack only has the SHA-1 MAC).
    choose_md5: bool,
}

/// Why the client gives up on a challenge.
#[derive(Debug, PartialEq, Eq)]
enum GiveUp {
    /// §9.2.5: the nonce advertises "password algorithms" but the response has no
    /// PASSWORD-ALGORITHMS: the client MUST NOT retry (bid-down protection).
    AlgorithmsMissing,
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

/// The unauthenticated first Allocate.
fn first_allocate(opts: Options) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let ty = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut w = MessageWriter::new(&mut buf, ty, tid(1)).unwrap();
    if !opts.bare_first {
        w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
        w.add_fingerprint().unwrap();
    }
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// The authenticated retry after `ch`, or why the client gives up.
fn signed_allocate(
    user: &str,
    password: &str,
    ch: &Challenge,
    opts: Options,
) -> Result<(Vec<u8>, Sent), GiveUp> {
    let bits = feature_bits(&ch.nonce);
    let (password_algorithms, username_anonymity) = (bits & 1 != 0, bits & 2 != 0);
    if password_algorithms && ch.algorithms.is_none() {
        return Err(GiveUp::AlgorithmsMissing);
    }
    let mut buf = vec![0u8; 1024];
    let ty = MessageType::new(Method::ALLOCATE, Class::Request);
    let mut w = MessageWriter::new(&mut buf, ty, tid(2)).unwrap();
    w.add(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]).unwrap();
    let mut sent = Sent {
        key: Vec::new(),
        used_userhash: false,
        negotiated: false,
        signed_sha256: false,
    };
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
    // §9.2.5: echo PASSWORD-ALGORITHMS and pick an algorithm from it (the first we
    // support, or MD5 when told to).
    let mut sha256 = false;
    if let (true, Some(list)) = (password_algorithms, &ch.algorithms) {
        let mut offered = list.chunks(4).map(|e| u16::from_be_bytes([e[0], e[1]]));
        let chosen = if opts.choose_md5 {
            offered.find(|&a| a == 1)
        } else {
            offered.find(|&a| a == 1 || a == 2)
        }
        .unwrap();
        sha256 = chosen == 2;
        w.add(attr::PASSWORD_ALGORITHMS, list).unwrap();
        w.add(attr::PASSWORD_ALGORITHM, &[0, chosen as u8, 0, 0])
            .unwrap();
        sent.negotiated = true;
    }
    let input = [user.as_bytes(), b":", &ch.realm, b":", password.as_bytes()].concat();
    sent.key = if sha256 {
        Sha256::digest(&input).to_vec()
    } else {
        Md5::digest(&input).to_vec()
    };
    sent.signed_sha256 = sha256;
    if sha256 {
        w.add_integrity_sha256(&sent.key).unwrap();
    } else {
        w.add_integrity(&sent.key).unwrap();
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    Ok((buf, sent))
}

fn learn(resp: &[u8]) -> Challenge {
    let msg = Message::parse(resp).unwrap();
    Challenge {
        realm: msg.realm().unwrap().unwrap().to_vec(),
        nonce: msg.nonce().unwrap().unwrap().to_vec(),
        algorithms: msg.get(attr::PASSWORD_ALGORITHMS).map(<[u8]>::to_vec),
    }
}

/// Allocates as `user`; returns how the request was signed. Panics if it fails.
#[track_caller]
fn allocate_with(h: &mut Harness, user: &str, password: &str, opts: Options) -> Sent {
    let ft = h.client("alice").ft;
    let req = first_allocate(opts);
    let challenge = h.exchange(ft, &req);
    assert_eq!(challenge.code(), Some(401));
    let ch = learn(&challenge.0);
    let (req, sent) = signed_allocate(user, password, &ch, opts)
        .unwrap_or_else(|e| panic!("{user}: the client gives up: {e:?}"));
    let resp = h.exchange(ft, &req);
    assert_eq!(
        resp.code(),
        None,
        "{user}: {} {}",
        resp.0.len(),
        resp.reason()
    );
    let msg = resp.msg();
    // §9.2.4: MESSAGE-INTEGRITY-SHA256 when an algorithm was negotiated, else
    // MESSAGE-INTEGRITY; the client checks the MAC it signed with itself.
    assert_eq!(msg.has_integrity_sha256(), sent.negotiated);
    if sent.signed_sha256 {
        msg.verify_integrity(&sent.key).unwrap();
    } else {
        msg.verify_message_integrity(&sent.key).unwrap();
    }
    sent
}

/// Allocates as `user` with default options; returns whether USERHASH was used.
#[track_caller]
fn allocate_as(h: &mut Harness, user: &str, password: &str) -> bool {
    allocate_with(h, user, password, Options::default()).used_userhash
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

#[test]
fn rfc_client_refuses_to_retry_when_the_nonce_advertises_algorithms_the_challenge_lacks() {
    let ch = Challenge {
        realm: REALM.as_bytes().to_vec(),
        nonce: b"obMatJos2AAABxxxxxxxxxxxxxxxxxxx".to_vec(),
        algorithms: None,
    };
    let refused = signed_allocate("alice", "alice-pw", &ch, Options::default()).err();
    assert_eq!(refused, Some(GiveUp::AlgorithmsMissing));
}

#[test]
fn rfc_client_authenticates_after_a_challenge_to_a_20_byte_allocate() {
    // The 80-byte answer has no room for PASSWORD-ALGORITHMS, so its nonce must not
    // advertise the feature (§9.2.5), and the client falls back to MD5.
    let opts = Options {
        bare_first: true,
        ..Options::default()
    };
    assert_eq!(first_allocate(opts).len(), 20);
    let mut h = Harness::new();
    let sent = allocate_with(&mut h, "alice", "alice-pw", opts);
    assert!(!sent.negotiated && !sent.signed_sha256);
    let mut h = Harness::with_store(settings(), Harness::store(REALM, false));
    let sent = allocate_with(&mut h, "alice", "alice-pw", opts);
    assert!(sent.used_userhash && !sent.negotiated);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn rfc_client_choosing_md5_verifies_the_response_message_integrity() {
    let opts = Options {
        choose_md5: true,
        ..Options::default()
    };
    let mut h = Harness::new();
    let sent = allocate_with(&mut h, "alice", "alice-pw", opts);
    assert!(sent.negotiated && !sent.signed_sha256);
    assert_eq!(h.server.allocation_count(), 1);
}
