//! Plain-language verdicts for STUN/TURN error responses (RFC 8489 §14.8, RFC 8656 §19): what
//! went wrong and what to do. Pure functions of the code, the reason phrase and the context.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::auth::rest_expiry;
use crate::proto::error_code as ec;

/// The request that got an error response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// STUN Binding.
    Binding,
    /// TURN Allocate.
    Allocate,
    /// TURN Refresh.
    Refresh,
    /// TURN CreatePermission.
    CreatePermission,
    /// TURN ChannelBind.
    ChannelBind,
}

impl Request {
    /// The method name as RFC 8656 spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Binding => "Binding",
            Self::Allocate => "Allocate",
            Self::Refresh => "Refresh",
            Self::CreatePermission => "CreatePermission",
            Self::ChannelBind => "ChannelBind",
        }
    }
}

/// What a verdict needs besides the error code.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The refused request.
    pub request: Request,
    /// The USERNAME sent, if any (a REST username carries its expiry).
    pub username: Option<&'a str>,
    /// Whether the probe minted the credential itself from `--secret`.
    pub minted: bool,
    /// This machine's clock, Unix seconds.
    pub unix_now: u64,
    /// The peer of a CreatePermission or ChannelBind.
    pub peer: Option<IpAddr>,
    /// ALTERNATE-SERVER of a 300 response.
    pub alternate: Option<SocketAddr>,
}

/// A verdict: what happened and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The refusal is what a safely configured server does: the step passes.
    pub expected: bool,
    /// What went wrong, in plain words.
    pub what: String,
    /// What to do about it.
    pub todo: String,
}

impl Verdict {
    fn problem(what: impl Into<String>, todo: impl Into<String>) -> Self {
        Self {
            expected: false,
            what: what.into(),
            todo: todo.into(),
        }
    }
}

/// The verdict on error `code` with `reason` in answer to `ctx.request`.
pub fn error_verdict(ctx: &Context<'_>, code: u16, reason: &str) -> Verdict {
    let req = ctx.request.name();
    let said = server_said(code, reason);
    match code {
        ec::TRY_ALTERNATE => {
            let to = ctx
                .alternate
                .map_or_else(|| "another server".to_owned(), |a| a.to_string());
            Verdict::problem(
                format!("the server redirects clients to {to} (300 Try Alternate){said}"),
                format!(
                    "probe {to} instead; a server that redirects is often draining for a restart"
                ),
            )
        }
        ec::BAD_REQUEST => Verdict::problem(
            format!("the server could not understand the {req} request (400 Bad Request){said}"),
            "the server speaks an incompatible STUN/TURN dialect; report this output to its operator",
        ),
        ec::UNAUTHENTICATED => unauthenticated(ctx, reason, &said),
        ec::FORBIDDEN => forbidden(ctx, &said),
        ec::UNKNOWN_ATTRIBUTE => Verdict::problem(
            format!("the server does not understand an attribute of the {req} request (420){said}"),
            "this looks like an old STUN-only (RFC 3489) server, not a TURN server",
        ),
        ec::ALLOCATION_MISMATCH if ctx.request == Request::Allocate => Verdict::problem(
            format!(
                "an allocation already exists for this client address and port (437 Allocation Mismatch){said}"
            ),
            "run the probe again (it uses a fresh local port each time); if it persists, a NAT reuses ports and the old allocation lives until its lifetime ends",
        ),
        ec::ALLOCATION_MISMATCH => Verdict::problem(
            format!(
                "the server no longer knows the allocation (437 Allocation Mismatch on {req}){said}"
            ),
            "the allocation expired or was deleted early: check the server's allocation_lifetime, or whether a load balancer moved this client to another server",
        ),
        ec::STALE_NONCE => Verdict::problem(
            format!("the server kept answering 'stale nonce' (438) even to a fresh nonce{said}"),
            "the server's nonce lifetime is too short or its clock jumps; behind a load balancer, every server must share the nonce key or keep a client on one server",
        ),
        ec::ADDRESS_FAMILY_NOT_SUPPORTED => Verdict::problem(
            format!("the server cannot relay in the requested address family (440){said}"),
            "the server has no relay address of that family (IPv4/IPv6) configured",
        ),
        ec::WRONG_CREDENTIALS => Verdict::problem(
            format!(
                "wrong credentials for this allocation (441 on {req}){said}: the request used another user than the one that created it"
            ),
            "use the same user name for every request of an allocation",
        ),
        ec::UNSUPPORTED_TRANSPORT_PROTOCOL => Verdict::problem(
            format!("the server refuses to relay UDP (442 Unsupported Transport Protocol){said}"),
            "WebRTC needs UDP relays; enable UDP relaying on the server (TURN over TCP/TLS still relays UDP to peers)",
        ),
        ec::PEER_ADDRESS_FAMILY_MISMATCH => Verdict::problem(
            format!("the peer's address family differs from the relayed address's (443){said}"),
            "a relayed IPv4 address can only reach IPv4 peers; ask for a relay of the peer's family",
        ),
        ec::ALLOCATION_QUOTA_REACHED => Verdict::problem(
            format!(
                "allocation quota reached (486){said}: this user already holds as many allocations as the server allows"
            ),
            "close other sessions of this user or wait until their allocations expire; operators raise the per-user allocation limit (Turnstone: [limits] max_allocations_per_user)",
        ),
        ec::SERVER_ERROR => Verdict::problem(
            format!("the server failed while handling {req} (500 Server Error){said}"),
            "check the server's log; retry later",
        ),
        ec::INSUFFICIENT_CAPACITY => Verdict::problem(
            format!(
                "the server is out of capacity (508 Insufficient Capacity){said}: no relay port free, its allocation limit reached, or it is draining for a restart"
            ),
            "retry later or use another server; operators widen the relay port range or raise the allocation limit (Turnstone: [relay] ports, [limits] max_allocations)",
        ),
        _ => Verdict::problem(
            format!("the server refused {req} with error {code}{said}"),
            "look the code up in RFC 8656 §19 and the server's log",
        ),
    }
}

/// Whether `ip` is loopback, private, link-local, CGNAT or unique-local: an address a safe TURN
/// server refuses as a peer and that Internet peers cannot reach.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

/// What a REST username's expiry says next to this machine's clock (TURN REST API: username
/// "<expiry>:<user>"), or `None` for other usernames.
pub fn rest_clock_note(username: &str, unix_now: u64) -> Option<String> {
    let expiry = rest_expiry(username)?;
    Some(if expiry <= unix_now {
        format!(
            "the REST username expired {} ago by this machine's clock",
            human_secs(unix_now - expiry)
        )
    } else {
        format!(
            "the REST username is valid for {} more by this machine's clock",
            human_secs(expiry - unix_now)
        )
    })
}

/// How long the second credential lives that the probe mints after a 401 to its first one,
/// to tell clocks apart from a wrong secret ([`clock_skew`], [`minted_secret_wrong`]): a
/// week, so clocks up to a week apart still show.
pub const SKEW_TTL_SECS: u64 = 7 * 86_400;

/// The server refused (401) the credential minted here, valid for `lifetime_secs` by this
/// machine's clock, but accepted one of the same secret valid for [`SKEW_TTL_SECS`]: the
/// secret is right and the server sees the first one as expired.
pub fn clock_skew(lifetime_secs: u64) -> Verdict {
    Verdict::problem(
        format!(
            "clock skew: the server refused the credential minted here (401), valid for {} by this machine's clock, but accepted one of the same secret valid for {}: the server's clock is ahead of this machine's by more than {}, so short-lived credentials look expired to it",
            human_secs(lifetime_secs),
            human_secs(SKEW_TTL_SECS),
            human_secs(lifetime_secs)
        ),
        "sync this machine's clock and the server's with NTP; your web service's clock matters too, as the credentials it mints expire by it",
    )
}

/// The server refused (401) the credential minted here from the shared secret, and one of the
/// same secret valid for [`SKEW_TTL_SECS`] too: not the clocks, the secret.
pub fn minted_secret_wrong(ctx: &Context<'_>, reason: &str) -> Verdict {
    let said = server_said(ec::UNAUTHENTICATED, reason);
    let note = ctx
        .username
        .and_then(|u| rest_clock_note(u, ctx.unix_now))
        .map(|n| format!("; {n}"))
        .unwrap_or_default();
    Verdict::problem(
        format!(
            "the server refused the credentials (401){said}: wrong password, from a wrong shared secret{note}; a credential valid for {} was refused too, so the clocks are not the cause",
            human_secs(SKEW_TTL_SECS)
        ),
        "the shared secret differs from the server's (Turnstone: [auth] secrets; coturn: static-auth-secret), or the server does not accept REST credentials at all (coturn: use-auth-secret)",
    )
}

/// 401 to a request that carried credentials.
fn unauthenticated(ctx: &Context<'_>, reason: &str, said: &str) -> Verdict {
    let user = ctx.username.unwrap_or("");
    let lower = reason.to_ascii_lowercase();
    let expiry = rest_expiry(user);
    if let Some(expiry) = expiry.filter(|&e| e <= ctx.unix_now) {
        return Verdict::problem(
            format!(
                "the credential has expired (401){said}: its REST username expired {} ago by this machine's clock",
                human_secs(ctx.unix_now - expiry)
            ),
            "fetch a fresh credential from your web service (REST credentials are short-lived)",
        );
    }
    if lower.contains("expired") {
        let todo = if ctx.minted {
            "the probe minted the credential just now, so the server's clock is ahead of this machine's by more than its lifetime: sync both clocks with NTP"
        } else {
            "fetch a fresh credential; if it was fresh, the server's clock is ahead of the issuer's: sync clocks with NTP"
        };
        return Verdict::problem(
            format!("the server says the credential has expired (401){said}"),
            todo,
        );
    }
    if lower.contains("unknown user") {
        let todo = if expiry.is_some() {
            "the server does not accept REST credentials: give it the shared secret (Turnstone: [auth] secrets; coturn: static-auth-secret)"
        } else {
            "check the user name; the server has no such user"
        };
        return Verdict::problem(
            format!("the server does not know the user {user:?} (401){said}"),
            todo,
        );
    }
    // Servers that follow RFC 8489 advice (Turnstone among them) give the same 401 for an
    // unknown user, a wrong password and a credential they consider expired, so the advice
    // covers each cause the client side cannot rule out.
    let mut what = format!(
        "the server refused the credentials (401){said}: wrong user name or wrong password"
    );
    let todo = match rest_clock_note(user, ctx.unix_now) {
        Some(note) => {
            let _ = write!(what, "; {note}");
            if ctx.minted {
                "the shared secret differs from the server's (Turnstone: [auth] secrets; coturn: static-auth-secret), or the server has no shared secret and does not accept REST credentials at all; if the secret is right, the server's clock may be far off: sync it with NTP"
            } else {
                "the password must be base64(HMAC-SHA1(secret, username)) with the server's shared secret: check the secret your web service uses and that the server has one configured; if the server's clock is ahead of the issuer's, it may consider the credential expired: sync clocks with NTP"
            }
        }
        None => {
            "check --user and --password against the server's user list (the password is case-sensitive)"
        }
    };
    Verdict::problem(what, todo)
}

/// 403: expected for a private peer, a policy refusal otherwise.
fn forbidden(ctx: &Context<'_>, said: &str) -> Verdict {
    match (ctx.request, ctx.peer) {
        (Request::CreatePermission | Request::ChannelBind, Some(peer)) if is_private(peer) => {
            Verdict {
                expected: true,
                what: format!(
                    "peer policy refuses private addresses (expected): the server will not relay to {peer}{said}, which protects its internal network"
                ),
                todo: "nothing: the relay round trip needs a public echo address, so it is skipped"
                    .to_owned(),
            }
        }
        (Request::CreatePermission | Request::ChannelBind, peer) => {
            let peer = peer.map_or_else(|| "this peer".to_owned(), |p| p.to_string());
            Verdict::problem(
                format!("the server forbids relaying to {peer} (403 Forbidden){said}"),
                "the server's peer policy excludes this address; operators adjust it (Turnstone: [peers] allow/deny)",
            )
        }
        (req, _) => Verdict::problem(
            format!(
                "the server forbids {} for this user or this client address (403 Forbidden){said}",
                req.name()
            ),
            "the operator denies this user or your network, or TURN is disabled for it; ask the operator",
        ),
    }
}

/// ` (server says "…")` unless the reason is empty or the RFC's stock phrase.
fn server_said(code: u16, reason: &str) -> String {
    let reason = reason.trim();
    // RFC 5389 called 401 "Unauthorized" (coturn and Turnstone still send it).
    let legacy = code == ec::UNAUTHENTICATED && reason.eq_ignore_ascii_case("Unauthorized");
    if reason.is_empty() || legacy || reason.eq_ignore_ascii_case(ec::reason_phrase(code)) {
        String::new()
    } else {
        format!(" (server says {reason:?})")
    }
}

/// Seconds as "42 s", "5 min", "3 h" or "2 days".
pub(crate) fn human_secs(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// A request the probe could not write: a bug, not a network problem.
pub(super) fn bug(e: impl std::fmt::Display) -> Verdict {
    Verdict {
        expected: false,
        what: format!("the probe could not write its request: {e}"),
        todo: "report this as a bug in turnstone probe".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn ctx(request: Request) -> Context<'static> {
        Context {
            request,
            username: Some("alice"),
            minted: false,
            unix_now: NOW,
            peer: None,
            alternate: None,
        }
    }

    #[test]
    fn a_401_to_static_credentials_says_wrong_password() {
        let v = error_verdict(&ctx(Request::Allocate), 401, "Unauthenticated");
        assert!(!v.expected);
        assert!(v.what.contains("wrong password"), "{}", v.what);
        assert!(
            !v.what.contains("server says"),
            "stock phrase is not repeated"
        );
        assert!(v.todo.contains("--password"));
    }

    #[test]
    fn a_401_to_a_minted_rest_credential_blames_the_secret_and_mentions_the_clock() {
        let c = Context {
            username: Some("1700003600:probe"),
            minted: true,
            ..ctx(Request::Allocate)
        };
        let v = error_verdict(&c, 401, "message integrity check failed (wrong password)");
        assert!(v.what.contains("wrong password"));
        assert!(v.what.contains("valid for 60 min more"), "{}", v.what);
        assert!(v.todo.contains("shared secret") && v.todo.contains("NTP"));
    }

    #[test]
    fn a_uniform_401_to_a_rest_credential_names_the_secret_rest_support_and_the_clock() {
        // Turnstone answers every 401 with "Unauthorized", whatever the cause.
        for minted in [true, false] {
            let c = Context {
                username: Some("1700003600:probe"),
                minted,
                ..ctx(Request::Allocate)
            };
            let v = error_verdict(&c, 401, "Unauthorized");
            assert!(v.what.contains("wrong password"), "{}", v.what);
            assert!(!v.what.contains("server says"), "{}", v.what);
            assert!(v.todo.contains("shared secret"), "{}", v.todo);
            assert!(v.todo.contains("NTP"), "{}", v.todo);
        }
        let c = Context {
            username: Some("1700003600:probe"),
            minted: true,
            ..ctx(Request::Allocate)
        };
        let v = error_verdict(&c, 401, "Unauthorized");
        assert!(v.todo.contains("does not accept REST"), "{}", v.todo);
    }

    #[test]
    fn an_expired_rest_username_is_called_expired_with_its_age() {
        let c = Context {
            username: Some("1699999000:bob"),
            ..ctx(Request::Allocate)
        };
        let v = error_verdict(&c, 401, "time-limited credential expired");
        assert!(v.what.contains("expired 16 min ago"), "{}", v.what);
        assert!(v.todo.contains("fresh credential"));
    }

    #[test]
    fn a_server_side_expiry_of_a_fresh_minted_credential_means_clock_skew() {
        let c = Context {
            username: Some("1700003600:probe"),
            minted: true,
            ..ctx(Request::Allocate)
        };
        let v = error_verdict(&c, 401, "time-limited credential expired");
        assert!(v.todo.contains("clock is ahead"), "{}", v.todo);
    }

    #[test]
    fn an_unknown_rest_user_means_rest_is_not_enabled() {
        let c = Context {
            username: Some("1700003600:probe"),
            ..ctx(Request::Allocate)
        };
        let v = error_verdict(&c, 401, "unknown username");
        assert!(v.what.contains("does not know the user"));
        assert!(v.todo.contains("shared secret"));
    }

    #[test]
    fn a_403_for_a_private_peer_is_expected() {
        for peer in ["127.0.0.1", "10.1.2.3", "192.168.0.9", "::1", "fd00::1"] {
            let c = Context {
                peer: Some(peer.parse().unwrap()),
                ..ctx(Request::CreatePermission)
            };
            let v = error_verdict(&c, 403, "peer address is private");
            assert!(v.expected, "{peer}");
            assert!(
                v.what
                    .starts_with("peer policy refuses private addresses (expected)")
            );
        }
    }

    #[test]
    fn a_403_for_a_public_peer_or_an_allocate_is_a_problem() {
        let c = Context {
            peer: Some("203.0.113.9".parse().unwrap()),
            ..ctx(Request::CreatePermission)
        };
        let v = error_verdict(&c, 403, "");
        assert!(!v.expected);
        assert!(v.what.contains("forbids relaying to 203.0.113.9"));
        let v = error_verdict(&ctx(Request::Allocate), 403, "draining");
        assert!(!v.expected && v.what.contains("forbids Allocate"));
        assert!(v.what.contains("server says \"draining\""));
    }

    #[test]
    fn each_turn_error_code_gets_specific_advice() {
        let cases: [(u16, Request, &str); 10] = [
            (437, Request::Allocate, "already exists"),
            (437, Request::Refresh, "no longer knows"),
            (438, Request::Allocate, "stale nonce"),
            (441, Request::ChannelBind, "another user"),
            (442, Request::Allocate, "refuses to relay UDP"),
            (486, Request::Allocate, "quota"),
            (508, Request::Allocate, "out of capacity"),
            (420, Request::Allocate, "does not understand"),
            (440, Request::Allocate, "address family"),
            (599, Request::Allocate, "error 599"),
        ];
        for (code, request, needle) in cases {
            let v = error_verdict(&ctx(request), code, "");
            assert!(v.what.contains(needle), "{code}: {}", v.what);
            assert!(!v.todo.is_empty() && !v.expected);
        }
    }

    #[test]
    fn try_alternate_names_the_alternate_server() {
        let c = Context {
            alternate: Some("192.0.2.7:3478".parse().unwrap()),
            ..ctx(Request::Allocate)
        };
        let v = error_verdict(&c, 300, "Try Alternate");
        assert!(v.what.contains("192.0.2.7:3478") && v.todo.contains("probe 192.0.2.7:3478"));
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.1", "8.8.8.8", "100.128.0.1", "2001:db8::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn durations_are_written_for_people() {
        assert_eq!(human_secs(42), "42 s");
        assert_eq!(human_secs(600), "10 min");
        assert_eq!(human_secs(3 * 3600), "3 h");
        assert_eq!(human_secs(5 * 86_400), "5 days");
    }

    #[test]
    fn a_second_credential_tells_clock_skew_from_a_wrong_secret() {
        let skew = clock_skew(3600);
        assert!(skew.what.starts_with("clock skew: "), "{}", skew.what);
        assert!(
            skew.what
                .contains("valid for 7 days: the server's clock is ahead of this machine's by more than 60 min"),
            "{}",
            skew.what
        );
        assert!(skew.todo.contains("NTP"));
        let c = Context {
            username: Some("1700003600:probe"),
            minted: true,
            ..ctx(Request::Allocate)
        };
        let wrong = minted_secret_wrong(&c, "Unauthenticated");
        assert!(wrong.what.contains("wrong password"), "{}", wrong.what);
        assert!(
            wrong.what.contains("valid for 60 min more"),
            "{}",
            wrong.what
        );
        assert!(
            wrong.what.ends_with("so the clocks are not the cause"),
            "{}",
            wrong.what
        );
        assert!(wrong.todo.contains("shared secret differs"));
        assert!(!wrong.todo.contains("NTP"), "{}", wrong.todo);
    }
}
