//! `stream_framing`: the TCP/TLS reader's use of `next_frame`, with the input delivered in
//! chunks of varying size. The frames must be the same whatever the split.

use turnstone::proto::{
    ChannelData, FrameKind, FramingError, HEADER_LEN, MAX_FRAME, Message, ParseError, next_frame,
};

/// How a stream ended: bytes left over waiting for more, or an unframeable stream (closed).
#[derive(Debug, PartialEq, Eq)]
enum End {
    Pending(usize),
    Closed(FramingError),
}

/// Runs the framing checks on one input. The first byte picks the chunk sizes; the rest is the
/// stream.
pub fn check(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = frames(stream, &[stream.len().max(1)]);
    let bytewise = frames(stream, &[1]);
    assert_eq!(whole, bytewise, "byte-by-byte delivery framed differently");
    let sizes = chunk_sizes(seed, stream);
    let chunked = frames(stream, &sizes);
    assert_eq!(whole, chunked, "chunks {sizes:?} framed differently");
}

/// Chunk sizes derived from the seed and the stream bytes, cycled by `frames`.
fn chunk_sizes(seed: u8, stream: &[u8]) -> Vec<usize> {
    let mut state = u32::from(seed) | 1;
    let limit = 1 + usize::from(seed % 64);
    (0..16)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let b = stream.get(i).copied().map_or(0, usize::from);
            1 + (state as usize + b) % limit
        })
        .collect()
}

/// Frames `stream` delivered in chunks of `sizes` (cycled), the way `io::stream` reads: append,
/// take every complete frame, drain. Returns the frames (kind, bytes) and how the stream ended.
fn frames<'a>(stream: &'a [u8], sizes: &[usize]) -> (Vec<(FrameKind, &'a [u8])>, End) {
    let mut inbuf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut offset = 0; // stream position of inbuf[0]
    let mut fed = 0;
    for size in sizes.iter().cycle() {
        if fed >= stream.len() {
            break;
        }
        let next = (fed + size).min(stream.len());
        inbuf.extend_from_slice(&stream[fed..next]);
        fed = next;
        let mut consumed = 0;
        loop {
            let rest = &inbuf[consumed..];
            match next_frame(rest) {
                Ok(Some(frame)) => {
                    check_frame(rest, frame.kind, frame.len);
                    let start = offset + consumed;
                    out.push((frame.kind, &stream[start..start + frame.len]));
                    consumed += frame.len;
                }
                Ok(None) => break,
                Err(e) => return (out, End::Closed(e)),
            }
        }
        inbuf.drain(..consumed);
        offset += consumed;
    }
    (out, End::Pending(inbuf.len()))
}

/// A frame lies inside the buffer, makes progress, and holds what its kind says.
fn check_frame(buf: &[u8], kind: FrameKind, len: usize) {
    assert!(
        len <= buf.len(),
        "frame of {len} past a buffer of {}",
        buf.len()
    );
    assert!(len <= MAX_FRAME, "frame of {len} beyond MAX_FRAME");
    let frame = &buf[..len];
    match kind {
        FrameKind::Stun => {
            assert!(
                len >= HEADER_LEN && len.is_multiple_of(4),
                "STUN frame of {len}"
            );
            assert_eq!(
                len,
                HEADER_LEN + usize::from(u16::from_be_bytes([buf[2], buf[3]]))
            );
            // Framing already checked the header: parsing may fail only inside the attributes.
            if let Err(e) = Message::parse(frame) {
                assert!(
                    !matches!(
                        e,
                        ParseError::TooShort
                            | ParseError::NotStun
                            | ParseError::BadMagicCookie
                            | ParseError::BadLength
                    ),
                    "framed STUN message rejected by its header: {e:?}"
                );
            }
        }
        FrameKind::ChannelData => {
            assert!(
                len >= 4 && len.is_multiple_of(4),
                "ChannelData frame of {len}"
            );
            let cd = ChannelData::parse(frame)
                .unwrap_or_else(|e| panic!("framed ChannelData does not parse: {e:?}"));
            // The frame is the data padded to a multiple of 4 (RFC 8656 §12.5).
            assert_eq!(len, 4 + cd.data().len().div_ceil(4) * 4);
        }
    }
}
