//! Options after `--`: what to run, how long and how often.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use turnstone::loadgen::LoadTransport;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Cell {
    /// How the generator's clients reach the server (the relay to the peers is UDP always).
    pub(crate) transport: LoadTransport,
    pub(crate) payload: usize,
    pub(crate) allocations: usize,
    /// Packets per second; 0 = saturation (closed loop).
    pub(crate) rate: u64,
    /// The rate is half of coturn's measured saturation rate (the p99 target's load), not a
    /// planned one.
    pub(crate) half_coturn_max: bool,
}

impl Cell {
    /// A cell of UDP clients.
    pub(crate) fn udp(payload: usize, allocations: usize, rate: u64) -> Self {
        Self {
            transport: LoadTransport::Udp,
            payload,
            allocations,
            rate,
            half_coturn_max: false,
        }
    }

    /// "TCP", "TLS" or "UDP".
    pub(crate) fn transport_name(&self) -> &'static str {
        match self.transport {
            LoadTransport::Udp => "UDP",
            LoadTransport::Tcp => "TCP",
            LoadTransport::Tls => "TLS",
        }
    }

    pub(crate) fn load(&self) -> String {
        match (self.rate, self.half_coturn_max) {
            (0, _) => "saturation".into(),
            (r, false) => format!("{}k pps", r / 1000),
            (r, true) => format!("{}k pps (½ coturn max)", r / 1000),
        }
    }
}

/// The fixed rate of the kernel fast path's cells: 200k packets/s (issue "kernel fast path")
/// where the generator sustains it. Over 1,000 client sockets it does not on the 2-core machine
/// of docs/perf/kernel.md (every kind, the kernel path included, lost 25–42% at 200k while
/// the generator alone manages 185–204k in a closed loop), so those cells run at 120k.
pub(crate) fn high_rate(allocations: usize) -> u64 {
    if allocations >= 1000 {
        120_000
    } else {
        200_000
    }
}

pub(crate) struct Plan {
    pub(crate) full: bool,
    pub(crate) rounds: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) cells: Vec<Cell>,
    /// Cells of TCP and TLS clients (one connection per allocation), against Turnstone and
    /// coturn only: the forwarder and the kernel fast path relay UDP clients only.
    pub(crate) streams: Vec<Cell>,
    pub(crate) churn_cycles: u64,
    pub(crate) memory_counts: Vec<usize>,
}

pub(crate) fn plan(args: &[String]) -> Result<Plan> {
    let env_full = std::env::var("TURNSTONE_COMPARE").is_ok_and(|v| v == "full");
    let full =
        (env_full || args.iter().any(|a| a == "--full")) && !args.iter().any(|a| a == "--quick");
    let value = |flag: &str| -> Option<&String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    let secs: f64 = match value("--secs") {
        Some(v) => v.parse().context("--secs takes seconds")?,
        None if full => 3.0,
        None => 2.0,
    };
    let rounds: usize = match value("--rounds") {
        Some(v) => v.parse().context("--rounds takes a count")?,
        None if full => 3,
        None => 1,
    };
    if !(0.1..=60.0).contains(&secs) || !(1..=10).contains(&rounds) {
        bail!("--secs must be 0.1..=60 and --rounds 1..=10");
    }
    let only = value("--only").map(String::as_str);
    if !matches!(
        only,
        None | Some("traffic" | "control" | "memory" | "kernel" | "streams")
    ) {
        bail!("--only takes traffic, control, memory, kernel or streams");
    }
    let cell = Cell::udp;
    let mut cells = Vec::new();
    let (payloads, allocations): (&[usize], &[usize]) = if full {
        (&[100, 1200], &[10, 100, 1000])
    } else {
        (&[100], &[10])
    };
    for &payload in payloads {
        for &allocations in allocations {
            for rate in [40_000, 0] {
                cells.push(cell(payload, allocations, rate));
            }
        }
    }
    if full {
        // Flat per-packet cost at 10,000 concurrent allocations (one payload size suffices).
        for rate in [40_000, 0] {
            cells.push(cell(100, 10_000, rate));
        }
    }
    // The kernel fast path's cells: a fixed high rate (their saturation cells are above).
    let kernel_cells: Vec<Cell> = [100, 1200]
        .into_iter()
        .flat_map(|p| [100, 1000].map(|a| (p, a)))
        .map(|(p, a)| cell(p, a, high_rate(a)))
        .collect();
    if full {
        cells.extend(&kernel_cells);
    } else {
        // One of them keeps CI's run through the kernel path (a few seconds per server).
        cells.push(cell(100, 100, high_rate(100)));
    }
    let keep = |phase: &str| only.is_none_or(|o| o == phase);
    if only == Some("kernel") {
        // Just the cells of the kernel fast path's goals, at every load.
        cells = kernel_cells
            .iter()
            .flat_map(|&c| [c, Cell { rate: 0, ..c }])
            .collect();
    } else if !keep("traffic") {
        cells.clear();
    }
    let mut streams = if keep("streams") {
        stream_cells(full)
    } else {
        Vec::new()
    };
    // `--allocs 100,1000`: only the cells with these allocation counts.
    if let Some(list) = value("--allocs") {
        let wanted: Vec<usize> = list
            .split(',')
            .map(|n| n.trim().parse())
            .collect::<Result<_, _>>()
            .context("--allocs takes allocation counts, e.g. 100,1000")?;
        cells.retain(|c| wanted.contains(&c.allocations));
        streams.retain(|c| wanted.contains(&c.allocations));
    }
    Ok(Plan {
        full,
        rounds,
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::from_millis(500),
        cells,
        streams,
        churn_cycles: match (keep("control"), full) {
            (false, _) => 0,
            (true, true) => 20_000,
            (true, false) => 8_192,
        },
        memory_counts: match (keep("memory"), full) {
            (false, _) => Vec::new(),
            (true, true) => vec![1000, 10_000],
            (true, false) => vec![1000],
        },
    })
}

/// TCP and TLS clients at 40k packets/s (issue 14): 100 B over 10 and 100 connections. Quick
/// mode keeps one TCP cell (a few seconds per server) so that CI runs the stream path too.
fn stream_cells(full: bool) -> Vec<Cell> {
    let stream = |transport, allocations| Cell {
        transport,
        ..Cell::udp(100, allocations, 40_000)
    };
    if !full {
        return vec![stream(LoadTransport::Tcp, 10)];
    }
    [LoadTransport::Tcp, LoadTransport::Tls]
        .into_iter()
        .flat_map(|t| [10, 100].map(|a| stream(t, a)))
        .collect()
}
