//! Binding (RFC 8489 §3, §7.3): answers with the client's reflexive address; with an
//! alternate address, also RFC 5780 NAT behaviour discovery (§6, §7) over UDP.

use crate::proto::{AddressValue, Message, MessageWriter, WriteError, attr, error_code as ec};

use super::nat_discovery::NatDiscovery;
use super::reply::{self, AMPLIFICATION_LIMIT, Extra};
use super::server::Server;
use super::{DropReason, FiveTuple, Handled, Now, Rejection, Transport};

/// PADDING value length in a response: RFC 5780 §7.6 asks for the MTU of the outgoing
/// interface; the core knows no interface (sans-IO), so an Ethernet MTU, a multiple of 4.
const PADDING_TARGET: usize = 1500;
/// PADDING's content does not matter (RFC 5780 §7.6).
static ZEROS: [u8; PADDING_TARGET] = [0; PADDING_TARGET];

impl Server {
    /// Binding is never authenticated, so its answer is unsigned and kept within the
    /// amplification limit: XOR-MAPPED-ADDRESS always, then FINGERPRINT, then SOFTWARE when
    /// they fit (a 20-byte request leaves room for both with SOFTWARE up to 20 characters,
    /// even with an IPv6 address). Decision: SOFTWARE is shed rather than the ratio exceeded.
    ///
    /// RFC 5780 applies to a request that reached one of the four discovery sockets over UDP.
    /// Its tests are UDP tests (§4), and an answer on a TCP/TLS connection can only leave
    /// from the connection's own address, so a stream client is answered as by a server
    /// without an alternate address: 420 to CHANGE-REQUEST (§6.1), no OTHER-ADDRESS.
    pub(crate) fn binding(
        &mut self,
        _now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Handled {
        match self.settings.nat_discovery {
            Some(nat) if from.transport == Transport::Udp && nat.contains(from.server) => {
                self.discovery_binding(nat, from, msg, out)
            }
            _ => self.plain_binding(from, msg, out),
        }
    }

    /// A server without a second address (or a request it cannot serve from one).
    fn plain_binding(&mut self, from: FiveTuple, msg: &Message<'_>, out: &mut [u8]) -> Handled {
        // RFC 5780 §6.1: without an alternate address CHANGE-REQUEST cannot be honoured, and a
        // server that cannot honour it treats it as an unknown attribute.
        if matches!(msg.change_request(), Some(Ok((ip, port))) if ip || port) {
            let reason = match (self.settings.nat_discovery, from.transport) {
                (None, _) => "CHANGE-REQUEST needs an alternate address",
                (Some(_), Transport::Udp) => "CHANGE-REQUEST is served on the RFC 5780 port only",
                (Some(_), Transport::Tcp | Transport::Tls) => "CHANGE-REQUEST works over UDP only",
            };
            let rejection = Rejection::new(ec::UNKNOWN_ATTRIBUTE, reason);
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
            w.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.client.addr())?;
            Ok(())
        }) {
            Ok(n) => {
                self.counters.requests_ok += 1;
                Handled::Reply(n)
            }
            Err(_) => Handled::Drop(DropReason::Internal),
        }
    }

    /// RFC 5780 §6.1: sent from the socket CHANGE-REQUEST names, to the client's IP at
    /// RESPONSE-PORT or its own port, with OTHER-ADDRESS, RESPONSE-ORIGIN and PADDING.
    ///
    /// The answer is unsigned, so the amplification limit holds (`reply::unsigned`). After
    /// XOR-MAPPED-ADDRESS come, as room allows and in this order: OTHER-ADDRESS (what a
    /// client needs to run the tests), RESPONSE-ORIGIN, FINGERPRINT, an empty PADDING, and
    /// SOFTWARE. §6.1 says the server MUST add OTHER-ADDRESS and RESPONSE-ORIGIN, but for a
    /// bare 20-byte IPv6 request the three addresses alone exceed 4× (92 bytes > 80): there
    /// RESPONSE-ORIGIN is the one shed. Any IPv4 request, and an IPv6 request with any
    /// attribute (a FINGERPRINT, a CHANGE-REQUEST), gets both.
    ///
    /// PADDING (§7.6) decision: the PADDING value takes the room left under the limit, up to
    /// [`PADDING_TARGET`]. A fragmentation test pads its request to the MTU too (coturn's
    /// `turnutils_natdiscovery -P` sends 1500 bytes), which leaves room for a full-size
    /// padded answer, so such a client gets what §7.6 asks for; a small request asking for
    /// PADDING gets a short one. Answering an error instead would fail clients for no gain,
    /// and honouring a small request with 1500 bytes is exactly the amplifier the limit
    /// forbids. PADDING with RESPONSE-PORT is answered 400, as §6.1 requires.
    fn discovery_binding(
        &mut self,
        nat: NatDiscovery,
        from: FiveTuple,
        msg: &Message<'_>,
        out: &mut [u8],
    ) -> Handled {
        let asked = match Asked::read(msg) {
            Ok(asked) => asked,
            Err(rejection) => return self.finish_error(msg, rejection, None, out, reply::nothing),
        };
        // `binding` checked that `from.server` is one of the four addresses.
        let (Some(origin), Some(other)) = (
            nat.changed(from.server, asked.change_ip, asked.change_port),
            nat.other(from.server),
        ) else {
            return self.plain_binding(from, msg, out);
        };
        let mut to = from.client.addr();
        if let Some(port) = asked.response_port {
            // RFC 5780 §7.5: the request's source IP, never another host (no reflection to
            // third parties), at the port asked for.
            to.set_port(port);
        }
        let other = AddressValue::new(other);
        let origin_value = AddressValue::new(origin);
        let software = self.settings.software.as_deref().unwrap_or("");
        // In priority order; PADDING, when asked for, is `extras[PADDING_AT]`.
        const PADDING_AT: usize = 3;
        let wanted = [
            Some(Extra::Attr(attr::OTHER_ADDRESS, other.as_bytes())),
            Some(Extra::Attr(attr::RESPONSE_ORIGIN, origin_value.as_bytes())),
            Some(Extra::Fingerprint),
            asked.padding.then_some(Extra::Attr(attr::PADDING, &[])),
            (!software.is_empty()).then_some(Extra::Attr(attr::SOFTWARE, software.as_bytes())),
        ];
        let mut extras = [Extra::Fingerprint; 5];
        let mut count = 0;
        for extra in wanted.into_iter().flatten() {
            extras[count] = extra;
            count += 1;
        }
        let body = |w: &mut MessageWriter<'_>| -> Result<(), WriteError> {
            w.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.client.addr())?;
            Ok(())
        };
        let written = (|| -> Result<usize, WriteError> {
            let extras = &mut extras[..count];
            let mask = reply::plan_unsigned(out, msg, None, extras, &body)?;
            let len = reply::write_unsigned(out, msg, None, extras, mask, &body)?;
            // The empty PADDING made it in: give it the room left under the limit.
            if !asked.padding || mask & (1 << PADDING_AT) == 0 {
                return Ok(len);
            }
            let budget = AMPLIFICATION_LIMIT.saturating_mul(msg.raw().len());
            let room = budget.min(out.len()).saturating_sub(len);
            let pad = room.min(PADDING_TARGET) & !3;
            if pad == 0 {
                return Ok(len);
            }
            extras[PADDING_AT] = Extra::Attr(attr::PADDING, &ZEROS[..pad]);
            reply::write_unsigned(out, msg, None, extras, mask, &body)
        })();
        let Ok(len) = written else {
            return Handled::Drop(DropReason::Internal);
        };
        self.counters.requests_ok += 1;
        if origin == from.server && to == from.client.addr() {
            Handled::Reply(len)
        } else {
            Handled::ReplyFrom {
                len,
                local: origin,
                to,
            }
        }
    }
}

/// What an RFC 5780 Binding request asks for.
struct Asked {
    change_ip: bool,
    change_port: bool,
    response_port: Option<u16>,
    padding: bool,
}

impl Asked {
    /// Reads CHANGE-REQUEST, RESPONSE-PORT and PADDING; a malformed one or a combination
    /// §6.1 refuses is a 400.
    fn read(msg: &Message<'_>) -> Result<Self, Rejection> {
        let bad = |reason| Err(Rejection::new(ec::BAD_REQUEST, reason));
        let (change_ip, change_port) = match msg.change_request() {
            None => (false, false),
            Some(Ok(flags)) => flags,
            Some(Err(_)) => return bad("malformed CHANGE-REQUEST"),
        };
        let response_port = match msg.response_port() {
            None => None,
            // Nothing can be sent to port 0.
            Some(Ok(0)) => return bad("RESPONSE-PORT 0 cannot be sent to"),
            Some(Ok(port)) => Some(port),
            Some(Err(_)) => return bad("malformed RESPONSE-PORT"),
        };
        let padding = msg.has(attr::PADDING);
        // RFC 5780 §6.1: PADDING and RESPONSE-PORT together are answered 400 (a padded answer
        // to a port the request did not come from).
        if padding && response_port.is_some() {
            return bad("PADDING and RESPONSE-PORT cannot be combined");
        }
        Ok(Self {
            change_ip,
            change_port,
            response_port,
            padding,
        })
    }
}
