//! Writing responses: attributes first, then SOFTWARE, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT
//! (RFC 8489 §14: integrity and fingerprint come last, in that order).

use crate::auth::Key;
use crate::proto::{Class, Message, MessageType, MessageWriter, WriteError, attr};

use super::Rejection;

/// The key and MAC kind to sign a response with: the request's (RFC 8489 §9.2.4).
#[derive(Clone, Copy)]
pub(crate) struct Signer<'k> {
    pub key: &'k Key,
    pub sha256: bool,
}

/// Writes a success response to `req`; `body` adds the method's attributes.
pub(crate) fn success(
    out: &mut [u8],
    req: &Message<'_>,
    software: Option<&str>,
    signer: Option<Signer<'_>>,
    body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let ty = MessageType::new(req.method(), Class::Success);
    let mut w = MessageWriter::new(out, ty, req.transaction_id())?;
    body(&mut w)?;
    seal(w, software, signer)
}

/// Writes an error response carrying the rejection's code and reason.
pub(crate) fn error(
    out: &mut [u8],
    req: &Message<'_>,
    rejection: Rejection,
    software: Option<&str>,
    signer: Option<Signer<'_>>,
    body: impl FnOnce(&mut MessageWriter<'_>) -> Result<(), WriteError>,
) -> Result<usize, WriteError> {
    let ty = MessageType::new(req.method(), Class::Error);
    let mut w = MessageWriter::new(out, ty, req.transaction_id())?;
    w.add_error_code_with(rejection.code, rejection.reason)?;
    body(&mut w)?;
    seal(w, software, signer)
}

fn seal(
    mut w: MessageWriter<'_>,
    software: Option<&str>,
    signer: Option<Signer<'_>>,
) -> Result<usize, WriteError> {
    if let Some(s) = software {
        w.add(attr::SOFTWARE, s.as_bytes())?;
    }
    if let Some(signer) = signer {
        if signer.sha256 {
            w.add_integrity_sha256(signer.key.as_bytes())?;
        } else {
            w.add_integrity(signer.key.as_bytes())?;
        }
    }
    w.add_fingerprint()?;
    Ok(w.finish())
}

/// No attributes beyond the standard ones.
pub(crate) fn nothing(_: &mut MessageWriter<'_>) -> Result<(), WriteError> {
    Ok(())
}
