//! Turnstone next to coturn and a raw forwarder (issue "Performance", item 2), from one command:
//!
//! ```text
//! cargo bench --bench compare                 # quick: 1 round, 10 allocations, 100 B (CI)
//! cargo bench --bench compare -- --full       # every cell, 3 rounds (about 20 minutes)
//! cargo bench --bench compare -- --full --only streams   # TCP and TLS clients only
//! TURNSTONE_COMPARE=full cargo bench --bench compare
//! ```
//!
//! Options after `--`: `--quick`, `--full`, `--secs S` (measured seconds per run), `--rounds N`,
//! `--only traffic|control|memory|kernel|streams` (kernel: the fast path's cells only; streams:
//! TCP and TLS clients), `--allocs 100,1000` (only cells with these allocation counts).
//! Without `--bench` on its command line (as under `cargo test --all-targets`) it does nothing.
//!
//! Each server runs as its own process pinned to core 0 (`taskset -c 0`): `turnstone serve`
//! (one worker) twice, relaying in userspace (`fast_path = "off"`) and with its kernel fast path
//! required (`fast_path = "on"`, "turnstone-kernel": needs root and a build with clang), Debian's
//! coturn (`turnserver`, one relay thread; skipped when not installed) and
//! `turnstone-forwarder` (no TURN at all: the floor). The load generator (`turnstone::loadgen`,
//! raw mode for the forwarder, sleeping between sends) runs in this process pinned to core 1.
//! The stream cells (TCP and TLS clients, one connection per allocation) run against a
//! Turnstone and a coturn of their own, started with TCP and TLS listeners and a self-signed
//! certificate made here; the forwarder and the kernel fast path relay UDP clients only.
//! Server CPU time is utime + stime from /proc/PID/stat over the measured phase; RSS is VmRSS
//! from /proc/PID/status. Neither sees softirq work charged to other processes, which is where
//! the kernel fast path relays, so every run is also measured system-wide: all-core busy time
//! less other processes' CPU, less the generator alone at the same rate (docs/perf/kernel.md).
//! Results go to stdout and to target/compare/ (results.md, *.svg). Every process started here
//! is killed by PID when its guard drops, panics included.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark harness reads the wall clock and sleeps while servers start"
)]

mod cells;
mod cli;
mod measure;
mod plots;
mod procs;
mod report;

use anyhow::{Context, Result};

use cells::{Servers, half_coturn_max_cell, run_control, run_memory, run_streams, run_traffic};
use cli::plan;
use measure::{idle_cpu, load_average};
use plots::plots;
use procs::{coturn_installed, out_dir, pin_self_to_core, raise_fd_limit, start};
use report::{Measured, report};

pub(crate) const USER: &str = "bench";
pub(crate) const PASSWORD: &str = "bench";
pub(crate) const SECRET: &str = "bench-secret";
pub(crate) const REALM: &str = "bench";
/// Closed-loop packets in flight in saturation cells, spread over the allocations (each at
/// least 1).
pub(crate) const SATURATION_IN_FLIGHT: usize = 256;
/// Client sockets of the control-plane cell (each reused 2 s after its allocation was
/// deleted, so at most CHURN_POOL / 2 cycles per second).
pub(crate) const CHURN_POOL: usize = 8192;
/// A run where other processes took more than this share of core 0 or 1 is run again.
pub(crate) const NOISY: f64 = 0.10;
/// Extra runs at most per noisy run (the least noisy is kept).
pub(crate) const NOISY_RETRIES: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Forwarder,
    /// Turnstone relaying in userspace (`fast_path = "off"`).
    Turnstone,
    /// Turnstone with its kernel fast path required (`fast_path = "on"`).
    TurnstoneKernel,
    Coturn,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Forwarder => "forwarder",
            Self::Turnstone => "turnstone",
            Self::TurnstoneKernel => "turnstone-kernel",
            Self::Coturn => "coturn",
        }
    }
    pub(crate) fn color(self) -> &'static str {
        match self {
            Self::Forwarder => "#777777",
            Self::Turnstone => "#1f6feb",
            Self::TurnstoneKernel => "#2da44e",
            Self::Coturn => "#e8702a",
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("compare: run with `cargo bench --bench compare [-- --full]`; skipping");
        return Ok(());
    }
    let mut plan = plan(&args)?;
    raise_fd_limit();
    pin_self_to_core(1);
    let out = out_dir()?;
    let tmp = out.join("tmp");
    // Configurations, logs, pid files and coturn databases of the previous run.
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    // Private copies: a concurrent `cargo build` may replace the binaries in target/release
    // while this runs.
    for (bin, name) in [
        (env!("CARGO_BIN_EXE_turnstone"), "turnstone"),
        (
            env!("CARGO_BIN_EXE_turnstone-forwarder"),
            "turnstone-forwarder",
        ),
    ] {
        std::fs::copy(bin, tmp.join(name)).with_context(|| format!("cannot copy {bin}"))?;
    }
    let coturn = coturn_installed();
    let load_start = load_average();
    println!(
        "compare: {} mode, {} round(s), {:.1} s per run; load average {load_start}",
        if plan.full { "full" } else { "quick" },
        plan.rounds,
        plan.duration.as_secs_f64()
    );
    if !coturn {
        println!("compare: turnserver not found (apt-get install coturn): coturn skipped");
    }

    let mut kinds = vec![Kind::Forwarder, Kind::Turnstone, Kind::TurnstoneKernel];
    if coturn {
        kinds.push(Kind::Coturn);
    }
    // turnstone-kernel is started for each of its runs instead: while it runs, its program
    // sees every packet on lo, the other servers' and the generator's too.
    let mut servers = Vec::new();
    for &kind in kinds.iter().filter(|&&k| k != Kind::TurnstoneKernel) {
        servers.push(start(kind, &tmp, false)?);
    }
    let idle = idle_cpu(&servers);
    let set = Servers {
        running: &servers,
        kinds: &kinds,
        tmp: &tmp,
    };
    let mut traffic = run_traffic(&plan, &plan.cells, &set)?;
    // The p99 target's load depends on what coturn just reached: measured last, same servers.
    if let Some(cell) = half_coturn_max_cell(&plan.cells, &kinds, &traffic.samples) {
        let more = run_traffic(&plan, &[cell], &set)?;
        traffic.samples.extend(more.samples);
        traffic.alone_max.extend(more.alone_max);
        plan.cells.push(cell);
    }
    println!("compare: load average after traffic {}", load_average());
    let control = run_control(&plan, &servers, &tmp, coturn)?;
    drop(servers);
    let streams = run_streams(&plan, &tmp, coturn)?;
    let memory = run_memory(&plan, &tmp, coturn)?;
    let load_end = load_average();

    let md = report(
        &plan,
        &kinds,
        &Measured {
            traffic: &traffic,
            streams: &streams,
            control: &control,
            memory: &memory,
        },
        (&load_start, &load_end),
        &idle,
    );
    println!("\n{md}");
    std::fs::write(out.join("results.md"), &md)?;
    for svg in plots(&plan, &kinds, &traffic.samples) {
        let path = out.join(&svg.0);
        std::fs::write(&path, svg.1)?;
        println!("compare: wrote {}", path.display());
    }
    println!("compare: wrote {}", out.join("results.md").display());
    Ok(())
}
