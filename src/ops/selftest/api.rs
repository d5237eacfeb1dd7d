//! The page's two calls: `POST /credential` (a report ID, its self-test credential, the URLs to
//! test and the run's bounds) and `POST /report` (the results, checked and logged once).

use std::net::{IpAddr, Ipv6Addr};

use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header;
use serde::Serialize;

use crate::auth::ReportId;
use crate::core::Transport;
use crate::io::clock;

use super::report::{MAX_REPORT_BYTES, Report};
use super::{Answer, JSON, SelftestSite, State, TEXT};

/// What `POST /credential` answers.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Issued {
    id: String,
    username: String,
    credential: String,
    ttl: u64,
    stun: Option<String>,
    transports: Vec<Offer>,
    duration_ms: u64,
    bytes: u64,
}

/// One transport to test.
#[derive(Serialize)]
struct Offer {
    name: &'static str,
    url: String,
    port: u16,
}

/// A fresh report ID and its self-test credential.
pub(super) fn credential(site: &SelftestSite, req: &Request<Incoming>, unix_now: u64) -> Answer {
    let mut random = [0u8; 5];
    if getrandom::fill(&mut random).is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "no randomness\n".into(),
        );
    }
    let id = ReportId::from_random(random);
    let ttl = site.credential_ttl.as_secs();
    let (username, credential) = site.key.mint(&id, unix_now.saturating_add(ttl));
    let host = site
        .host
        .clone()
        .or_else(|| request_host(req))
        .unwrap_or_else(|| site.fallback_host.clone());
    let port_of = |t| {
        site.listeners
            .iter()
            .find(|(tr, _)| *tr == t)
            .map(|(_, p)| *p)
    };
    let transports = site
        .listeners
        .iter()
        .map(|&(transport, port)| match transport {
            Transport::Udp => Offer {
                name: "udp",
                url: format!("turn:{host}:{port}?transport=udp"),
                port,
            },
            Transport::Tcp => Offer {
                name: "tcp",
                url: format!("turn:{host}:{port}?transport=tcp"),
                port,
            },
            Transport::Tls => Offer {
                name: "tls",
                url: format!("turns:{host}:{port}?transport=tcp"),
                port,
            },
        })
        .collect();
    let issued = Issued {
        id: id.to_string(),
        username,
        credential,
        ttl,
        stun: port_of(Transport::Udp).map(|port| format!("stun:{host}:{port}")),
        transports,
        duration_ms: u64::try_from(site.test_duration.as_millis()).unwrap_or(u64::MAX),
        bytes: site.test_bytes,
    };
    metrics::counter!("turnstone_selftest_credentials_total").increment(1);
    match serde_json::to_string(&issued) {
        Ok(body) => (StatusCode::OK, JSON, body),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            TEXT,
            "cannot encode\n".into(),
        ),
    }
}

/// The host part of the request's Host header, when it is a plain host name or IP.
fn request_host(req: &Request<Incoming>) -> Option<String> {
    host_of_header(req.headers().get(header::HOST)?.to_str().ok()?)
}

/// `example.com:8443` → `example.com`, `[2001:db8::1]:8443` → `[2001:db8::1]`; anything but
/// letters, digits, dots and hyphens (or a bracketed IPv6 address) → `None`.
fn host_of_header(value: &str) -> Option<String> {
    if let Some(rest) = value.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse::<Ipv6Addr>().ok().map(|ip| format!("[{ip}]"));
    }
    let host = value.split(':').next()?;
    let plain = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    plain.then(|| host.to_owned())
}

/// Checks, logs and counts the page's report.
pub(super) async fn report(state: &State, client: IpAddr, req: Request<Incoming>) -> Answer {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(JSON));
    // A cross-origin page cannot send this content type without a preflight we never answer.
    if !json {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            TEXT,
            "send application/json\n".into(),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_REPORT_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                TEXT,
                "report too large\n".into(),
            );
        }
    };
    let report = match Report::parse(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, TEXT, format!("{e}\n")),
    };
    let now = clock::now();
    let ttl = state.site.credential_ttl;
    let Some((id, expiry)) = state.site.key.verify(&report.username, &report.password) else {
        return (
            StatusCode::FORBIDDEN,
            TEXT,
            "not a credential of this server\n".into(),
        );
    };
    // A report may arrive up to one credential lifetime after its credential expired.
    if now.unix_secs > expiry.saturating_add(ttl.as_secs()) {
        return (StatusCode::FORBIDDEN, TEXT, "credential expired\n".into());
    }
    let fresh = state
        .limiter
        .lock()
        .map(|mut l| l.take_report(id, now.mono, ttl * 2))
        .unwrap_or(false);
    if !fresh {
        return (
            StatusCode::CONFLICT,
            TEXT,
            "this report ID was already reported\n".into(),
        );
    }
    report.log(&id, client);
    metrics::counter!("turnstone_selftest_reports_total", "outcome" => report.outcome())
        .increment(1);
    (
        StatusCode::OK,
        JSON,
        format!("{{\"ok\":true,\"id\":\"{id}\"}}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_gives_a_plain_host_or_nothing() {
        let host = |v: &str| host_of_header(v);
        assert_eq!(
            host("turn.example.com:8443").as_deref(),
            Some("turn.example.com")
        );
        assert_eq!(host("127.0.0.1:8080").as_deref(), Some("127.0.0.1"));
        assert_eq!(host("[2001:db8::1]:8443").as_deref(), Some("[2001:db8::1]"));
        for bad in ["", ":80", "a b", "x\"y", "[zz]:1", "evil.com/x", "a@b"] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
    }
}
