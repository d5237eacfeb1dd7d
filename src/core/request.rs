//! STUN requests: dispatch, the credential check and the error responses (RFC 8489 §6.3,
//! §9.2.4; RFC 8656 §7–§11).

use std::sync::Arc;

use crate::auth::{NonceBuf, SecurityFeatures};
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
            Method::ALLOCATE
                | Method::REFRESH
                | Method::CREATE_PERMISSION
                | Method::CHANNEL_BIND
                | Method::CONNECT
                | Method::CONNECTION_BIND
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
        if self.is_pending(&from, &tid) || self.is_connecting(&from, &tid) {
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
                // RFC 6062 §5.2: answered by `peer_connected` once IO tried the peer.
                Method::CONNECT => match self.connect(now, from, msg, &auth) {
                    Ok(()) => return Handled::Drop(DropReason::Pending),
                    Err(rejection) => Err(rejection),
                },
                Method::CONNECTION_BIND => self.connection_bind(now, from, msg, &auth, out),
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
                    macs: auth.macs,
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
                self.challenge(now, from, msg, rejection, out)
            }
        }
    }

    /// A 401 or 438 with REALM and NONCE, and PASSWORD-ALGORITHMS when it fits within the
    /// amplification limit. RFC 8489 §9.2.5: a client that sees the "password algorithms"
    /// bit in the nonce but no PASSWORD-ALGORITHMS gives up, so when the attribute does not
    /// fit the nonce goes without the bit; the client then uses MD5 and MESSAGE-INTEGRITY,
    /// legitimately, as the bits are under the nonce's MAC (no one else can clear them).
    fn challenge(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        rejection: Rejection,
        out: &mut [u8],
    ) -> Handled {
        // Its bit in the `plan_unsigned` mask: PASSWORD-ALGORITHMS is `extras[0]`.
        const PASSWORD_ALGORITHMS_EXTRA: u8 = 1 << 0;
        let credentials = Arc::clone(&self.credentials);
        let realm = credentials.realm().as_bytes();
        // RFC 8489 §9.2.4: REALM and NONCE always; PASSWORD-ALGORITHMS is optional in
        // the first 401 and goes first among the extras (it enables SHA-256).
        let extras = [
            Extra::Attr(attr::PASSWORD_ALGORITHMS, &authn::PASSWORD_ALGORITHMS),
            Extra::Fingerprint,
            Extra::Reason,
        ];
        // Every nonce has the same length, so a placeholder decides what fits.
        let placeholder = [b'A'; NonceBuf::LEN];
        let error = Some(rejection);
        let Ok(picked) = reply::plan_unsigned(
            out,
            msg,
            error,
            &extras,
            &challenge_body(realm, &placeholder),
        ) else {
            return Handled::Drop(DropReason::Internal);
        };
        let offered = credentials.security_features();
        let features = SecurityFeatures {
            password_algorithms: offered.password_algorithms
                && picked & PASSWORD_ALGORITHMS_EXTRA != 0,
            ..offered
        };
        let nonce = self
            .nonces
            .issue(now.unix_secs, from.client.addr(), features);
        self.counters.requests_rejected += 1;
        match reply::write_unsigned(
            out,
            msg,
            error,
            &extras,
            picked,
            &challenge_body(realm, nonce.as_bytes()),
        ) {
            Ok(n) => Handled::Reply(n),
            Err(_) => Handled::Drop(DropReason::Internal),
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
            macs: auth.macs,
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

/// The mandatory attributes of a challenge (RFC 8489 §9.2.4).
fn challenge_body<'a>(
    realm: &'a [u8],
    nonce: &'a [u8],
) -> impl Fn(&mut proto::MessageWriter<'_>) -> Result<(), proto::WriteError> + 'a {
    move |w| {
        w.add(attr::REALM, realm)?;
        w.add(attr::NONCE, nonce)?;
        Ok(())
    }
}
