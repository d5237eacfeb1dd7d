//! The complete frames of one read from a TCP/TLS client, on the data-plane thread: forwards
//! go into the worker's batch and leave with one `sendmmsg` per run of the same relay,
//! replies are gathered and go to the connection's output in one piece. A run stops early at
//! a request that asks for relays (an Allocate): those are bound without the lock (DESIGN.md
//! §3) and the answer must go out before any later reply.

use std::ops::Range;

use crate::core::{FiveTuple, Handled, Now, PeerAddr, RelayId};
use crate::proto::{FramingError, MessageType, Method, next_frame};

use super::admission::{Admission, is_stun_request};
use super::forward::FORWARD_MAX;
use super::worker::Core;

/// The outcome of one run of frames.
pub(crate) struct Run {
    /// Bytes of the input consumed (complete frames).
    pub consumed: usize,
    /// At least one complete frame was read.
    pub framed: bool,
    /// Traffic of this connection's allocation was seen (see [`handle_run`]).
    pub own_traffic: bool,
    /// The last request asked for relays (the core's `OpenRelay` commands); the run stopped
    /// there.
    pub opens: bool,
    /// The stream cannot be framed: the connection must close (after this run's replies).
    pub unframeable: bool,
    /// A ConnectionBind request (RFC 6062 §5.4) at this range of the input, not handled yet:
    /// it goes to the worker owning its connection (`tcp_tasks::connection_bind`), and the
    /// run stopped there, since after its success the stream carries raw bytes.
    pub bind: Option<Range<usize>>,
    /// The run stopped with complete frames possibly left (relays to open, or replies to
    /// write first): the caller writes, then calls again.
    pub more: bool,
}

/// Replies kept before the run stops to have them written: a read packed with small requests
/// must not grow the reply buffer with it (a 64 KiB read holds thousands of Bindings).
const REPLIES_MAX: usize = 8 * 1024;

/// Handles complete frames from `input`: until the input holds no complete frame, or right
/// after a request that asks for relays. Replies are appended to `replies`; `scratch` is
/// room for one reply.
pub(crate) fn handle_run(
    core: &mut Core,
    admission: &Admission,
    now: Now,
    ft: FiveTuple,
    input: &[u8],
    scratch: &mut [u8],
    replies: &mut Vec<u8>,
) -> Run {
    let mut run = Run {
        consumed: 0,
        framed: false,
        own_traffic: false,
        opens: false,
        unframeable: false,
        bind: None,
        more: false,
    };
    loop {
        let frame = match next_frame(&input[run.consumed..]) {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(FramingError::UnknownKind | FramingError::BadStunHeader) => {
                run.unframeable = true;
                break;
            }
        };
        let pkt = &input[run.consumed..run.consumed + frame.len];
        run.consumed += frame.len;
        run.framed = true;
        // A refused request is not activity: it never reaches the core.
        if is_stun_request(pkt) {
            if !admission.allow(ft.client.addr().ip()) {
                continue;
            }
            // A request may close a relay (Refresh 0) or change what it may reach: data the
            // client sent before it leaves first, as on UDP (`udp.rs`).
            core.stream_forwards.flush(&core.relays);
            if is_method(pkt, Method::CONNECTION_BIND) {
                run.bind = Some(run.consumed - frame.len..run.consumed);
                run.more = true;
                break;
            }
        }
        match core.server.handle_client(now, ft, pkt, scratch) {
            Handled::Forward {
                relay,
                peer,
                payload,
            } => {
                forward(core, relay, pkt, payload, peer);
                // Data the core relayed is the allocation's traffic.
                run.own_traffic = true;
            }
            // The core sends from another address or to another port (RFC 5780) only for
            // UDP clients; a stream has one way back anyway.
            Handled::Reply(len) | Handled::ReplyFrom { len, .. } => {
                replies.extend_from_slice(&scratch[..len]);
                // A TURN request (Allocate, Refresh, permissions, channels) answered while
                // the allocation lives is its traffic; a Binding concerns no allocation.
                if !is_method(pkt, Method::BINDING) && core.server.has_allocation(&ft) {
                    run.own_traffic = true;
                }
            }
            // Dropped data is not traffic: it does not keep the connection alive.
            Handled::Drop(_) => {}
        }
        run.opens = core.has_opens();
        if run.opens || replies.len() >= REPLIES_MAX {
            run.more = true;
            break;
        }
    }
    core.stream_forwards.flush(&core.relays);
    run
}

/// Queues one forward in the worker's batch, or sends it alone when it is larger than a batch
/// slot (after what the batch holds, so datagrams keep their order).
fn forward(core: &mut Core, relay: RelayId, pkt: &[u8], payload: Range<usize>, peer: PeerAddr) {
    let Some(data) = pkt.get(payload) else {
        return;
    };
    if data.len() <= FORWARD_MAX {
        core.stream_forwards.push(&core.relays, relay, data, peer);
    } else {
        core.stream_forwards.flush(&core.relays);
        core.relays.send(relay, data, peer);
    }
}

/// Whether a STUN message is of `method` (RFC 8489 §18.1).
fn is_method(pkt: &[u8], method: Method) -> bool {
    pkt.get(..2)
        .and_then(|t| MessageType::from_u16(u16::from_be_bytes([t[0], t[1]])))
        .is_some_and(|t| t.method == method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_binding_messages_are_classified_as_binding() {
        let is_binding = |pkt: &[u8]| is_method(pkt, Method::BINDING);
        assert!(is_binding(&[0x00, 0x01, 0, 0]));
        assert!(is_binding(&[0x01, 0x01]));
        assert!(!is_binding(&[0x00, 0x03]));
        assert!(!is_binding(&[0x00]));
        assert!(!is_binding(&[0x40, 0x01]));
        assert!(is_method(&[0x00, 0x0B, 0, 0], Method::CONNECTION_BIND));
    }
}
