//! What goes on the wire during the run: the payload header that carries the sequence number
//! and send time through the relay and back, Send indications out, and the data of
//! ChannelData or Data indications in.

use std::net::SocketAddr;

use crate::proto::{
    ChannelData, Class, Message, MessageType, MessageWriter, Method, TransactionId, attr,
    looks_like_stun,
};

/// Bytes of the payload header: magic, lane, sequence, send time.
pub(super) const HEADER_LEN: usize = 24;
/// "TSLG": marks a load-generator payload.
const MAGIC: [u8; 4] = *b"TSLG";

/// Writes the payload header into `buf[..HEADER_LEN]`; the rest of the payload is filler.
pub(super) fn write_header(buf: &mut [u8], lane: u32, seq: u64, sent_ns: u64) {
    if let Some(h) = buf.get_mut(..HEADER_LEN) {
        h[0..4].copy_from_slice(&MAGIC);
        h[4..8].copy_from_slice(&lane.to_be_bytes());
        h[8..16].copy_from_slice(&seq.to_be_bytes());
        h[16..24].copy_from_slice(&sent_ns.to_be_bytes());
    }
}

/// Reads a payload header: (lane, sequence, send time); `None` for anything else.
pub(super) fn read_header(buf: &[u8]) -> Option<(u32, u64, u64)> {
    let h = buf.get(..HEADER_LEN)?;
    if h[0..4] != MAGIC {
        return None;
    }
    let lane = u32::from_be_bytes(h[4..8].try_into().ok()?);
    let seq = u64::from_be_bytes(h[8..16].try_into().ok()?);
    let sent_ns = u64::from_be_bytes(h[16..24].try_into().ok()?);
    Some((lane, seq, sent_ns))
}

/// The largest datagram the generator sends or expects.
pub(super) fn wire_len(payload: usize) -> usize {
    // Send/Data indication: header 20, XOR-PEER-ADDRESS up to 24, DATA 4 + padding 3.
    payload + 64
}

/// The application data of ChannelData or a Data indication; `None` for other STUN messages.
pub(super) fn data_of(datagram: &[u8]) -> Option<&[u8]> {
    if !looks_like_stun(datagram) {
        return ChannelData::parse(datagram).ok().map(|c| c.data());
    }
    let msg = Message::parse(datagram).ok()?;
    let data = MessageType::new(Method::DATA, Class::Indication);
    if msg.message_type() != data {
        return None;
    }
    // RFC 8656 §11.4: the data is in DATA; an indication without it is dropped.
    Some(msg.get(attr::DATA).unwrap_or_default())
}

/// A Send indication (RFC 8656 §11.1) carrying `payload` to `peer`.
pub(super) fn send_indication(
    buf: &mut [u8],
    peer: SocketAddr,
    seq: u64,
    payload: &[u8],
) -> Option<usize> {
    // Indications get no answer; the transaction id only has to differ between messages.
    let mut tid = [0u8; 12];
    tid[4..].copy_from_slice(&seq.to_be_bytes());
    let ty = MessageType::new(Method::SEND, Class::Indication);
    let mut w = MessageWriter::new(buf, ty, TransactionId(tid)).ok()?;
    w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).ok()?;
    w.add(attr::DATA, payload).ok()?;
    Some(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_foreign_bytes_are_refused() {
        let mut buf = [0xAAu8; 100];
        write_header(&mut buf, 7, 1 << 40, 123_456_789);
        assert_eq!(read_header(&buf), Some((7, 1 << 40, 123_456_789)));
        assert_eq!(read_header(&buf[..23]), None);
        buf[0] = b'X';
        assert_eq!(read_header(&buf), None);
    }

    #[test]
    fn a_send_indication_reads_back_as_its_payload() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut payload = [0u8; 40];
        write_header(&mut payload, 1, 2, 3);
        let mut buf = [0u8; 200];
        let n = send_indication(&mut buf, peer, 2, &payload).unwrap();
        assert!(n <= wire_len(payload.len()));
        // The Send indication is not a Data indication: it is not data to a client.
        assert_eq!(data_of(&buf[..n]), None);
        let msg = Message::parse(&buf[..n]).unwrap();
        assert_eq!(msg.get(attr::DATA), Some(&payload[..]));
    }

    #[test]
    fn channel_data_yields_its_payload() {
        let mut buf = [0u8; 64];
        write_header(&mut buf[4..], 1, 2, 3);
        let n = crate::proto::write_channel_data(&mut buf, 0x4000, 30, false).unwrap();
        assert_eq!(read_header(data_of(&buf[..n]).unwrap()), Some((1, 2, 3)));
    }
}
