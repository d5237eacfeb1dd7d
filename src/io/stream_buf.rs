//! The input buffer of one TCP/TLS connection: bytes not yet framed. A frame may be up to
//! 64 KiB (RFC 8656 §12.4 ChannelData length), so the buffer grows for one and shrinks back
//! once it is consumed: a connection pins [`NORMAL`] bytes, not its largest frame.

use crate::proto::MAX_FRAME;

/// Capacity kept between frames.
pub(crate) const NORMAL: usize = 16 * 1024;
/// Room guaranteed for one read.
const MIN_READ: usize = 4 * 1024;
/// Largest capacity ever held: a partial frame just under [`MAX_FRAME`] plus one read.
pub(crate) const MAX_CAPACITY: usize = MAX_FRAME + NORMAL;

/// Unframed input bytes.
pub(crate) struct InputBuffer {
    buf: Vec<u8>,
}

impl InputBuffer {
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(NORMAL),
        }
    }

    /// The vector to read into: at least [`MIN_READ`] bytes of spare capacity, without the
    /// doubling growth of `reserve` (capacity stays at most [`MAX_CAPACITY`]).
    pub fn for_read(&mut self) -> &mut Vec<u8> {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            let room = NORMAL.min(MAX_CAPACITY.saturating_sub(self.buf.len()));
            self.buf.reserve_exact(room.max(MIN_READ));
        }
        &mut self.buf
    }

    /// Appends `bytes` (TLS plaintext), growing like [`InputBuffer::for_read`] does.
    pub fn extend(&mut self, bytes: &[u8]) {
        let spare = self.buf.capacity() - self.buf.len();
        if spare < bytes.len() {
            self.buf.reserve_exact(
                bytes
                    .len()
                    .max(NORMAL.min(MAX_CAPACITY.saturating_sub(self.buf.len()))),
            );
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The bytes received and not consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf
    }

    /// Drops the first `n` bytes (complete frames) and returns to the normal capacity once
    /// what is left fits in it.
    pub fn consume(&mut self, n: usize) {
        self.buf.drain(..n.min(self.buf.len()));
        if self.buf.capacity() > NORMAL && self.buf.len() <= NORMAL - MIN_READ {
            self.buf.shrink_to(NORMAL);
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::next_frame;

    /// Feeds `bytes` in reads of at most `spare` (as a socket would) and consumes frames.
    fn feed(input: &mut InputBuffer, mut bytes: &[u8], peak: &mut usize) -> usize {
        let mut frames = 0;
        while !bytes.is_empty() {
            let buf = input.for_read();
            let room = buf.capacity() - buf.len();
            let n = room.min(bytes.len());
            buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            *peak = (*peak).max(input.capacity());
            let mut consumed = 0;
            while let Ok(Some(frame)) = next_frame(&input.data()[consumed..]) {
                consumed += frame.len;
                frames += 1;
            }
            input.consume(consumed);
        }
        frames
    }

    fn channel_data(len: u16) -> Vec<u8> {
        let mut frame = vec![0x40, 0x00];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.resize(4 + usize::from(len).next_multiple_of(4), 0xAB);
        frame
    }

    #[test]
    fn the_buffer_returns_to_its_normal_size_after_a_64_kib_frame() {
        let mut input = InputBuffer::new();
        let mut peak = 0;
        assert_eq!(feed(&mut input, &channel_data(0xFFFF), &mut peak), 1);
        assert!(
            peak > MAX_FRAME - NORMAL,
            "the large frame needed room: {peak}"
        );
        assert!(peak <= MAX_CAPACITY, "grew to {peak}");
        assert!(input.capacity() <= NORMAL, "kept {}", input.capacity());

        // Small frames afterwards never grow it again.
        let small: Vec<u8> = (0..100).flat_map(|_| channel_data(1200)).collect();
        let mut peak = 0;
        assert_eq!(feed(&mut input, &small, &mut peak), 100);
        assert!(peak <= NORMAL, "grew to {peak}");
    }

    #[test]
    fn a_partial_large_frame_keeps_its_bytes_until_it_completes() {
        let mut input = InputBuffer::new();
        let frame = channel_data(40_000);
        let mut peak = 0;
        assert_eq!(feed(&mut input, &frame[..30_000], &mut peak), 0);
        assert_eq!(input.len(), 30_000);
        assert_eq!(feed(&mut input, &frame[30_000..], &mut peak), 1);
        assert!(input.is_empty());
        assert!(input.capacity() <= NORMAL);
    }
}
