//! Binding (RFC 8489 §3, §7.3): answers with the client's reflexive address.

use crate::proto::{Message, attr, error_code as ec};

use super::reply;
use super::server::Server;
use super::{DropReason, FiveTuple, Handled, Now, Rejection};

impl Server {
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
        let software = self.settings.software.as_deref();
        match reply::success(out, msg, software, None, |w| {
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
