//! Binding (RFC 8489 §3, §7.3): answers with the client's reflexive address.

use crate::proto::{Message, attr, error_code as ec};

use super::reply::{self, Extra};
use super::server::Server;
use super::{DropReason, FiveTuple, Handled, Now, Rejection};

impl Server {
    /// Binding is never authenticated, so its answer is unsigned and kept within the
    /// amplification limit: XOR-MAPPED-ADDRESS always, then FINGERPRINT, then SOFTWARE when
    /// they fit (a 20-byte request leaves room for both with SOFTWARE up to 20 characters,
    /// even with an IPv6 address). Decision: SOFTWARE is shed rather than the ratio exceeded.
    pub(crate) fn binding(
        &mut self,
        _now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Handled {
        // RFC 5780 §6.1: without an alternate address CHANGE-REQUEST cannot be honoured, and a
        // server that cannot honour it treats it as an unknown attribute.
        if matches!(msg.change_request(), Some(Ok((ip, port))) if ip || port) {
            let rejection = Rejection::new(
                ec::UNKNOWN_ATTRIBUTE,
                "CHANGE-REQUEST needs an alternate address",
            );
            return self.finish_error(msg, rejection, None, out, |w| {
                w.add_unknown_attributes(&[attr::CHANGE_REQUEST])
                    .map(|_| ())
            });
        }
        let software = self.settings.software.as_deref().unwrap_or("");
        let extras = [
            Extra::Fingerprint,
            Extra::Attr(attr::SOFTWARE, software.as_bytes()),
        ];
        // An empty SOFTWARE setting means no attribute.
        let extras = if software.is_empty() {
            &extras[..1]
        } else {
            &extras[..]
        };
        match reply::unsigned(out, msg, None, extras, |w| {
            w.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.client)?;
            Ok(())
        }) {
            Ok(n) => {
                self.counters.requests_ok += 1;
                Handled::Reply(n)
            }
            Err(_) => Handled::Drop(DropReason::Internal),
        }
    }
}
