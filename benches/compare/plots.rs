//! Hand-written SVG line charts of the traffic cells.

use std::fmt::Write as _;

use crate::Kind;
use crate::cells::Traffic;
use crate::cli::Plan;
use crate::measure::Sample;
use crate::report::med;

/// A figure of a run.
type Metric = fn(&Sample) -> f64;

struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    ys: Vec<f64>,
}

/// CPU per packet and RTT p99 against allocations, one file per metric and load.
pub(crate) fn plots(plan: &Plan, kinds: &[Kind], traffic: &Traffic) -> Vec<(String, String)> {
    let mut xs: Vec<usize> = plan.cells.iter().map(|c| c.allocations).collect();
    xs.sort_unstable();
    xs.dedup();
    let mut payloads: Vec<usize> = plan.cells.iter().map(|c| c.payload).collect();
    payloads.sort_unstable();
    payloads.dedup();
    let metrics: [(&str, &str, Metric); 2] = [
        ("cpu_per_packet", "server CPU µs per relayed packet", |s| {
            s.cpu_us_per_packet
        }),
        ("rtt_p99", "RTT p99 µs", |s| s.p99_us),
    ];
    let mut files = Vec::new();
    for (name, ylabel, metric) in metrics {
        for (load, fixed) in [("fixed", true), ("saturation", false)] {
            let mut series = Vec::new();
            for (k, kind) in kinds.iter().enumerate() {
                // Its process does none of the relaying: its per-process CPU says nothing.
                if name == "cpu_per_packet" && *kind == Kind::TurnstoneKernel {
                    continue;
                }
                for (p, &payload) in payloads.iter().enumerate() {
                    let ys = xs
                        .iter()
                        .map(|&x| {
                            plan.cells
                                .iter()
                                .position(|c| {
                                    c.allocations == x
                                        && c.payload == payload
                                        && c.rate == if fixed { 40_000 } else { 0 }
                                        && !c.half_coturn_max
                                })
                                .map_or(f64::NAN, |c| med(&traffic[c][k], metric))
                        })
                        .collect();
                    series.push(Series {
                        label: format!("{} {payload} B", kind.name()),
                        color: kind.color(),
                        dashed: p > 0,
                        ys,
                    });
                }
            }
            let title = match fixed {
                true => format!("{ylabel}, 40k pps"),
                false => format!("{ylabel}, saturation"),
            };
            files.push((format!("{name}_{load}.svg"), chart(&title, &xs, &series)));
        }
    }
    files
}

/// A hand-written SVG line chart: x = allocation counts, evenly spaced (log scale).
fn chart(title: &str, xs: &[usize], series: &[Series]) -> String {
    let (left, right, top, bottom) = (70.0, 540.0, 40.0, 340.0);
    let max = series
        .iter()
        .flat_map(|s| s.ys.iter().copied())
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max);
    let ymax = nice(max * 1.1);
    let x_at = |i: usize| left + (i as f64 + 0.5) * (right - left) / xs.len().max(1) as f64;
    let y_at = |y: f64| bottom - y / ymax * (bottom - top);
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="760" height="390" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="760" height="390" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="24" font-size="15">{}</text>"#,
        xml(title)
    );
    for t in 0..=5 {
        let v = ymax * f64::from(t) / 5.0;
        let y = y_at(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            fmt_num(v)
        );
    }
    for (i, x) in xs.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            x_at(i),
            bottom + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">allocations</text>"#,
        (left + right) / 2.0,
        bottom + 38.0
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{bottom}" stroke="black"/>"#
    );
    for (n, se) in series.iter().enumerate() {
        let dash = if se.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let points: Vec<String> = se
            .ys
            .iter()
            .enumerate()
            .filter(|(_, y)| y.is_finite())
            .map(|(i, &y)| format!("{:.1},{:.1}", x_at(i), y_at(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            se.color,
            points.join(" ")
        );
        for p in &points {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(
                s,
                r#"<circle cx="{x}" cy="{y}" r="3.5" fill="{}"/>"#,
                se.color
            );
        }
        let ly = top + 10.0 + n as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="560" y1="{ly:.1}" x2="590" y2="{ly:.1}" stroke="{}" stroke-width="2"{dash}/>"#,
            se.color
        );
        let _ = writeln!(
            s,
            r#"<text x="598" y="{:.1}">{}</text>"#,
            ly + 4.0,
            xml(&se.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The next 1, 2 or 5 × 10^k at or above `v`.
fn nice(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
