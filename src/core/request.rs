//! STUN requests: dispatch, the credential check and the error responses (RFC 8489 §6.3,
//! §9.2.4; RFC 8656 §7–§11).

use std::sync::Arc;

use crate::proto::{self, Message, Method, attr, error_code as ec};

use super::authn::{self, AuthFailure, Authenticated};
use super::reply::{self, Extra, Signer};
use super::server::Server;
use super::{DropReason, FiveTuple, Handled, Now, Rejection};

/// The 420 of a request with unknown comprehension-required attributes (RFC 8489 §7.3.1).
const UNKNOWN_ATTRIBUTE: Rejection = Rejection::new(
    ec::UNKNOWN_ATTRIBUTE,
    "unknown comprehension-required attribute",
);

impl Server {
    pub(super) fn handle_request(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Handled {
        let unknown = *msg.unknown_required();
        let method = msg.method();
        if method == Method::BINDING {
            // RFC 8489 §6.3: Binding needs no authentication, so the unknown-attribute check
            // comes right away.
            if !unknown.is_empty() {
                return self.finish_error(msg, UNKNOWN_ATTRIBUTE, None, out, |w| {
                    w.add_unknown_attributes(unknown.as_slice()).map(|_| ())
                });
            }
            return self.binding(now, from, msg, out);
        }
        if !matches!(
            method,
            Method::ALLOCATE | Method::REFRESH | Method::CREATE_PERMISSION | Method::CHANNEL_BIND
        ) {
            let rejection = Rejection::new(ec::BAD_REQUEST, "unsupported method");
            return self.finish_error(msg, rejection, None, out, reply::nothing);
        }
        let tid = msg.transaction_id();
        if let Some(previous) = self.cache.get(&from, &tid, now.mono) {
            let n = previous.len().min(out.len());
            out[..n].copy_from_slice(&previous[..n]);
            return Handled::Reply(n);
        }
        // A retransmitted Allocate whose relay is still being opened: the answer follows the
        // confirmation (RFC 8489 §6.3.1: one transaction, one answer; no second relay).
        if self.is_pending(&from, &tid) {
            return Handled::Drop(DropReason::Pending);
        }
        let credentials = Arc::clone(&self.credentials);
        let auth = match authn::authenticate(
            msg,
            &credentials,
            &self.nonces,
            from.client,
            now.unix_secs,
        ) {
            Ok(auth) => auth,
            Err(failure) => return self.auth_failed(now, from, msg, failure, out),
        };
        // RFC 8489 §6.3: unknown comprehension-required attributes are checked once the
        // authentication checks are done, so the 420 is signed like any other answer.
        let result = if !unknown.is_empty() {
            Err(UNKNOWN_ATTRIBUTE)
        } else {
            match method {
                Method::ALLOCATE => match self.allocate(now, from, msg, &auth) {
                    // Answered by `relay_opened` once IO confirms the relay (DESIGN.md §3).
                    Ok(()) => return Handled::Drop(DropReason::Pending),
                    Err(rejection) => Err(rejection),
                },
                Method::REFRESH => self.refresh(now, from, msg, &auth, out),
                Method::CREATE_PERMISSION => self.create_permission(now, from, msg, &auth, out),
                _ => self.channel_bind(now, from, msg, &auth, out),
            }
        };
        let handled = match result {
            Ok(Ok(n)) => {
                self.counters.requests_ok += 1;
                Handled::Reply(n)
            }
            Ok(Err(_)) => Handled::Drop(DropReason::Internal),
            Err(rejection) => {
                if rejection.code == ec::WRONG_CREDENTIALS {
                    self.counters.count_auth_failure(rejection.reason);
                }
                let signer = Some(Signer {
                    key: &auth.key,
                    sha256: auth.sha256,
                });
                let user = String::from_utf8_lossy(auth.username);
                tracing::info!(target: "turnstone::relay", client = %from.client, user = %user,
                    method = method.name(), code = rejection.code, reason = rejection.reason, "request rejected");
                let alternate = self
                    .settings
                    .alternate_server
                    .filter(|_| rejection.code == ec::TRY_ALTERNATE);
                self.finish_error(msg, rejection, signer, out, |w| {
                    if let Some(addr) = alternate {
                        w.add_address(attr::ALTERNATE_SERVER, addr)?;
                    }
                    if rejection.code == ec::UNKNOWN_ATTRIBUTE {
                        w.add_unknown_attributes(unknown.as_slice())?;
                    }
                    Ok(())
                })
            }
        };
        if let Handled::Reply(n) = handled {
            self.cache.insert(from, tid, &out[..n], now.mono);
        }
        handled
    }

    /// Answers a failed credential check, unsigned: the key is unknown or unproven.
    fn auth_failed(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        failure: AuthFailure,
        out: &mut [u8],
    ) -> Handled {
        match failure {
            AuthFailure::BadRequest(rejection) => {
                self.counters.count_auth_failure(rejection.reason);
                tracing::info!(target: "turnstone::auth", client = %from.client, method = msg.method().name(),
                    reason = rejection.reason, "request rejected (400)");
                self.finish_error(msg, rejection, None, out, reply::nothing)
            }
            AuthFailure::Challenge(detail) => {
                // The first 401 of every exchange is the normal challenge, not a failure.
                if msg.has_integrity() {
                    self.counters.count_auth_failure(detail.reason);
                    tracing::info!(target: "turnstone::auth", client = %from.client, method = msg.method().name(),
                        code = detail.code, reason = detail.reason, "authentication failed");
                }
                // The wire does not tell an unknown user from a wrong password (see `authn`).
                let rejection = Rejection::new(detail.code, authn::wire_reason(detail.code));
                let features = self.credentials.security_features();
                let nonce = self.nonces.issue(now.unix_secs, from.client, features);
                let credentials = Arc::clone(&self.credentials);
                // RFC 8489 §9.2.4: REALM and NONCE always; PASSWORD-ALGORITHMS is optional in
                // the first 401 and goes first among the extras (it enables SHA-256).
                let extras = [
                    Extra::Attr(attr::PASSWORD_ALGORITHMS, &authn::PASSWORD_ALGORITHMS),
                    Extra::Fingerprint,
                    Extra::Reason,
                ];
                self.respond_unsigned(msg, Some(rejection), &extras, out, |w| {
                    w.add(attr::REALM, credentials.realm().as_bytes())?;
                    w.add(attr::NONCE, nonce.as_bytes())?;
                    Ok(())
                })
            }
        }
    }

    /// A success response signed with the request's key and MAC kind.
    pub(crate) fn signed_success(
        &self,
        out: &mut [u8],
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        body: impl FnOnce(&mut proto::MessageWriter<'_>) -> Result<(), proto::WriteError>,
    ) -> Result<usize, proto::WriteError> {
        let signer = Signer {
            key: &auth.key,
            sha256: auth.sha256,
        };
        reply::success(out, msg, self.settings.software.as_deref(), signer, body)
    }

    /// An error response: signed with SOFTWARE when `signer` is given, else unsigned and
    /// within the amplification limit (no SOFTWARE; FINGERPRINT and reason as room allows).
    pub(crate) fn finish_error(
        &mut self,
        msg: &Message<'_>,
        rejection: Rejection,
        signer: Option<Signer<'_>>,
        out: &mut [u8],
        body: impl Fn(&mut proto::MessageWriter<'_>) -> Result<(), proto::WriteError>,
    ) -> Handled {
        let Some(signer) = signer else {
            let extras = [Extra::Fingerprint, Extra::Reason];
            return self.respond_unsigned(msg, Some(rejection), &extras, out, body);
        };
        self.counters.requests_rejected += 1;
        let software = self.settings.software.as_deref();
        match reply::error(out, msg, rejection, software, signer, body) {
            Ok(n) => Handled::Reply(n),
            Err(_) => Handled::Drop(DropReason::Internal),
        }
    }

    /// An unsigned response within the amplification limit (see [`reply::unsigned`]).
    pub(crate) fn respond_unsigned(
        &mut self,
        msg: &Message<'_>,
        error: Option<Rejection>,
        extras: &[Extra<'_>],
        out: &mut [u8],
        body: impl Fn(&mut proto::MessageWriter<'_>) -> Result<(), proto::WriteError>,
    ) -> Handled {
        match error {
            Some(_) => self.counters.requests_rejected += 1,
            None => self.counters.requests_ok += 1,
        }
        match reply::unsigned(out, msg, error, extras, body) {
            Ok(n) => Handled::Reply(n),
            Err(_) => Handled::Drop(DropReason::Internal),
        }
    }
}
