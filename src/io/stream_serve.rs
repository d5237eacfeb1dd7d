//! Serving one TCP/TLS client's input on the data-plane thread: its complete frames
//! (`stream_frames`), its deadlines, and what must happen once the worker's lock is released
//! (relays to bind, a ConnectionBind for another worker).

use crate::core::Now;
use crate::proto::MAX_FRAME;

use super::admission::Admission;
use super::stream_frames::handle_run;
use super::streams::Conn;
use super::worker::Core;

/// Reusable room for serving connections: one reply, and the replies of one run of frames.
pub(crate) struct ServeBuffers {
    scratch: Vec<u8>,
    replies: Vec<u8>,
}

impl ServeBuffers {
    pub fn new() -> Self {
        Self {
            scratch: vec![0u8; 2048],
            replies: Vec::with_capacity(2048),
        }
    }
}

/// Where serving a connection's input stopped.
pub(crate) enum After {
    /// No complete frame left.
    Done,
    /// Its output must drain first.
    Hold,
    /// Its Allocate's relays are to be bound (the run stopped right after it).
    Relays,
    /// A ConnectionBind (RFC 6062 §5.4), consumed from the input, to hand to the worker
    /// owning its connection.
    Bind(Vec<u8>),
    /// The connection must close (after what its replies left in its output).
    Close(&'static str),
}

/// Handles the complete frames in `conn`'s input.
pub(crate) fn serve_input(
    core: &mut Core,
    conn: &mut Conn,
    admission: &Admission,
    now: Now,
    bufs: &mut ServeBuffers,
) -> After {
    let mut consumed = 0;
    let after = loop {
        let input = &conn.input.data()[consumed..];
        let run = handle_run(
            core,
            admission,
            now,
            conn.ft,
            input,
            &mut bufs.scratch,
            &mut bufs.replies,
        );
        let start = consumed;
        consumed += run.consumed;
        if run.framed {
            conn.timers.first_frame = None;
        }
        if run.own_traffic {
            conn.timers.allocation_traffic(now.mono);
        }
        if !bufs.replies.is_empty() {
            conn.reply(&bufs.replies);
            bufs.replies.clear();
        }
        if run.unframeable {
            break After::Close("unframeable stream data");
        }
        if !run.more {
            break After::Done;
        }
        if let Some(range) = run.bind {
            let frame = conn.input.data()[start + range.start..start + range.end].to_vec();
            break After::Bind(frame);
        }
        if run.opens {
            break After::Relays;
        }
        if conn.wants_hold() {
            break After::Hold;
        }
    };
    conn.input.consume(consumed);
    if matches!(after, After::Close(_)) {
        return after;
    }
    if conn.input.len() > MAX_FRAME {
        return After::Close("message larger than a frame can be");
    }
    conn.timers
        .partial_frame(!conn.input.is_empty(), consumed > 0, now.mono);
    after
}
