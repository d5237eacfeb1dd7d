//! Byte helpers shared by the message view, the integrity check and the writer. They live
//! below all three so that `message` and `integrity` can each use them without importing
//! the other (the view calls the integrity check; the check needs only these reads).

/// `len` rounded up to a multiple of 4 (RFC 8489 §14).
pub(crate) const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// The big-endian u16 at `at`. Callers have checked the bounds (the view validates the
/// framing once), so an out-of-range index is a bug, not bad input.
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The big-endian u32 at `at`; bounds as for [`be16`].
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
