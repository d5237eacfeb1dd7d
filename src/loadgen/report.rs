//! The result of a run: [`LoadReport`], the rates derived from it, the human table and the
//! JSON line.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::{ChurnReport, LoadTransport, RttSummary};

/// The results of one run (measured phase only).
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// The server driven.
    pub server: SocketAddr,
    /// Transport used.
    pub transport: LoadTransport,
    /// Whether Send/Data indications were used instead of ChannelData.
    pub send_indications: bool,
    /// Allocations.
    pub allocations: usize,
    /// Payload bytes per packet.
    pub payload: usize,
    /// Requested packets per second (0 = closed loop).
    pub target_rate: u64,
    /// Closed-loop window per allocation.
    pub window: usize,
    /// From the end of warmup to the last measured send.
    pub elapsed: Duration,
    /// Packets sent in the measured phase.
    pub sent: u64,
    /// Of those, packets that came back within the loss timeout.
    pub received: u64,
    /// Round-trip times of the packets received.
    pub rtt: RttSummary,
    /// Datagrams received that were not an expected reply (late, duplicate, foreign).
    pub stray: u64,
    /// Open loop: packets still in flight when their tracking slot was reused.
    pub overruns: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// TCP/TLS: packets dropped because their connection's output buffer was full (the
    /// server was not reading fast enough); counted as sent, so also as lost.
    pub queue_drops: u64,
    /// Echoes the peers could not send back.
    pub echo_drops: u64,
    /// Refresh, ChannelBind or CreatePermission transactions that succeeded during the run.
    pub refreshes: u64,
    /// Refresh, ChannelBind or CreatePermission transactions that failed during the run.
    pub refresh_failures: u64,
    /// Allocations whose deletion at the end failed.
    pub delete_failures: u64,
}

impl LoadReport {
    /// Packets that did not come back.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }

    /// Packets sent per second.
    pub fn sent_per_sec(&self) -> f64 {
        per_sec(self.sent, self.elapsed)
    }

    /// Packets delivered back to the client per second (full round trips).
    pub fn delivered_per_sec(&self) -> f64 {
        per_sec(self.received, self.elapsed)
    }

    /// Application payload delivered, in megabits per second (one direction's payload bytes
    /// of the round trips completed; headers not counted).
    pub fn mbit_per_sec(&self) -> f64 {
        self.delivered_per_sec() * self.payload as f64 * 8.0 / 1e6
    }

    /// Lost packets as a percentage of those sent (0 when nothing was sent).
    pub fn loss_percent(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.lost() as f64 * 100.0 / self.sent as f64
    }

    /// The data path's name: `channel` or `indication`.
    pub fn mode(&self) -> &'static str {
        if self.send_indications {
            "indication"
        } else {
            "channel"
        }
    }

    /// The human-readable result: a one-line description and a table.
    pub fn to_table(&self) -> String {
        let rate = match self.target_rate {
            0 => format!("closed loop, window {}", self.window),
            r => format!("{r} pps target"),
        };
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "{} {} via {}: {} allocations x {} B, {rate}, {:.2} s measured",
            transport(self.transport),
            self.server,
            self.mode(),
            self.allocations,
            self.payload,
            self.elapsed.as_secs_f64(),
        );
        let _ = writeln!(
            out,
            "{:>12} {:>12} {:>9} {:>8} {:>10} {:>10} {:>10}",
            "sent/s", "delivered/s", "Mbit/s", "loss %", "RTT p50", "RTT p99", "RTT p99.9"
        );
        let _ = writeln!(
            out,
            "{:>12.0} {:>12.0} {:>9.2} {:>8.3} {:>10} {:>10} {:>10}",
            self.sent_per_sec(),
            self.delivered_per_sec(),
            self.mbit_per_sec(),
            self.loss_percent(),
            micros(self.rtt.p50),
            micros(self.rtt.p99),
            micros(self.rtt.p999),
        );
        let _ = write!(
            out,
            "sent {} received {} lost {}; RTT min {} mean {} max {}; stray {} overruns {} \
             send errors {} queue drops {} echo drops {} refreshes {} refresh failures {} \
             delete failures {}",
            self.sent,
            self.received,
            self.lost(),
            micros(self.rtt.min),
            micros(self.rtt.mean),
            micros(self.rtt.max),
            self.stray,
            self.overruns,
            self.send_errors,
            self.queue_drops,
            self.echo_drops,
            self.refreshes,
            self.refresh_failures,
            self.delete_failures,
        );
        out
    }

    /// One JSON object on one line, for scripts and the comparison harness.
    pub fn to_json(&self) -> String {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        format!(
            concat!(
                r#"{{"server":"{}","transport":"{}","mode":"{}","allocations":{},"#,
                r#""payload_bytes":{},"target_pps":{},"window":{},"duration_s":{:.3},"#,
                r#""sent":{},"received":{},"lost":{},"sent_pps":{:.1},"delivered_pps":{:.1},"#,
                r#""mbit_per_s":{:.3},"loss_pct":{:.4},"rtt_p50_us":{:.1},"rtt_p99_us":{:.1},"#,
                r#""rtt_p999_us":{:.1},"rtt_min_us":{:.1},"rtt_mean_us":{:.1},"rtt_max_us":{:.1},"#,
                r#""stray":{},"overruns":{},"send_errors":{},"queue_drops":{},"echo_drops":{},"#,
                r#""refreshes":{},"refresh_failures":{},"delete_failures":{}}}"#
            ),
            self.server,
            transport(self.transport),
            self.mode(),
            self.allocations,
            self.payload,
            self.target_rate,
            self.window,
            self.elapsed.as_secs_f64(),
            self.sent,
            self.received,
            self.lost(),
            self.sent_per_sec(),
            self.delivered_per_sec(),
            self.mbit_per_sec(),
            self.loss_percent(),
            us(self.rtt.p50),
            us(self.rtt.p99),
            us(self.rtt.p999),
            us(self.rtt.min),
            us(self.rtt.mean),
            us(self.rtt.max),
            self.stray,
            self.overruns,
            self.send_errors,
            self.queue_drops,
            self.echo_drops,
            self.refreshes,
            self.refresh_failures,
            self.delete_failures,
        )
    }
}

impl ChurnReport {
    /// The human-readable result: cycles per second and the failures by step.
    pub fn to_table(&self) -> String {
        let last_error = self
            .last_error
            .map_or_else(|| "none".to_owned(), |code| code.to_string());
        format!(
            "{} cycles (Allocate/401, Allocate, Refresh 0) in {:.2} s: {:.1} cycles/s\n\
             failures {}: {} challenge, {} Allocate, {} Refresh(0); {} timeouts, \
             {} stale nonces, last error {last_error}",
            self.cycles,
            self.elapsed.as_secs_f64(),
            self.cycles_per_sec(),
            self.failures(),
            self.challenge_failures,
            self.allocate_failures,
            self.delete_failures,
            self.timeouts,
            self.stale_nonces,
        )
    }

    /// The result as one JSON line.
    pub fn to_json(&self) -> String {
        let last_error = self
            .last_error
            .map_or_else(|| "null".to_owned(), |code| code.to_string());
        format!(
            concat!(
                r#"{{"cycles":{},"duration_s":{:.3},"cycles_per_s":{:.1},"failures":{},"#,
                r#""challenge_failures":{},"allocate_failures":{},"delete_failures":{},"#,
                r#""timeouts":{},"stale_nonces":{},"last_error":{}}}"#
            ),
            self.cycles,
            self.elapsed.as_secs_f64(),
            self.cycles_per_sec(),
            self.failures(),
            self.challenge_failures,
            self.allocate_failures,
            self.delete_failures,
            self.timeouts,
            self.stale_nonces,
            last_error,
        )
    }
}

fn transport(t: LoadTransport) -> &'static str {
    match t {
        LoadTransport::Udp => "udp",
        LoadTransport::Tcp => "tcp",
        LoadTransport::Tls => "tls",
    }
}

fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

/// A duration in microseconds with one decimal, e.g. "42.5 us".
fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> LoadReport {
        LoadReport {
            server: "127.0.0.1:3478".parse().unwrap(),
            transport: LoadTransport::Udp,
            send_indications: false,
            allocations: 10,
            payload: 100,
            target_rate: 40_000,
            window: 16,
            elapsed: Duration::from_secs(2),
            sent: 80_000,
            received: 79_920,
            rtt: RttSummary {
                samples: 79_920,
                p50: Duration::from_micros(40),
                ..RttSummary::default()
            },
            stray: 0,
            overruns: 0,
            send_errors: 0,
            queue_drops: 0,
            echo_drops: 0,
            refreshes: 0,
            refresh_failures: 0,
            delete_failures: 0,
        }
    }

    #[test]
    fn rates_are_counts_over_the_measured_time() {
        let r = report();
        assert_eq!(r.sent_per_sec(), 40_000.0);
        assert_eq!(r.delivered_per_sec(), 39_960.0);
        assert!((r.mbit_per_sec() - 31.968).abs() < 1e-9);
        assert!((r.loss_percent() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn json_is_one_line_with_the_headline_fields() {
        let json = report().to_json();
        assert!(!json.contains('\n'));
        for field in [
            r#""sent_pps":40000.0"#,
            r#""delivered_pps":39960.0"#,
            r#""loss_pct":0.1000"#,
            r#""rtt_p50_us":40.0"#,
            r#""mode":"channel""#,
        ] {
            assert!(json.contains(field), "{field} missing in {json}");
        }
    }

    #[test]
    fn churn_reports_rate_and_failures_as_table_and_json() {
        let r = ChurnReport {
            cycles: 128,
            allocate_failures: 2,
            timeouts: 1,
            last_error: Some(437),
            elapsed: Duration::from_secs(2),
            ..ChurnReport::default()
        };
        let table = r.to_table();
        assert!(table.contains("64.0 cycles/s"), "{table}");
        assert!(
            table.contains("failures 2: 0 challenge, 2 Allocate"),
            "{table}"
        );
        let json = r.to_json();
        assert!(!json.contains('\n'));
        for field in [
            r#""cycles_per_s":64.0"#,
            r#""failures":2"#,
            r#""last_error":437"#,
        ] {
            assert!(json.contains(field), "{field} missing in {json}");
        }
        let clean = ChurnReport::default().to_json();
        assert!(clean.contains(r#""last_error":null"#) && !clean.contains("NaN"));
    }

    #[test]
    fn nothing_sent_reports_zero_rates_not_nan() {
        let r = LoadReport {
            sent: 0,
            received: 0,
            elapsed: Duration::ZERO,
            ..report()
        };
        assert_eq!(r.loss_percent(), 0.0);
        assert_eq!(r.sent_per_sec(), 0.0);
        assert!(!r.to_json().contains("NaN"));
    }
}
