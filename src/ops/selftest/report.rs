//! The report a self-test page posts: attacker input, parsed into a closed shape (no unknown
//! fields, enumerated verdicts, bounded numbers and strings), then one log line and one metric.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Deserialize;

use crate::auth::ReportId;

/// Largest report body accepted, in bytes (a real one is under 1 KiB).
pub(super) const MAX_REPORT_BYTES: usize = 8 * 1024;
/// Longest free-text field kept (the browser's name, an error), in characters.
const MAX_TEXT: usize = 160;

/// Why a report was refused (answered 400 with this text).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum ReportError {
    /// Not JSON of the report's shape.
    #[error("not a self-test report: {0}")]
    Shape(String),
    /// A field out of its bounds.
    #[error("field {0} is out of bounds")]
    Bounds(&'static str),
    /// The same transport twice.
    #[error("transport {0} is reported twice")]
    Duplicate(&'static str),
}

/// What the page posts. The credential proves the report ID; the rest is what it measured.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Report {
    pub username: String,
    pub password: String,
    /// The browser's name and version, as the page read it (free text, trimmed).
    #[serde(default)]
    pub browser: Option<String>,
    pub direct: Direct,
    pub transports: Vec<TransportReport>,
}

/// What the network allows without TURN (the page's STUN-only gathering).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Direct {
    /// A host candidate appeared.
    pub host: bool,
    /// A server-reflexive candidate appeared (the STUN server answered).
    pub srflx: bool,
}

/// The result for one transport.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TransportReport {
    pub transport: TransportName,
    pub verdict: Verdict,
    /// Time to the first relay candidate, ms.
    #[serde(default)]
    pub relay_ms: Option<u32>,
    /// Median round-trip time over the data channel, ms.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Share of unreliable messages lost, percent.
    #[serde(default)]
    pub loss_pct: Option<f64>,
    /// Throughput of the reliable channel, kbit/s.
    #[serde(default)]
    pub kbps: Option<f64>,
    /// What failed, as the browser said it (free text, trimmed).
    #[serde(default)]
    pub error: Option<String>,
}

/// A transport the server offers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum TransportName {
    Udp,
    Tcp,
    Tls,
}

impl TransportName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// The page's verdict for one transport.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum Verdict {
    /// A relay candidate, and data went through.
    Works,
    /// Data went through, with high loss or delay.
    Degraded,
    /// No relay candidate: the server could not be reached over this transport.
    Blocked,
    /// A relay candidate, but the data channel did not carry data.
    Failed,
    /// Not tested: the browser did not try the URL (Firefox ignores `turns:` URLs with an IP
    /// address).
    Skipped,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Self::Works => "works",
            Self::Degraded => "degraded",
            Self::Blocked => "blocked",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }

    fn connects(self) -> bool {
        matches!(self, Self::Works | Self::Degraded)
    }
}

impl Report {
    /// Parses and bounds a report body.
    pub fn parse(body: &[u8]) -> Result<Self, ReportError> {
        let mut report: Report = serde_json::from_slice(body).map_err(|e| {
            // serde_json's message names the field or position; never the input itself.
            ReportError::Shape(e.to_string().chars().take(MAX_TEXT).collect())
        })?;
        if report.username.len() > 128 || report.password.len() > 64 {
            return Err(ReportError::Bounds("username"));
        }
        if report.transports.len() > 3 {
            return Err(ReportError::Bounds("transports"));
        }
        let mut seen = Vec::with_capacity(3);
        for t in &mut report.transports {
            if seen.contains(&t.transport) {
                return Err(ReportError::Duplicate(t.transport.as_str()));
            }
            seen.push(t.transport);
            t.check()?;
            t.error = t.error.as_deref().map(clean);
        }
        report.browser = report.browser.as_deref().map(clean);
        Ok(report)
    }

    /// Of the transports tested: `ok` when every one connects, `partial` when some do,
    /// `failed` when none does.
    pub fn outcome(&self) -> &'static str {
        let tested = self
            .transports
            .iter()
            .filter(|t| t.verdict != Verdict::Skipped);
        let (tested, working) = tested.fold((0, 0), |(n, w), t| {
            (n + 1, w + usize::from(t.verdict.connects()))
        });
        match working {
            0 => "failed",
            w if w == tested => "ok",
            _ => "partial",
        }
    }

    /// The one log line (target `turnstone::selftest`) an operator looks the ID up by.
    pub fn log(&self, id: &ReportId, client: IpAddr) {
        let field = |name: TransportName| {
            self.transports
                .iter()
                .find(|t| t.transport == name)
                .map_or_else(|| "-".to_owned(), TransportReport::summary)
        };
        let direct = match (self.direct.srflx, self.direct.host) {
            (true, _) => "stun-ok",
            (false, true) => "host-only",
            (false, false) => "none",
        };
        tracing::info!(target: "turnstone::selftest", id = %id, client = %client,
            outcome = self.outcome(), udp = ?field(TransportName::Udp),
            tcp = ?field(TransportName::Tcp), tls = ?field(TransportName::Tls), direct,
            browser = self.browser.as_deref().unwrap_or("-"), "self-test report");
    }
}

impl TransportReport {
    fn check(&self) -> Result<(), ReportError> {
        let within =
            |v: Option<f64>, max: f64| v.is_none_or(|v| v.is_finite() && (0.0..=max).contains(&v));
        if self.relay_ms.is_some_and(|ms| ms > 600_000) {
            return Err(ReportError::Bounds("relayMs"));
        }
        if !within(self.rtt_ms, 600_000.0) {
            return Err(ReportError::Bounds("rttMs"));
        }
        if !within(self.loss_pct, 100.0) {
            return Err(ReportError::Bounds("lossPct"));
        }
        if !within(self.kbps, 100_000_000.0) {
            return Err(ReportError::Bounds("kbps"));
        }
        Ok(())
    }

    /// `works relay=35ms rtt=2ms loss=0% 4800kbps`, or with the error.
    fn summary(&self) -> String {
        let mut s = self.verdict.as_str().to_owned();
        if let Some(ms) = self.relay_ms {
            let _ = write!(s, " relay={ms}ms");
        }
        if let Some(rtt) = self.rtt_ms {
            let _ = write!(s, " rtt={rtt:.0}ms");
        }
        if let Some(loss) = self.loss_pct {
            let _ = write!(s, " loss={loss:.0}%");
        }
        if let Some(kbps) = self.kbps {
            let _ = write!(s, " {kbps:.0}kbps");
        }
        if let Some(e) = &self.error {
            let _ = write!(s, " error={e:?}");
        }
        s
    }
}

/// Printable ASCII only (no control characters or line breaks to forge log lines with),
/// at most [`MAX_TEXT`] characters.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_TEXT)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"username":"1700000300:#selftest-ABCDEFGH","password":"x",
        "browser":"Chrome 140","direct":{"host":true,"srflx":false},
        "transports":[{"transport":"udp","verdict":"blocked","error":"701 timeout"},
                      {"transport":"tcp","verdict":"works","relayMs":40,"rttMs":3.4,"lossPct":0,"kbps":4800.7}]}"#;

    #[test]
    fn a_report_parses_into_verdicts_and_an_outcome() {
        let r = Report::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(r.outcome(), "partial");
        let skipped = GOOD.replace("\"blocked\"", "\"skipped\"");
        assert_eq!(Report::parse(skipped.as_bytes()).unwrap().outcome(), "ok");
        assert_eq!(
            r.transports[1].summary(),
            "works relay=40ms rtt=3ms loss=0% 4801kbps"
        );
        assert_eq!(r.transports[0].summary(), "blocked error=\"701 timeout\"");
    }

    #[test]
    fn unknown_fields_bad_verdicts_and_wild_numbers_are_refused() {
        let unknown = GOOD.replace("\"browser\"", "\"extra\":1,\"browser\"");
        assert!(matches!(
            Report::parse(unknown.as_bytes()),
            Err(ReportError::Shape(_))
        ));
        let verdict = GOOD.replace("\"works\"", "\"great\"");
        assert!(matches!(
            Report::parse(verdict.as_bytes()),
            Err(ReportError::Shape(_))
        ));
        let loss = GOOD.replace("\"lossPct\":0", "\"lossPct\":101");
        assert_eq!(
            Report::parse(loss.as_bytes()).unwrap_err(),
            ReportError::Bounds("lossPct")
        );
        let twice = GOOD.replace("\"tcp\"", "\"udp\"");
        assert_eq!(
            Report::parse(twice.as_bytes()).unwrap_err(),
            ReportError::Duplicate("udp")
        );
        assert!(Report::parse(b"[]").is_err());
    }

    #[test]
    fn free_text_cannot_forge_log_lines_and_is_bounded() {
        let long = "a".repeat(500);
        let text = GOOD.replace("Chrome 140", &format!("x\\nid=FAKE {long}"));
        let r = Report::parse(text.as_bytes()).unwrap();
        let browser = r.browser.unwrap();
        assert!(browser.starts_with("x?id=FAKE"), "{browser}");
        assert_eq!(browser.chars().count(), MAX_TEXT);
    }
}
