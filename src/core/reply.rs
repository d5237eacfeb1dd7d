//! Writing responses: attributes first, then SOFTWARE, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT
//! (RFC 8489 §14: integrity and fingerprint come last, in that order).
//!
//! Responses to unauthenticated requests are unsigned and sized against the request
//! ([`unsigned`]): a spoofed source must not turn the server into a reflection amplifier.

use crate::auth::Key;
use crate::proto::{Class, Message, MessageType, MessageWriter, WriteError, attr};

use super::Rejection;

/// An unsigned response is at most this many times as long as its request (for a realm of
/// up to 12 characters; REALM and NONCE of a challenge are always sent, RFC 8489 §9.2.4).
pub const AMPLIFICATION_LIMIT: usize = 4;

/// The key and MAC kinds to sign a response with (RFC 8489 §9.2.4, see `authn`).
#[derive(Clone, Copy)]
pub(crate) struct Signer<'k> {
    pub key: &'k Key,
    pub macs: Macs,
}

/// Which integrity attributes a signed response carries (RFC 8489 §14.5, §14.6). When both,
/// MESSAGE-INTEGRITY comes first and MESSAGE-INTEGRITY-SHA256 covers it; a receiver checks
/// the one it knows (§14.5 lets MESSAGE-INTEGRITY-SHA256 follow MESSAGE-INTEGRITY).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Macs {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    pub sha1: bool,
    /// MESSAGE-INTEGRITY-SHA256.
    pub sha256: bool,
}

/// Writes a signed success response to `req`; `body` adds the method's attributes.
pub(crate) fn success(
    out: &mut [u8],
    req: &Message<'_>,
    software: Option<&str>,
    signer: Signer<'_>,
    body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let ty = MessageType::new(req.method(), Class::Success);
    let mut w = MessageWriter::new(out, ty, req.transaction_id())?;
    body(&mut w)?;
    seal(w, software, signer)
}

/// Writes a signed error response carrying the rejection's code and reason.
pub(crate) fn error(
    out: &mut [u8],
    req: &Message<'_>,
    rejection: Rejection,
    software: Option<&str>,
    signer: Signer<'_>,
    body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let ty = MessageType::new(req.method(), Class::Error);
    let mut w = MessageWriter::new(out, ty, req.transaction_id())?;
    w.add_error_code_with(rejection.code, rejection.reason)?;
    body(&mut w)?;
    seal(w, software, signer)
}

/// What an unsigned response may carry beyond its mandatory attributes, in priority order.
#[derive(Clone, Copy)]
pub(crate) enum Extra<'v> {
    /// An attribute (PASSWORD-ALGORITHMS of a challenge, SOFTWARE of a Binding response).
    Attr(u16, &'v [u8]),
    /// FINGERPRINT (RFC 8489 §14.7: optional in STUN; used to demultiplex).
    Fingerprint,
    /// The ERROR-CODE reason phrase (RFC 8489 §14.8: for humans; may be empty).
    Reason,
}

/// Writes an unsigned response to `req`: a success when `error` is `None`. `body` writes the
/// mandatory attributes; each of `extras`, in order, goes in only if the response stays
/// within [`AMPLIFICATION_LIMIT`] times the request. Never SOFTWARE unless listed.
pub(crate) fn unsigned(
    out: &mut [u8],
    req: &Message<'_>,
    error: Option<Rejection>,
    extras: &[Extra<'_>],
    body: impl Fn(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let picked = plan_unsigned(out, req, error, extras, &body)?;
    write_unsigned(out, req, error, extras, picked, &body)
}

/// Which of `extras` an [`unsigned`] response would carry: bit `i` is set when `extras[i]`
/// fits. Uses `out` as scratch. The choice depends only on lengths, so a caller may plan
/// with a placeholder of the right length and write the real value with [`write_unsigned`].
pub(crate) fn plan_unsigned(
    out: &mut [u8],
    req: &Message<'_>,
    error: Option<Rejection>,
    extras: &[Extra<'_>],
    body: &impl Fn(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<u8, WriteError> {
    let budget = AMPLIFICATION_LIMIT.saturating_mul(req.raw().len());
    // First pass: the mandatory part alone, to learn what room is left.
    let mut used = write_unsigned(out, req, error, extras, 0, body)?;
    // Bit i: extras[i] goes in (at most 8 extras are considered).
    let mut mask = 0u8;
    for (i, extra) in extras.iter().take(8).enumerate() {
        let cost = match *extra {
            Extra::Attr(_, value) => 4 + padded(value.len()),
            Extra::Fingerprint => 8,
            Extra::Reason => padded(error.map_or(0, |e| e.reason.len())),
        };
        if used + cost <= budget {
            used += cost;
            mask |= 1 << i;
        }
    }
    Ok(mask)
}

/// Writes an unsigned response with the extras `picked` (see [`plan_unsigned`]).
pub(crate) fn write_unsigned(
    out: &mut [u8],
    req: &Message<'_>,
    error: Option<Rejection>,
    extras: &[Extra<'_>],
    mask: u8,
    body: &impl Fn(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let picked = || {
        extras
            .iter()
            .take(8)
            .enumerate()
            .filter(move |(i, _)| mask & (1 << i) != 0)
            .map(|(_, e)| *e)
    };
    let class = if error.is_some() {
        Class::Error
    } else {
        Class::Success
    };
    let ty = MessageType::new(req.method(), class);
    let mut w = MessageWriter::new(out, ty, req.transaction_id())?;
    if let Some(e) = error {
        let reason = picked().any(|e| matches!(e, Extra::Reason));
        w.add_error_code_with(e.code, if reason { e.reason } else { "" })?;
    }
    body(&mut w)?;
    for extra in picked() {
        if let Extra::Attr(ty, value) = extra {
            w.add(ty, value)?;
        }
    }
    if picked().any(|e| matches!(e, Extra::Fingerprint)) {
        w.add_fingerprint()?;
    }
    Ok(w.finish())
}

pub(crate) fn seal(
    mut w: MessageWriter<'_>,
    software: Option<&str>,
    signer: Signer<'_>,
) -> Result<usize, WriteError> {
    if let Some(s) = software {
        w.add(attr::SOFTWARE, s.as_bytes())?;
    }
    // Never neither: `authn` always picks at least one; MESSAGE-INTEGRITY then stands in.
    let Macs { sha1, sha256 } = signer.macs;
    if sha1 || !sha256 {
        w.add_integrity(signer.key.as_bytes())?;
    }
    if sha256 {
        w.add_integrity_sha256(signer.key.as_bytes())?;
    }
    w.add_fingerprint()?;
    Ok(w.finish())
}

/// `len` rounded up to a multiple of 4 (RFC 8489 §14).
const fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// No attributes beyond the standard ones.
pub(crate) fn nothing(_: &mut MessageWriter<'_>) -> Result<(), WriteError> {
    Ok(())
}
