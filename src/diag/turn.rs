//! The TURN steps: the 401 challenge, Allocate, CreatePermission toward the probe's own echo
//! socket, a ChannelData round trip through the relay, and Refresh with LIFETIME 0.

use std::net::{IpAddr, SocketAddr};

use super::conn::{Conn, ConnError, udp_socket};
use super::relay;
use super::report::{Status, Step, StepReport};
use super::session::{Session, context, unanswered};
use super::verdict::{
    Context, Request, SKEW_TTL_SECS, Verdict, bug, clock_skew, error_verdict, is_private,
    minted_secret_wrong,
};
use super::verdict_net::{allocate_unanswered, missing_challenge};
use super::wire::{self, Auth, Integrity, Reply, Req, random_tid, request};
use super::{Credentials, ProbeConfig, REST_TTL};
use crate::auth::{rest_password, rest_username};
use crate::proto::error_code as ec;

/// What the Allocate with a week-long credential found, after a 401 to the one minted first.
enum ClockCheck<'a> {
    /// Accepted: the clocks differ. The session on the fresh connection, and its allocation.
    Skew(Session<'a>, Box<Reply>),
    /// Refused too: the secret is wrong.
    SecretWrong(Verdict),
    /// No clear answer.
    NotRun,
}

/// Whether a 401's reason phrase leaves the cause open (RFC 8489's advice: the same answer for
/// a wrong password and an unknown user).
fn generic(reason: &str) -> bool {
    let lower = reason.to_ascii_lowercase();
    !(lower.contains("expired") || lower.contains("unknown user"))
}

/// Steps 4 to 6, after a successful Binding. `second` opens another connection to the
/// server, for a relay test between two allocations when the server refuses this machine as
/// a peer.
pub(super) async fn run(
    config: &ProbeConfig,
    server: SocketAddr,
    conn: &mut Conn,
    reflexive: SocketAddr,
    steps: &mut Vec<StepReport>,
    second: impl AsyncFn() -> Option<Conn>,
) {
    let Some((realm, nonce)) = challenge(config, conn, steps).await else {
        return;
    };
    let Some((username, password, minted)) = config.credentials.resolve(config.unix_now) else {
        steps.push(StepReport::fail(
            Step::Allocate,
            "no credentials given, and the server requires them",
            "pass --user and --password, or --secret with the server's shared secret",
        ));
        return;
    };
    let auth = Auth::new(&username, &password, &realm, &nonce);
    let mut session = Session {
        conn,
        auth,
        password,
        config,
        minted,
    };
    // A second connection, when the clock check needs one: declared here, as the session
    // may move to it.
    let mut fresh: Option<Conn>;
    let reply = match session.exchange(Req::Allocate, Request::Allocate).await {
        Ok(reply) => reply,
        Err(v) => {
            steps.push(StepReport::fail(Step::Allocate, v.what, v.todo));
            return;
        }
    };
    let (reply, skew) = if reply.success {
        (reply, None)
    } else {
        let first = session.refused(Request::Allocate, None, &reply);
        if !(minted && reply.code == ec::UNAUTHENTICATED) {
            steps.push(StepReport::fail(Step::Allocate, first.what, first.todo));
            return;
        }
        fresh = second().await;
        let check = match fresh.as_mut() {
            Some(other) => clock_check(config, other, &reply, &session.auth.username).await,
            None => ClockCheck::NotRun,
        };
        match check {
            ClockCheck::Skew(moved, accepted) => {
                // The later steps run on the allocation the week-long credential got.
                session = moved;
                (*accepted, Some(clock_skew(REST_TTL.as_secs())))
            }
            ClockCheck::SecretWrong(v) => {
                steps.push(StepReport::fail(Step::Allocate, v.what, v.todo));
                return;
            }
            ClockCheck::NotRun => {
                steps.push(StepReport::fail(Step::Allocate, first.what, first.todo));
                return;
            }
        }
    };
    let Some(relayed) = session.allocated(server, &reply, skew, steps) else {
        return;
    };
    let refused = session
        .permission_and_relay(server, relayed, reflexive, steps)
        .await;
    if let Some(private) = refused {
        let report = match second().await {
            Some(mut other) => session.relay_to_relay(server, relayed, &mut other).await,
            None => None,
        };
        steps.push(report.unwrap_or_else(|| {
            StepReport::skipped(
                Step::Relay,
                format!(
                    "skipped: the server refuses this machine's private address {private} as a peer (as a safe server should), and a second allocation to relay to could not be made"
                ),
            )
            .with_caveat("the relay path: run the probe from a machine with a public address")
        }));
    }
    let released = match session
        .transact(Req::Refresh { lifetime: 0 }, Request::Refresh, None)
        .await
    {
        Ok(_) => StepReport::pass(
            Step::Refresh,
            "allocation released (Refresh with LIFETIME 0)",
        ),
        Err(v) => StepReport::fail(Step::Refresh, v.what, v.todo),
    };
    steps.push(released);
}

/// A 401 to a credential minted here from the shared secret means a wrong secret, or clocks
/// apart by more than its lifetime (the server then sees it expired); servers that follow
/// RFC 8489 answer both with the same 401. One more Allocate, with a credential of the same
/// secret valid for a week, tells them apart: accepted, the clocks differ (the session on
/// `conn` keeps that allocation, so the later steps still run); refused, the secret is wrong.
/// It runs on `conn`, a fresh connection: coturn binds a client's 5-tuple to the first
/// username it sent, and answers another one 437 there even after a 401.
async fn clock_check<'a>(
    config: &'a ProbeConfig,
    conn: &'a mut Conn,
    first: &Reply,
    first_username: &str,
) -> ClockCheck<'a> {
    let Credentials::Rest { secret, user } = &config.credentials else {
        return ClockCheck::NotRun;
    };
    let Some((realm, nonce)) = challenge(config, conn, &mut Vec::new()).await else {
        return ClockCheck::NotRun;
    };
    let username = rest_username(config.unix_now + SKEW_TTL_SECS, Some(user));
    let password = rest_password(secret.as_bytes(), &username);
    let mut session = Session {
        conn,
        auth: Auth::new(&username, &password, &realm, &nonce),
        password,
        config,
        minted: true,
    };
    match session.exchange(Req::Allocate, Request::Allocate).await {
        Ok(reply) if reply.success => ClockCheck::Skew(session, Box::new(reply)),
        // A reason naming the cause (an expired credential, an unknown user) keeps the usual
        // verdict, which follows it.
        Ok(reply) if reply.code == ec::UNAUTHENTICATED && generic(&first.reason) => {
            let ctx = Context {
                username: Some(first_username),
                ..context(config, Request::Allocate, None, true, None)
            };
            ClockCheck::SecretWrong(minted_secret_wrong(&ctx, &first.reason))
        }
        _ => ClockCheck::NotRun,
    }
}

/// Allocate without credentials: a TURN server must answer 401 with REALM and NONCE.
async fn challenge(
    config: &ProbeConfig,
    conn: &mut Conn,
    steps: &mut Vec<StepReport>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let fail = |steps: &mut Vec<StepReport>, v: Verdict| {
        steps.push(StepReport::fail(Step::Challenge, v.what, v.todo));
        None
    };
    let tid = random_tid();
    let raw = match request(Req::Allocate, None, tid) {
        Ok(raw) => raw,
        Err(e) => return fail(steps, bug(e)),
    };
    let reply = match conn.transact(&raw, tid, None, config.timeout).await {
        Ok(reply) => reply,
        Err(ConnError::Timeout) => return fail(steps, allocate_unanswered(config.timeout)),
        Err(e) => return fail(steps, unanswered(Request::Allocate, &e, config.timeout)),
    };
    if reply.success {
        // An open relay: give the allocation back before reporting it.
        let tid = random_tid();
        if let Ok(raw) = request(Req::Refresh { lifetime: 0 }, None, tid) {
            let _ = conn.transact(&raw, tid, None, config.timeout).await;
        }
        return fail(steps, missing_challenge(true));
    }
    match (reply.code, reply.realm, reply.nonce) {
        (ec::UNAUTHENTICATED, Some(realm), Some(nonce)) => {
            steps.push(StepReport::pass(
                Step::Challenge,
                format!(
                    "401 with realm {:?}: the server requires credentials, as it should",
                    String::from_utf8_lossy(&realm)
                ),
            ));
            Some((realm, nonce))
        }
        (ec::UNAUTHENTICATED, _, _) => fail(steps, missing_challenge(false)),
        (code, _, _) => {
            let ctx = context(config, Request::Allocate, None, false, reply.alternate);
            fail(steps, error_verdict(&ctx, code, &reply.reason))
        }
    }
}

impl Session<'_> {
    /// Step 4: Allocate with credentials (for a second allocation: no clock check).
    async fn allocate(
        &mut self,
        server: SocketAddr,
        steps: &mut Vec<StepReport>,
    ) -> Option<SocketAddr> {
        let reply = match self.transact(Req::Allocate, Request::Allocate, None).await {
            Ok(reply) => reply,
            Err(v) => {
                steps.push(StepReport::fail(Step::Allocate, v.what, v.todo));
                return None;
            }
        };
        self.allocated(server, &reply, None, steps)
    }

    /// Reports the successful Allocate `reply` (failed nonetheless with `skew`, the verdict of
    /// the clock check that got it) and returns the relayed address.
    fn allocated(
        &self,
        server: SocketAddr,
        reply: &Reply,
        skew: Option<Verdict>,
        steps: &mut Vec<StepReport>,
    ) -> Option<SocketAddr> {
        let Some(relayed) = reply.relayed else {
            steps.push(StepReport::fail(
                Step::Allocate,
                "the Allocate success response carries no XOR-RELAYED-ADDRESS",
                "the server is broken; report it to its operator",
            ));
            return None;
        };
        let lifetime = reply.lifetime.map_or_else(
            || "no lifetime given".to_owned(),
            |l| format!("lifetime {l} s"),
        );
        let detail = format!(
            "relayed address {relayed}, {lifetime}, as user {:?}",
            self.auth.username
        );
        steps.push(if let Some(v) = skew {
            StepReport::fail(
                Step::Allocate,
                format!("{}; with that credential: {detail}", v.what),
                v.todo,
            )
        } else if reply.integrity == Integrity::Invalid {
            StepReport::fail(
                Step::Allocate,
                format!("{detail}; but the response's MESSAGE-INTEGRITY does not match the credentials"),
                "a middlebox altered the response, or the server derives keys differently (SASLprep of non-ASCII passwords?)",
            )
        } else if is_private(relayed.ip()) && !is_private(server.ip()) {
            StepReport::fail(
                Step::Allocate,
                format!("{detail}; but the relayed address is private while the server is public: peers on the Internet cannot reach it"),
                "behind a 1:1 NAT the server must advertise its public address (Turnstone: [relay] external_address or --external-address; coturn: external-ip)",
            )
        } else {
            StepReport::pass(Step::Allocate, detail)
        });
        Some(relayed)
    }

    /// Step 5: a permission for the probe's echo socket, then ChannelData through the relay to
    /// it and back. Returns the echo socket's IP when the server refuses it as a peer (a
    /// private address, which a safe server refuses): the relay step is then still to do.
    async fn permission_and_relay(
        &mut self,
        server: SocketAddr,
        relayed: SocketAddr,
        reflexive: SocketAddr,
        steps: &mut Vec<StepReport>,
    ) -> Option<IpAddr> {
        // The echo socket is connected to the relayed address: its local IP is the one that
        // routes there, and it hears only the relay.
        let echo = match udp_socket(relayed)
            .await
            .and_then(|s| Ok((s.local_addr()?, s)))
        {
            Ok(pair) => pair,
            Err(e) => {
                steps.push(StepReport::fail(
                    Step::Permission,
                    format!("could not open the probe's echo socket toward {relayed}: {e}"),
                    "check this machine's network (an IPv6 relay needs IPv6 here)",
                ));
                return None;
            }
        };
        let (echo_local, echo) = echo;
        // RFC 8656 §9: permissions match the peer's IP as the server sees it. When the relay is
        // reached the way the server is, that is the reflexive IP (the NAT's public one).
        let same_path =
            echo_local.ip() == self.conn.local.ip() && reflexive.is_ipv4() == relayed.is_ipv4();
        let peer_ip = if same_path {
            reflexive.ip()
        } else {
            echo_local.ip()
        };
        let peer = SocketAddr::new(peer_ip, echo_local.port());
        match self
            .transact(
                Req::CreatePermission { peer },
                Request::CreatePermission,
                Some(peer_ip),
            )
            .await
        {
            Ok(_) => steps.push(StepReport::pass(
                Step::Permission,
                format!(
                    "permission for {peer_ip} (this machine's echo socket as the relay will see it)"
                ),
            )),
            Err(v) if v.expected => {
                steps.push(StepReport::pass(Step::Permission, v.what));
                return Some(peer_ip);
            }
            Err(v) => {
                steps.push(StepReport::fail(Step::Permission, v.what, v.todo));
                return None;
            }
        }
        let heard = relay::Heard::default();
        let echo_task = tokio::spawn(relay::echo_loop(echo, heard.clone()));
        let report = self
            .round_trips(server, relayed, peer_ip, echo_local, &heard)
            .await;
        echo_task.abort();
        // A permission for the IP may pass (it is also our relay address, say) while the
        // channel to the echo port is refused: the relay step is still to do.
        if report.status == Status::Skipped {
            return Some(peer_ip);
        }
        steps.push(report);
        None
    }

    /// The relay step without a peer of our own: a second allocation on `other`, a channel
    /// bound each way (RFC 8656 §12), and round trips between them. `None` when the second
    /// allocation cannot be made; a refused channel is a skipped step (the server may refuse
    /// its own relay addresses as peers).
    async fn relay_to_relay(
        &mut self,
        server: SocketAddr,
        relayed: SocketAddr,
        other: &mut Conn,
    ) -> Option<StepReport> {
        let mut scratch = Vec::new();
        let (realm, nonce) = challenge(self.config, other, &mut scratch).await?;
        let mut second = Session {
            conn: other,
            auth: Auth::new(&self.auth.username, &self.password, &realm, &nonce),
            password: self.password.clone(),
            config: self.config,
            minted: self.minted,
        };
        let other_relayed = second.allocate(server, &mut scratch).await?;
        let bind = |peer| Req::ChannelBind {
            channel: wire::CHANNEL,
            peer,
        };
        let bound = match self
            .transact(
                bind(other_relayed),
                Request::ChannelBind,
                Some(other_relayed.ip()),
            )
            .await
        {
            Ok(_) => second
                .transact(bind(relayed), Request::ChannelBind, Some(relayed.ip()))
                .await
                .map(|_| ()),
            Err(v) => Err(v),
        };
        let report = match bound {
            Ok(()) => {
                self.relay_round_trips(&mut second, relayed, other_relayed)
                    .await
            }
            Err(v) if v.expected => StepReport::skipped(
                Step::Relay,
                format!(
                    "skipped: the server refuses this machine's private address as a peer, and a channel between two of its own allocations too ({})",
                    v.what
                ),
            )
            .with_caveat("the relay path: run the probe from a machine with a public address"),
            Err(v) => StepReport::fail(
                Step::Relay,
                format!("ChannelBind between two allocations failed: {}", v.what),
                v.todo,
            ),
        };
        let _ = second
            .transact(Req::Refresh { lifetime: 0 }, Request::Refresh, None)
            .await;
        Some(report)
    }
}
