//! The markdown report: data plane, ratios, kernel fast path, stream clients, control plane and
//! memory tables.

use std::fmt::Write as _;

use turnstone::loadgen;

use crate::cells::{ControlRow, MemoryRow, StreamResults, TrafficResults};
use crate::cli::{Cell, Plan};
use crate::measure::Sample;
use crate::{CHURN_POOL, Kind, NOISY, NOISY_RETRIES, SATURATION_IN_FLIGHT};

const CPU_DEFINITION: &str = "CPU µs/pkt = server process CPU time (utime + stime, all threads, \
    /proc/PID/stat) during the measured phase ÷ relayed packets, where every round trip that came \
    back counts as 2 relayed packets (client → peer and peer → client). Lost packets are not \
    counted, so loss makes the figure worse, not better. Softirq work is charged to whichever \
    process runs, so this misses most of what the kernel does for a relay, and all of what \
    turnstone-kernel does.";

const SYSTEM_DEFINITION: &str = "System µs/pkt = (busy time of all cores during the measured phase \
    − the same for the generator alone at the same rate, per second) ÷ relayed packets per second. \
    Busy time is /proc/stat's user + nice + system + irq + softirq + steal over both cores, less \
    the CPU time other processes (not the server, not the generator, not ksoftirqd) used meanwhile \
    (/proc/PID/stat), so that other people's builds stay out. The generator alone is `loadgen` \
    direct mode: the same client sockets, pacing and echo peers, each client sending its \
    ChannelData straight to its peer, no relay; it runs right after each server's run, at the \
    round trips per second that run delivered (steps of 1k), once per rate per round. The \
    generator sleeps in epoll between sends in every run (at least 50 µs), as real clients do: a \
    spinning generator would keep its core busy whatever the kernel did there. So this figure is \
    everything the relay costs the machine, in any process, kernel thread or softirq, plus the \
    extra wakeups the relay causes the generator (its replies come later than its own echoes).";

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub(crate) fn med(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(samples.iter().map(f).collect())
}

fn range(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let v: Vec<f64> = samples.iter().map(f).filter(|x| x.is_finite()).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

/// Cells the generator, not the server, may have limited.
fn notes(cell: &Cell, kind: Kind, s: &[Sample]) -> String {
    let mut n = Vec::new();
    let sent = med(s, |x| x.sent_pps);
    if cell.rate > 0 && sent < 0.95 * cell.rate as f64 {
        n.push(format!("generator sent only {sent:.0} pps"));
    }
    let util = med(s, |x| x.utilisation);
    // turnstone-kernel relays on whichever core receives the packet, not in its process.
    if cell.rate == 0 && util < 0.9 && kind != Kind::TurnstoneKernel {
        n.push(format!(
            "server core {:.0}% busy: generator-limited",
            util * 100.0
        ));
    }
    let noise = med(s, Sample::noise);
    if noise > 0.05 {
        n.push(format!(
            "noisy: other processes took {:.0}% of a core",
            noise * 100.0
        ));
    }
    if med(s, |x| x.loss_pct) > 1.0 {
        n.push("loss > 1%".into());
    }
    let generator = med(s, |x| x.gen_core);
    if cell.rate == 0 && generator > 0.95 {
        n.push(format!("generator core {:.0}% busy", generator * 100.0));
    }
    n.join("; ")
}

/// What every phase measured.
pub(crate) struct Measured<'a> {
    pub(crate) traffic: &'a TrafficResults,
    pub(crate) streams: &'a StreamResults,
    pub(crate) control: &'a [ControlRow],
    pub(crate) memory: &'a [MemoryRow],
}

pub(crate) fn report(
    plan: &Plan,
    kinds: &[Kind],
    measured: &Measured<'_>,
    (load_start, load_end): (&str, &str),
    idle: &str,
) -> String {
    let Measured {
        traffic: results,
        streams,
        control,
        memory,
    } = *measured;
    let traffic = &results.samples;
    let mut md = String::new();
    let w = &mut md;
    let _ = writeln!(w, "# Turnstone vs coturn vs a raw forwarder\n");
    let _ = writeln!(
        w,
        "{} mode: {} round(s) per cell, {:.1} s measured after {:.1} s warmup; medians over rounds \
         (CPU column: median (min–max)). Servers pinned to core 0, the generator to core 1. \
         Load average (1/5/15 min) {load_start} at start, {load_end} at the end.\n",
        if plan.full { "Full" } else { "Quick" },
        plan.rounds,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64()
    );
    let _ = writeln!(
        w,
        "Idle CPU of each server (2 s, no allocations): {idle}.\n"
    );
    let _ = writeln!(
        w,
        "{CPU_DEFINITION} Saturation = closed loop with {SATURATION_IN_FLIGHT} \
        packets in flight in total (at least 1 per allocation: 1000 at 1000 allocations, so the \
        RTT of those cells is mostly queueing). RTT is client → server → peer → \
        server → client. The \"½ coturn max\" row runs at half the rate coturn delivered at saturation \
        (100 B, 10 allocations) in this run: the load of the p99 target. Server CPU % = CPU seconds per wall second of the measured phase. A run in which other \
         processes took more than {:.0}% of core 0 or 1 (from /proc/stat) is run again, up to {NOISY_RETRIES} \
         times, keeping the quietest.\n",
        NOISY * 100.0
    );
    let _ = writeln!(
        w,
        "{SYSTEM_DEFINITION} Gen core % = busy share of core 1 (the generator's) \
        in the measured phase, whatever ran there.\n"
    );
    let _ = writeln!(
        w,
        "turnstone = userspace relay (`fast_path = \"off\"`, bandwidth caps on as before); \
        turnstone-kernel = `fast_path = \"on\"` (no caps: they are enforced in userspace), started \
        for each of its runs so that its program is on lo only then; every run of it checked that \
        the program's relayed_to_peer and relayed_to_client counters grew by at least 90% of the \
        round trips measured.\n"
    );
    let _ = writeln!(w, "## Data plane\n");
    let _ = writeln!(
        w,
        "| payload | allocs | load | server | delivered pps | loss % | RTT p50 µs | RTT p99 µs | CPU µs/pkt | server CPU % | system µs/pkt | gen core % | RSS MiB | notes |"
    );
    let _ = writeln!(
        w,
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for (c, cell) in plan.cells.iter().enumerate() {
        for (k, kind) in kinds.iter().enumerate() {
            let s = &traffic[c][k];
            let (lo, hi) = range(s, |x| x.cpu_us_per_packet);
            let (slo, shi) = range(s, |x| x.sys_us_per_packet);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.0} | {:.3} | {:.0} | {:.0} | {:.2} ({:.2}–{:.2}) | {:.0} | {:.2} ({:.2}–{:.2}) | {:.0} | {:.1} | {} |",
                cell.payload,
                cell.allocations,
                cell.load(),
                kind.name(),
                med(s, |x| x.delivered_pps),
                med(s, |x| x.loss_pct),
                med(s, |x| x.p50_us),
                med(s, |x| x.p99_us),
                med(s, |x| x.cpu_us_per_packet),
                lo,
                hi,
                med(s, |x| x.utilisation * 100.0),
                med(s, |x| x.sys_us_per_packet),
                slo,
                shi,
                med(s, |x| x.gen_core * 100.0),
                med(s, |x| x.rss_kib as f64) / 1024.0,
                notes(cell, *kind, s)
            );
        }
    }
    let idx = |k: Kind| kinds.iter().position(|&x| x == k);
    let (f, t, co) = (
        idx(Kind::Forwarder),
        idx(Kind::Turnstone),
        idx(Kind::Coturn),
    );
    let _ = writeln!(w, "\n## Ratios (medians)\n");
    let _ = writeln!(
        w,
        "| payload | allocs | load | CPU/pkt T/F | CPU/pkt T/C | CPU/pkt C/F | p99 T/F | p99 T/C | p99 C/F | pps T/F | pps T/C |"
    );
    let _ = writeln!(w, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (c, cell) in plan.cells.iter().enumerate() {
        let get = |k: Option<usize>, m: fn(&Sample) -> f64| {
            k.map_or(f64::NAN, |k| med(&traffic[c][k], m))
        };
        let cpu = |k| get(k, |x| x.cpu_us_per_packet);
        let p99 = |k| get(k, |x| x.p99_us);
        let pps = |k| get(k, |x| x.delivered_pps);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell.payload,
            cell.allocations,
            cell.load(),
            ratio(cpu(t), cpu(f)),
            ratio(cpu(t), cpu(co)),
            ratio(cpu(co), cpu(f)),
            ratio(p99(t), p99(f)),
            ratio(p99(t), p99(co)),
            ratio(p99(co), p99(f)),
            ratio(pps(t), pps(f)),
            ratio(pps(t), pps(co)),
        );
    }
    let kt = idx(Kind::TurnstoneKernel);
    let _ = writeln!(
        w,
        "\n## Kernel fast path: system CPU and maximum rate (medians)\n"
    );
    let _ = writeln!(
        w,
        "K = turnstone-kernel, T = turnstone (userspace), C = coturn, F = forwarder. System \
        µs/pkt as defined above. \"Generator alone\" = the generator in a closed loop with the \
        same window and no relay (direct mode): the most round trips per second it manages by \
        itself. On loopback turnstone-kernel relays inside the generator's own calls, on its core: \
        where that core is full both alone and with the relay, busy time cannot show the relay and \
        its system figure reads about 0; \"K from rates\" is then the cost it does show, the core \
        time it adds per round trip (1/pps K − 1/generator alone pps), halved per relayed \
        packet.\n"
    );
    let _ = writeln!(
        w,
        "| payload | allocs | load | system µs/pkt K | T | C | F | K/C | K/F | T/C | pps K | pps C | pps K/C | generator alone pps | gen core % K | K from rates µs/pkt |"
    );
    let _ = writeln!(
        w,
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (c, cell) in plan.cells.iter().enumerate() {
        let get = |k: Option<usize>, m: fn(&Sample) -> f64| {
            k.map_or(f64::NAN, |k| med(&traffic[c][k], m))
        };
        let sys = |k| get(k, |x| x.sys_us_per_packet);
        let pps = |k| get(k, |x| x.delivered_pps);
        let alone = results
            .alone_max
            .get(c)
            .map_or(f64::NAN, |s| med(s, |x| x.delivered_pps));
        // At saturation the generator's core is full both alone and with the kernel relaying
        // inside its calls, so busy time cannot show the relay; the rate it loses can: the
        // extra core time per round trip, halved per relayed packet.
        let from_rates = {
            let k = pps(kt);
            let gen_full = get(kt, |x| x.gen_core) >= 0.98;
            if cell.rate == 0 && gen_full && k > 0.0 && alone > k {
                format!("{:.2}", (1e6 / k - 1e6 / alone) / 2.0)
            } else {
                "–".into()
            }
        };
        let _ = writeln!(
            w,
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {:.0} | {from_rates} |",
            cell.payload,
            cell.allocations,
            cell.load(),
            sys(kt),
            sys(t),
            sys(co),
            sys(f),
            ratio(sys(kt), sys(co)),
            ratio(sys(kt), sys(f)),
            ratio(sys(t), sys(co)),
            pps(kt),
            pps(co),
            ratio(pps(kt), pps(co)),
            if alone.is_finite() {
                format!("{alone:.0}")
            } else {
                "–".into()
            },
            get(kt, |x| x.gen_core * 100.0),
        );
    }
    stream_table(w, plan, streams);
    let _ = writeln!(w, "\n## Control plane\n");
    let _ = writeln!(
        w,
        "Server CPU per cycle of a new client: Allocate without credentials → 401 (REALM, \
        NONCE), Allocate with them → success, Refresh(0) → success (3 requests; a 438 adds one). \
        Waves of {} client sockets pipelined, from a pool of {CHURN_POOL} sockets each reused only \
        {} s after its delete (coturn refuses a new Allocate on a just-deleted 5-tuple with 437 \
        for about a second), {} cycles per round.\n",
        loadgen::CHURN_WAVE,
        loadgen::CHURN_REUSE_GAP.as_secs_f64(),
        plan.churn_cycles
    );
    let _ = writeln!(
        w,
        "| server | credentials | CPU µs/cycle | cycles/s | failures |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|");
    for r in control {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} | {:.0} | {} {} |",
            r.server,
            r.credentials,
            median(r.us_per_cycle.clone()),
            median(r.cycles_per_sec.clone()),
            r.failures,
            r.failure_kinds
        );
    }
    let cyc = |s: &str, c: &str| {
        control
            .iter()
            .find(|r| r.server == s && r.credentials == c)
            .map_or(f64::NAN, |r| median(r.us_per_cycle.clone()))
    };
    for c in ["static", "REST"] {
        let _ = writeln!(
            w,
            "\nturnstone/coturn ({c}): {}",
            ratio(cyc("turnstone", c), cyc("coturn", c))
        );
    }
    let _ = writeln!(w, "\n## Memory\n");
    let _ = writeln!(
        w,
        "Fresh server; RSS idle, then with N allocations each holding one permission \
        and one channel (idle, after setup). Per allocation = (RSS − baseline) / N. Kernel socket \
        memory is not in RSS.\n"
    );
    let _ = writeln!(
        w,
        "| server | allocations | baseline MiB | RSS MiB | bytes/allocation |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for r in memory {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} | {:.1} | {:.0} |",
            r.server,
            r.allocations,
            r.baseline_kib as f64 / 1024.0,
            r.rss_kib as f64 / 1024.0,
            (r.rss_kib.saturating_sub(r.baseline_kib) * 1024) as f64 / r.allocations as f64
        );
    }
    md
}

/// "Stream clients": TCP and TLS cells, one row per server, Turnstone's ratios to coturn on
/// its row. Nothing when no stream cell ran.
fn stream_table(w: &mut String, plan: &Plan, streams: &StreamResults) {
    if plan.streams.is_empty() {
        return;
    }
    let _ = writeln!(w, "\n## Stream clients\n");
    let _ = writeln!(
        w,
        "TURN over TCP and over TLS: one connection per allocation, the relay to the peers UDP \
        as above. A Turnstone (`fast_path = \"off\"`, one worker) and a coturn (one relay thread) \
        started for these cells with TCP and TLS listeners and a self-signed certificate; the \
        forwarder and turnstone-kernel do not take stream clients. CPU µs/pkt and RTT as in the \
        data plane (median (min–max) over rounds); no system figure (the generator-alone \
        baseline has UDP clients only). T/C = turnstone ÷ coturn (medians), on turnstone's row.\n"
    );
    let _ = writeln!(
        w,
        "| transport | payload | allocs | load | server | delivered pps | loss % | RTT p50 µs | RTT p99 µs | CPU µs/pkt | server CPU % | RSS MiB | CPU/pkt T/C | p99 T/C | notes |"
    );
    let _ = writeln!(
        w,
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    let kinds = &streams.kinds;
    let coturn = kinds.iter().position(|&k| k == Kind::Coturn);
    for (c, cell) in plan.streams.iter().enumerate() {
        let of = |k: Option<usize>, m: fn(&Sample) -> f64| {
            k.map_or(f64::NAN, |k| med(&streams.samples[c][k], m))
        };
        for (k, &kind) in kinds.iter().enumerate() {
            let s = &streams.samples[c][k];
            let (lo, hi) = range(s, |x| x.cpu_us_per_packet);
            let vs_coturn = |m: fn(&Sample) -> f64| {
                if kind == Kind::Turnstone {
                    ratio(of(Some(k), m), of(coturn, m))
                } else {
                    String::new()
                }
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.0} | {:.0} | {:.2} ({:.2}–{:.2}) | {:.0} | {:.1} | {} | {} | {} |",
                cell.transport_name(),
                cell.payload,
                cell.allocations,
                cell.load(),
                kind.name(),
                med(s, |x| x.delivered_pps),
                med(s, |x| x.loss_pct),
                med(s, |x| x.p50_us),
                med(s, |x| x.p99_us),
                med(s, |x| x.cpu_us_per_packet),
                lo,
                hi,
                med(s, |x| x.utilisation * 100.0),
                med(s, |x| x.rss_kib as f64) / 1024.0,
                vs_coturn(|x| x.cpu_us_per_packet),
                vs_coturn(|x| x.p99_us),
                notes(cell, kind, s)
            );
        }
    }
}
