//! Keeping allocations alive during long runs without blocking the data loop: Refresh
//! (RFC 8656 §8) and ChannelBind or CreatePermission again (permissions last 300 s, RFC 8656
//! §9), one transaction at a time per allocation, answered through the data loop's receive
//! path and retransmitted on the loop's clock (RFC 8489 §6.2.1; over TCP/TLS the same timer
//! only bounds the wait, RFC 8489 §6.2.2).

use super::LoadError;
use super::control::{Auth, Outcome, Request, random_tid};
use super::link::Link;
use crate::proto::{Message, TransactionId};

/// Control retransmission timeout (RFC 8489 §6.2.1: 500 ms, doubled; capped at 2 s here).
const RTO_NS: u64 = 500_000_000;
/// Transmissions before a refresh counts as failed.
const ATTEMPTS: u32 = 6;

/// Refresh results, summed over all allocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct RefreshCounts {
    /// Transactions that succeeded.
    pub done: u64,
    /// Transactions rejected or never answered.
    pub failed: u64,
}

/// The refresh state of one allocation.
#[derive(Debug, Default)]
pub(super) struct Refresher {
    pending: Option<Pending>,
    queued: Vec<Request>,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    req: Request,
    tid: TransactionId,
    sent_ns: u64,
    attempts: u32,
}

impl Refresher {
    /// Queues `req`; it goes out once the requests before it are answered.
    pub(super) fn queue(&mut self, req: Request) {
        self.queued.push(req);
    }

    /// Sends the next queued request, or retransmits the one in flight when its timer ran out.
    pub(super) fn poll<L: Link>(
        &mut self,
        link: &mut L,
        auth: &Auth,
        now_ns: u64,
        counts: &mut RefreshCounts,
    ) -> Result<(), LoadError> {
        match self.pending {
            Some(p) if now_ns.saturating_sub(p.sent_ns) < RTO_NS << p.attempts.min(2) => {}
            Some(p) if p.attempts + 1 >= ATTEMPTS => {
                self.pending = None;
                counts.failed += 1;
            }
            Some(p) => {
                // RFC 8489 §6.2.2: no retransmission over a reliable transport.
                if !L::RELIABLE {
                    transmit(link, auth, p.req, p.tid)?;
                }
                self.pending = Some(Pending {
                    sent_ns: now_ns,
                    attempts: p.attempts + 1,
                    ..p
                });
            }
            None if !self.queued.is_empty() => {
                let req = self.queued.remove(0);
                self.start(link, auth, req, now_ns)?;
            }
            None => {}
        }
        Ok(())
    }

    /// A STUN message that arrived on the allocation's link during the run.
    pub(super) fn handle_response(
        &mut self,
        auth: &mut Auth,
        msg: &Message<'_>,
        counts: &mut RefreshCounts,
    ) {
        let Some(p) = self.pending.filter(|p| p.tid == msg.transaction_id()) else {
            return; // the answer to a retransmission already answered
        };
        self.pending = None;
        match auth.judge(msg, p.req.name()) {
            Ok(Outcome::Done) => counts.done += 1,
            // A new nonce (438): the same request again at the next poll, in a new transaction
            // (sent from there because the link is busy receiving now).
            Ok(Outcome::Retry) => self.queued.insert(0, p.req),
            Ok(Outcome::Rejected(_)) | Err(_) => counts.failed += 1,
        }
    }

    fn start<L: Link>(
        &mut self,
        link: &mut L,
        auth: &Auth,
        req: Request,
        now_ns: u64,
    ) -> Result<(), LoadError> {
        let tid = random_tid()?;
        transmit(link, auth, req, tid)?;
        self.pending = Some(Pending {
            req,
            tid,
            sent_ns: now_ns,
            attempts: 0,
        });
        Ok(())
    }
}

fn transmit<L: Link>(
    link: &mut L,
    auth: &Auth,
    req: Request,
    tid: TransactionId,
) -> Result<(), LoadError> {
    let mut buf = [0u8; 512];
    let len = auth.write(&mut buf, req, tid)?;
    link.send_control(&buf[..len])
}
