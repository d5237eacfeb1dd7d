//! The probe's findings: one line per step, as text for people or JSON for scripts.

use std::fmt::Write as _;

/// A step of the probe, in the order they are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Resolving the host name.
    Resolve,
    /// Opening the socket or the TCP connection.
    Connect,
    /// The TLS handshake and the certificate check.
    Tls,
    /// A STUN Binding request: the reflexive address.
    Binding,
    /// Allocate without credentials: the server must challenge with 401.
    Challenge,
    /// Allocate with credentials: the relayed address.
    Allocate,
    /// CreatePermission toward the probe's own echo socket.
    Permission,
    /// ChannelData through the relay to the echo socket and back.
    Relay,
    /// Refresh with LIFETIME 0: the allocation is released.
    Refresh,
    /// RFC 5780 NAT behaviour discovery.
    Nat,
}

impl Step {
    /// The step's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Self::Resolve => "resolve",
            Self::Connect => "connect",
            Self::Tls => "tls",
            Self::Binding => "binding",
            Self::Challenge => "challenge",
            Self::Allocate => "allocate",
            Self::Permission => "permission",
            Self::Relay => "relay",
            Self::Refresh => "refresh",
            Self::Nat => "nat",
        }
    }
}

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It worked (or found what a safe server should do).
    Pass,
    /// It found a problem.
    Fail,
    /// It did not run (an earlier step failed, or it does not apply).
    Skipped,
}

/// One step's result: a plain-language detail and, on failure, what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// Which step.
    pub step: Step,
    /// How it ended.
    pub status: Status,
    /// What was found, in plain words.
    pub detail: String,
    /// What to do about a failure.
    pub advice: Option<String>,
    /// What this step could not test, though it passed.
    pub caveat: Option<String>,
}

impl StepReport {
    /// A passed step.
    pub fn pass(step: Step, detail: impl Into<String>) -> Self {
        Self {
            step,
            status: Status::Pass,
            detail: detail.into(),
            advice: None,
            caveat: None,
        }
    }

    /// A failed step with advice.
    pub fn fail(step: Step, detail: impl Into<String>, advice: impl Into<String>) -> Self {
        Self {
            step,
            status: Status::Fail,
            detail: detail.into(),
            advice: Some(advice.into()),
            caveat: None,
        }
    }

    /// A step that did not run, and why.
    pub fn skipped(step: Step, why: impl Into<String>) -> Self {
        Self {
            step,
            status: Status::Skipped,
            detail: why.into(),
            advice: None,
            caveat: None,
        }
    }

    /// The same report, saying what it could not test.
    pub fn with_caveat(mut self, caveat: impl Into<String>) -> Self {
        self.caveat = Some(caveat.into());
        self
    }
}

/// Everything the probe found about one server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The URI probed, normalised.
    pub target: String,
    /// The steps in order.
    pub steps: Vec<StepReport>,
}

impl Report {
    /// Whether no step failed (skipped steps do not count).
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.status != Status::Fail)
    }

    /// The report of `step`, if it ran or was skipped.
    pub fn step(&self, step: Step) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.step == step)
    }

    /// A TURN probe whose relay step did not run although nothing failed before it.
    pub fn relay_untested(&self) -> bool {
        self.step(Step::Relay)
            .is_some_and(|s| s.status == Status::Skipped)
    }

    /// The first failed step.
    pub fn first_failure(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.status == Status::Fail)
    }

    /// One line per step, `✔ step: detail`, `✘ step: verdict` plus an indented advice line,
    /// or `- step: skipped`; a summary line last.
    pub fn to_text(&self) -> String {
        let mut out = format!("probing {}\n", self.target);
        for s in &self.steps {
            let mark = match s.status {
                Status::Pass => '✔',
                Status::Fail => '✘',
                Status::Skipped => '-',
            };
            let _ = writeln!(out, "{mark} {}: {}", s.step.name(), s.detail);
            if let Some(advice) = &s.advice {
                let _ = writeln!(out, "    what to do: {advice}");
            }
            if let Some(caveat) = &s.caveat {
                let _ = writeln!(out, "    not tested: {caveat}");
            }
        }
        let failed = self
            .steps
            .iter()
            .filter(|s| s.status == Status::Fail)
            .count();
        if failed == 0 && self.relay_untested() {
            out.push_str("result: no step failed, but the relay path was NOT tested (see above)\n");
        } else if failed == 0 && self.steps.iter().any(|s| s.caveat.is_some()) {
            out.push_str("result: every step passed (with what was not tested above)\n");
        } else if failed == 0 {
            out.push_str("result: every step passed\n");
        } else {
            let _ = writeln!(out, "result: {failed} step(s) failed");
        }
        out
    }

    /// One JSON object: `{"target":…,"ok":…,"steps":[{"step":…,"status":…,"detail":…,"advice":…}]}`.
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"target\":\"{}\",\"ok\":{},\"relay_tested\":{},\"steps\":[",
            json_escape(&self.target),
            self.ok(),
            self.step(Step::Relay)
                .is_some_and(|s| s.status == Status::Pass)
        );
        for (i, s) in self.steps.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let status = match s.status {
                Status::Pass => "pass",
                Status::Fail => "fail",
                Status::Skipped => "skipped",
            };
            let _ = write!(
                out,
                "{{\"step\":\"{}\",\"status\":\"{status}\",\"detail\":\"{}\"",
                s.step.name(),
                json_escape(&s.detail)
            );
            for (key, value) in [("advice", &s.advice), ("not_tested", &s.caveat)] {
                match value {
                    Some(v) => {
                        let _ = write!(out, ",\"{key}\":\"{}\"", json_escape(v));
                    }
                    None => {
                        let _ = write!(out, ",\"{key}\":null");
                    }
                }
            }
            out.push('}');
        }
        out.push_str("]}");
        out
    }
}

/// Escapes a string for a JSON string literal (RFC 8259 §7).
fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            target: "turn:x:3478?transport=udp".into(),
            steps: vec![
                StepReport::pass(Step::Resolve, "x → 192.0.2.1:3478"),
                StepReport::fail(Step::Binding, "no answer", "open UDP \"3478\""),
                StepReport::skipped(Step::Allocate, "needs a Binding answer"),
            ],
        }
    }

    #[test]
    fn a_failed_step_fails_the_report_and_skipped_steps_do_not() {
        let mut r = sample();
        assert!(!r.ok());
        assert_eq!(r.first_failure().unwrap().step, Step::Binding);
        r.steps.remove(1);
        assert!(r.ok());
    }

    #[test]
    fn text_marks_each_step_and_prints_advice() {
        let text = sample().to_text();
        assert!(text.contains("✔ resolve: x → 192.0.2.1:3478\n"));
        assert!(text.contains("✘ binding: no answer\n    what to do: open UDP \"3478\"\n"));
        assert!(text.contains("- allocate: needs a Binding answer\n"));
        assert!(text.ends_with("result: 1 step(s) failed\n"));
    }

    #[test]
    fn json_is_escaped_and_complete() {
        let json = sample().to_json();
        assert!(json.starts_with("{\"target\":\"turn:x:3478?transport=udp\",\"ok\":false,"));
        assert!(json.contains(
            "{\"step\":\"binding\",\"status\":\"fail\",\"detail\":\"no answer\",\"advice\":\"open UDP \\\"3478\\\"\",\"not_tested\":null}"
        ));
        assert!(json.contains("\"status\":\"skipped\""));
        assert!(json.ends_with("\"advice\":null,\"not_tested\":null}]}"));
        assert_eq!(json_escape("a\u{1}\n"), "a\\u0001\\n");
    }

    #[test]
    fn a_skipped_relay_is_not_every_step_passed_and_a_caveat_is_printed() {
        let report = |relay: StepReport| Report {
            target: "turn:x:3478?transport=udp".into(),
            steps: vec![StepReport::pass(Step::Allocate, "relayed"), relay],
        };
        let skipped = report(StepReport::skipped(Step::Relay, "skipped: refused"));
        assert!(skipped.ok() && skipped.relay_untested());
        assert!(
            skipped.to_text().ends_with(
                "result: no step failed, but the relay path was NOT tested (see above)\n"
            )
        );
        assert!(skipped.to_json().contains("\"relay_tested\":false"));
        let caveat = report(StepReport::pass(Step::Relay, "3/3").with_caveat("outside peers"));
        assert!(!caveat.relay_untested());
        let text = caveat.to_text();
        assert!(
            text.contains("✔ relay: 3/3\n    not tested: outside peers\n"),
            "{text}"
        );
        assert!(text.ends_with("result: every step passed (with what was not tested above)\n"));
        assert!(caveat.to_json().contains("\"relay_tested\":true"));
        assert!(
            caveat
                .to_json()
                .contains("\"not_tested\":\"outside peers\"")
        );
    }
}
