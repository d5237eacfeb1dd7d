//! `codec_round_trip`: parse, re-encode the counted attributes with `MessageWriter`, parse again.

use turnstone::proto::{
    ChannelData, Message, MessageWriter, attr, decode_xor_address, encode_xor_address_into,
};

/// A fixed key to exercise MESSAGE-INTEGRITY on both sides.
const KEY: &[u8] = b"0123456789abcdef";

/// Runs the codec checks on one input.
pub fn check(data: &[u8]) {
    check_channel_data(data);
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    touch_accessors(&msg);
    let _ = msg.verify_integrity(KEY);
    let attrs: Vec<(u16, &[u8])> = msg.attributes().collect();
    // The counted attributes end before MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT
    // (RFC 8489 §14.5), so none of those is ever counted.
    assert!(
        attrs.iter().all(|(t, _)| !is_trailer(*t)),
        "integrity or fingerprint among the counted attributes: {attrs:?}"
    );
    let kept: Vec<(u16, &[u8])> = attrs.into_iter().filter(|(t, _)| !is_trailer(*t)).collect();

    // Re-encoding cannot take more room than the original.
    let mut buf = vec![0u8; data.len()];
    let n = encode(&msg, &kept, &mut buf, None);
    let again = Message::parse(&buf[..n])
        .unwrap_or_else(|e| panic!("re-encoded message does not parse: {e:?}"));
    same_message(&msg, &kept, &again);
    assert!(!again.has_integrity());
    assert_eq!(again.unknown_required(), msg.unknown_required());

    // Encoding is a fixed point: encode(parse(encode(m))) == encode(m).
    let mut buf2 = vec![0u8; n];
    let again_attrs: Vec<(u16, &[u8])> = again.attributes().collect();
    let n2 = encode(&again, &again_attrs, &mut buf2, None);
    assert_eq!(&buf[..n], &buf2[..n2], "encoding is not stable");

    // Signed with MESSAGE-INTEGRITY and FINGERPRINT, the message verifies with the key only.
    if n + 32 <= 20 + usize::from(u16::MAX) {
        let mut signed = vec![0u8; n + 32];
        let m = encode(&msg, &kept, &mut signed, Some(KEY));
        let parsed = Message::parse(&signed[..m])
            .unwrap_or_else(|e| panic!("signed message does not parse: {e:?}"));
        same_message(&msg, &kept, &parsed);
        assert!(parsed.verify_integrity(KEY).is_ok(), "own MAC rejected");
        assert!(
            parsed.verify_integrity(b"wrong").is_err(),
            "wrong key accepted"
        );
        // Any single flipped bit before the MAC is caught (by FINGERPRINT first).
        let flip = data.first().map_or(0, |b| usize::from(*b)) % (m - 32);
        signed[flip] ^= 0x01;
        if let Ok(tampered) = Message::parse(&signed[..m]) {
            assert!(
                tampered.verify_integrity(KEY).is_err(),
                "tampered message verified"
            );
        }
    }
}

fn is_trailer(ty: u16) -> bool {
    matches!(
        ty,
        attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
    )
}

/// Writes `attrs` under `msg`'s type and transaction id; with a key, seals with
/// MESSAGE-INTEGRITY and FINGERPRINT.
fn encode(msg: &Message<'_>, attrs: &[(u16, &[u8])], out: &mut [u8], key: Option<&[u8]>) -> usize {
    let mut w = MessageWriter::new(out, msg.message_type(), msg.transaction_id())
        .unwrap_or_else(|e| panic!("header does not fit: {e:?}"));
    for (ty, value) in attrs {
        w.add(*ty, value)
            .unwrap_or_else(|e| panic!("attribute {ty:#06x} does not fit: {e:?}"));
    }
    if let Some(key) = key {
        w.add_integrity(key)
            .unwrap_or_else(|e| panic!("integrity does not fit: {e:?}"));
        w.add_fingerprint()
            .unwrap_or_else(|e| panic!("fingerprint does not fit: {e:?}"));
    }
    w.finish()
}

fn same_message(orig: &Message<'_>, attrs: &[(u16, &[u8])], again: &Message<'_>) {
    assert_eq!(again.method(), orig.method());
    assert_eq!(again.class(), orig.class());
    assert_eq!(again.transaction_id(), orig.transaction_id());
    let got: Vec<(u16, &[u8])> = again.attributes().collect();
    assert_eq!(got, attrs, "attributes changed in the round trip");
}

/// Every typed getter must return, never panic; decoded addresses re-encode to themselves.
fn touch_accessors(msg: &Message<'_>) {
    let tid = msg.transaction_id();
    for ty in [
        attr::XOR_PEER_ADDRESS,
        attr::XOR_RELAYED_ADDRESS,
        attr::XOR_MAPPED_ADDRESS,
    ] {
        if let Some(Ok(addr)) = msg.xor_address(ty) {
            let mut v = [0u8; 20];
            let len = if addr.is_ipv4() { 8 } else { 20 };
            encode_xor_address_into(addr, &tid, &mut v[..len]);
            assert_eq!(decode_xor_address(ty, &v[..len], &tid), Ok(addr));
        }
        let _ = msg.address(ty);
    }
    for addr in msg.peer_addresses() {
        let _ = addr;
    }
    for ty in [attr::LIFETIME, attr::PRIORITY, attr::CHANGE_REQUEST] {
        let _ = msg.u32_attr(ty);
    }
    let _ = (msg.username(), msg.realm(), msg.nonce(), msg.userhash());
    if let Some(Ok(e)) = msg.error_code() {
        assert!((300..=699).contains(&e.code), "error code {}", e.code);
    }
    let _ = (msg.requested_transport(), msg.even_port());
    let _ = msg.address_family(attr::REQUESTED_ADDRESS_FAMILY);
    let _ = msg.address_family(attr::ADDITIONAL_ADDRESS_FAMILY);
    let _ = (msg.reservation_token(), msg.channel_number());
    let _ = (msg.password_algorithm(), msg.password_algorithms());
    let _ = (msg.change_request(), msg.response_port(), msg.software());
    let _ = msg.unknown_attributes().count();
    let _ = msg.get_all(attr::XOR_PEER_ADDRESS).count();
    assert!(msg.unknown_required().as_slice().len() <= 8);
}

/// ChannelData parsing never panics and the data it returns lies inside the input.
fn check_channel_data(data: &[u8]) {
    match ChannelData::parse(data) {
        Ok(cd) => {
            let len = cd.data().len();
            assert_eq!(cd.data(), &data[4..4 + len]);
            assert_eq!(usize::from(u16::from_be_bytes([data[2], data[3]])), len);
            assert!((0x4000..=0x7FFF).contains(&cd.channel()));
            // ChannelData and STUN are told apart by the first two bits (RFC 8656 §12).
            assert!(Message::parse(data).is_err(), "both ChannelData and STUN");
        }
        Err(_) => {
            let channel_like = data.len() >= 4 && data[0] & 0xC0 == 0x40;
            if channel_like {
                let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
                assert!(4 + len > data.len(), "valid ChannelData rejected");
            }
        }
    }
}
