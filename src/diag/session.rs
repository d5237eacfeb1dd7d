//! An authenticated conversation with the server, shared by the TURN steps (`turn`) and the
//! relay round trip (`relay`): both drive one [`Session`], and `turn` starts `relay`, so the
//! session lives below both of them rather than in either.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::ProbeConfig;
use super::conn::{Conn, ConnError};
use super::verdict::{Context, Request, Verdict, bug, error_verdict};
use super::verdict_net::format_timeout;
use super::wire::{Auth, Reply, Req, random_tid, request};
use crate::proto::error_code as ec;

/// Times a request is resent with the fresh nonce of a 438 (RFC 8489 §9.2.5).
const STALE_NONCE_RETRIES: u32 = 2;

/// An authenticated conversation with the server.
pub(super) struct Session<'a> {
    pub(super) conn: &'a mut Conn,
    pub(super) auth: Auth,
    /// The password of `auth` (a second allocation on another connection needs it).
    pub(super) password: String,
    pub(super) config: &'a ProbeConfig,
    pub(super) minted: bool,
}

impl Session<'_> {
    /// An authenticated transaction; a 438 is retried with the fresh nonce. Error responses
    /// and silence become verdicts.
    pub(super) async fn transact(
        &mut self,
        req: Req,
        kind: Request,
        peer: Option<IpAddr>,
    ) -> Result<Reply, Verdict> {
        let reply = self.exchange(req, kind).await?;
        if reply.success {
            Ok(reply)
        } else {
            Err(self.refused(kind, peer, &reply))
        }
    }

    /// An authenticated transaction, a 438 retried with the fresh nonce: the last answer,
    /// success or error (callers that look at the error code first); silence is a verdict.
    pub(super) async fn exchange(&mut self, req: Req, kind: Request) -> Result<Reply, Verdict> {
        let mut stale = 0;
        loop {
            let tid = random_tid();
            let raw = request(req, Some(&self.auth), tid).map_err(bug)?;
            let timeout = self.config.timeout;
            let reply = self
                .conn
                .transact(&raw, tid, Some(self.auth.key()), timeout)
                .await
                .map_err(|e| unanswered(kind, &e, timeout))?;
            if let (false, ec::STALE_NONCE, Some(nonce)) = (reply.success, reply.code, &reply.nonce)
                && stale < STALE_NONCE_RETRIES
            {
                stale += 1;
                self.auth.set_nonce(nonce);
                continue;
            }
            return Ok(reply);
        }
    }

    /// The verdict on an error `reply` to `kind`.
    pub(super) fn refused(&self, kind: Request, peer: Option<IpAddr>, reply: &Reply) -> Verdict {
        let ctx = Context {
            username: Some(&self.auth.username),
            ..context(self.config, kind, peer, self.minted, reply.alternate)
        };
        error_verdict(&ctx, reply.code, &reply.reason)
    }
}

/// A verdict context without a username.
pub(super) fn context(
    config: &ProbeConfig,
    request: Request,
    peer: Option<IpAddr>,
    minted: bool,
    alternate: Option<SocketAddr>,
) -> Context<'static> {
    Context {
        request,
        username: None,
        minted,
        unix_now: config.unix_now,
        peer,
        alternate,
    }
}

/// Silence or a broken connection in the middle of the TURN steps.
pub(super) fn unanswered(kind: Request, e: &ConnError, timeout: Duration) -> Verdict {
    let what = match e {
        ConnError::Timeout => format!(
            "no answer to {} within {}",
            kind.name(),
            format_timeout(timeout)
        ),
        other => format!("the connection failed during {}: {other}", kind.name()),
    };
    Verdict {
        expected: false,
        what,
        todo: "the server answered earlier requests, so it may be overloaded or rate-limiting this address; retry, and check its log".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_mid_conversation_names_the_request_and_the_wait() {
        let v = unanswered(
            Request::CreatePermission,
            &ConnError::Timeout,
            Duration::from_secs(2),
        );
        assert_eq!(v.what, "no answer to CreatePermission within 2 s");
        let v = unanswered(Request::Refresh, &ConnError::Closed, Duration::from_secs(2));
        assert!(
            v.what.contains("connection failed during Refresh"),
            "{}",
            v.what
        );
    }

    #[test]
    fn verdict_context_carries_the_clock_and_the_peer() {
        let mut config = ProbeConfig::new("turn:x".parse().unwrap(), 42);
        config.timeout = Duration::from_secs(1);
        let peer = Some("10.0.0.1".parse().unwrap());
        let c = context(&config, Request::ChannelBind, peer, true, None);
        assert_eq!((c.unix_now, c.peer, c.minted), (42, peer, true));
    }
}
