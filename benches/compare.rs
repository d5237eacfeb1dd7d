//! Turnstone next to coturn and a raw forwarder (issue "Performance", item 2), from one command:
//!
//! ```text
//! cargo bench --bench compare                 # quick: 1 round, 10 allocations, 100 B (CI)
//! cargo bench --bench compare -- --full       # every cell, 3 rounds (about 10 minutes)
//! TURNSTONE_COMPARE=full cargo bench --bench compare
//! ```
//!
//! Options after `--`: `--quick`, `--full`, `--secs S` (measured seconds per run), `--rounds N`,
//! `--only traffic|control|memory`.
//! Without `--bench` on its command line (as under `cargo test --all-targets`) it does nothing.
//!
//! Each server runs as its own process pinned to core 0 (`taskset -c 0`): `turnstone serve`
//! (one worker), Debian's coturn (`turnserver`, one relay thread; skipped when not installed)
//! and `turnstone-forwarder` (no TURN at all: the floor). The load generator
//! (`turnstone::loadgen`, raw mode for the forwarder) runs in this process pinned to core 1.
//! Server CPU time is utime + stime from /proc/PID/stat over the measured phase; RSS is VmRSS
//! from /proc/PID/status. Results go to stdout and to target/compare/ (results.md, *.svg).
//! Every process started here is killed by PID when its guard drops, panics included.

#![allow(
    clippy::disallowed_methods,
    reason = "a benchmark harness reads the wall clock and sleeps while servers start"
)]

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use turnstone::loadgen::{
    self, Churn, Credentials, Hello, HelloKind, LoadConfig, LoadReport, Stage,
};
use turnstone::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId};

const USER: &str = "bench";
const PASSWORD: &str = "bench";
const SECRET: &str = "bench-secret";
const REALM: &str = "bench";
/// Closed-loop packets in flight in saturation cells, spread over the allocations (each at
/// least 1).
const SATURATION_IN_FLIGHT: usize = 256;
/// Client sockets of the control-plane cell (each reused 2 s after its allocation was
/// deleted, so at most CHURN_POOL / 2 cycles per second).
const CHURN_POOL: usize = 8192;
/// A run where other processes took more than this share of core 0 or 1 is run again.
const NOISY: f64 = 0.10;
/// Extra runs at most per noisy run (the least noisy is kept).
const NOISY_RETRIES: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Forwarder,
    Turnstone,
    Coturn,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Forwarder => "forwarder",
            Self::Turnstone => "turnstone",
            Self::Coturn => "coturn",
        }
    }
    fn color(self) -> &'static str {
        match self {
            Self::Forwarder => "#777777",
            Self::Turnstone => "#1f6feb",
            Self::Coturn => "#e8702a",
        }
    }
}

/// A server process, killed (SIGKILL) and reaped by PID when dropped.
struct Proc {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
struct Cell {
    payload: usize,
    allocations: usize,
    /// Packets per second; 0 = saturation (closed loop).
    rate: u64,
}

impl Cell {
    fn load(&self) -> String {
        match self.rate {
            0 => "saturation".into(),
            r => format!("{}k pps", r / 1000),
        }
    }
}

struct Plan {
    full: bool,
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    cells: Vec<Cell>,
    churn_cycles: u64,
    memory_counts: Vec<usize>,
}

/// One traffic run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    sent_pps: f64,
    delivered_pps: f64,
    loss_pct: f64,
    p50_us: f64,
    p99_us: f64,
    /// Server CPU µs per relayed packet (see `CPU_DEFINITION`).
    cpu_us_per_packet: f64,
    /// Server CPU seconds per wall second of the measured phase.
    utilisation: f64,
    rss_kib: u64,
    /// CPU share other processes took on the server's core (0) and the generator's (1)
    /// during the measured phase: a sign of a noisy machine.
    foreign: [f64; 2],
}

impl Sample {
    fn noise(&self) -> f64 {
        self.foreign[0].max(self.foreign[1])
    }
}

const CPU_DEFINITION: &str = "CPU µs/pkt = server process CPU time (utime + stime, all threads, \
    /proc/PID/stat) during the measured phase ÷ relayed packets, where every round trip that came \
    back counts as 2 relayed packets (client → peer and peer → client). Lost packets are not \
    counted, so loss makes the figure worse, not better.";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("compare: run with `cargo bench --bench compare [-- --full]`; skipping");
        return Ok(());
    }
    let plan = plan(&args)?;
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

    let mut kinds = vec![Kind::Forwarder, Kind::Turnstone];
    if coturn {
        kinds.push(Kind::Coturn);
    }
    let mut servers = Vec::new();
    for &kind in &kinds {
        servers.push(start(kind, &tmp, false)?);
    }
    let idle = idle_cpu(&servers);
    let traffic = run_traffic(&plan, &servers)?;
    println!("compare: load average after traffic {}", load_average());
    let control = run_control(&plan, &servers, &tmp, coturn)?;
    drop(servers);
    let memory = run_memory(&plan, &tmp, coturn)?;
    let load_end = load_average();

    let md = report(
        &plan,
        &kinds,
        &traffic,
        &control,
        &memory,
        (&load_start, &load_end),
        &idle,
    );
    println!("\n{md}");
    std::fs::write(out.join("results.md"), &md)?;
    for svg in plots(&plan, &kinds, &traffic) {
        let path = out.join(&svg.0);
        std::fs::write(&path, svg.1)?;
        println!("compare: wrote {}", path.display());
    }
    println!("compare: wrote {}", out.join("results.md").display());
    Ok(())
}

fn plan(args: &[String]) -> Result<Plan> {
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
    let mut cells = Vec::new();
    let (payloads, allocations): (&[usize], &[usize]) = if full {
        (&[100, 1200], &[10, 100, 1000])
    } else {
        (&[100], &[10])
    };
    for &payload in payloads {
        for &allocations in allocations {
            for rate in [40_000, 0] {
                cells.push(Cell {
                    payload,
                    allocations,
                    rate,
                });
            }
        }
    }
    let only = value("--only").map(String::as_str);
    if !matches!(only, None | Some("traffic" | "control" | "memory")) {
        bail!("--only takes traffic, control or memory");
    }
    let keep = |phase: &str| only.is_none_or(|o| o == phase);
    if !keep("traffic") {
        cells.clear();
    }
    Ok(Plan {
        full,
        rounds,
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::from_millis(500),
        cells,
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

// ---- processes ----------------------------------------------------------------------------

fn out_dir() -> Result<PathBuf> {
    // target/release/turnstone → target/compare
    let bin = Path::new(env!("CARGO_BIN_EXE_turnstone"));
    let target = bin
        .parent()
        .and_then(Path::parent)
        .context("cannot find the target directory")?;
    let out = target.join("compare");
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn coturn_installed() -> bool {
    Command::new("turnserver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts a server pinned to core 0 and waits until it answers. `rest`: coturn in REST API
/// mode (Turnstone always takes both kinds of credentials).
fn start(kind: Kind, tmp: &Path, rest: bool) -> Result<Proc> {
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listen = addr.to_string();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    match kind {
        Kind::Forwarder => {
            cmd.arg(tmp.join("turnstone-forwarder"))
                .args(["--listen", &listen]);
        }
        Kind::Turnstone => {
            let config = tmp.join(format!("turnstone-{port}.toml"));
            std::fs::write(&config, turnstone_config(&listen))?;
            cmd.arg(tmp.join("turnstone"))
                .args(["serve", "--config"])
                .arg(&config);
        }
        Kind::Coturn => {
            // Both coturn instances share one range: the REST one only runs while the other idles.
            let (min, max) = (17_000, 32_000);
            cmd.arg("turnserver").args([
                "-n".to_owned(),
                "--listening-ip=127.0.0.1".into(),
                format!("--listening-port={port}"),
                "--relay-ip=127.0.0.1".into(),
                format!("--min-port={min}"),
                format!("--max-port={max}"),
                format!("--realm={REALM}"),
                "--lt-cred-mech".into(),
                "--allow-loopback-peers".into(),
                "--no-cli".into(),
                "--no-tls".into(),
                "--no-dtls".into(),
                "--relay-threads=1".into(),
                "--user-quota=0".into(),
                "--total-quota=0".into(),
                "--max-bps=0".into(),
                "--bps-capacity=0".into(),
                "--no-stdout-log".into(),
                "--simple-log".into(),
                "--log-file=/dev/null".into(),
            ]);
            if rest {
                cmd.args([
                    "--use-auth-secret".to_owned(),
                    format!("--static-auth-secret={SECRET}"),
                ]);
            } else {
                cmd.arg(format!("--user={USER}:{PASSWORD}"));
            }
            // Keep coturn's pid file and user database out of /var.
            cmd.arg(format!(
                "--pidfile={}",
                tmp.join(format!("coturn-{port}.pid")).display()
            ));
            cmd.arg(format!(
                "--db={}",
                tmp.join(format!("coturn-{port}.sqlite")).display()
            ));
        }
    }
    let log = std::fs::File::create(tmp.join(format!("{}-{port}.log", kind.name())))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", kind.name()))?;
    let proc = Proc { kind, child, addr };
    wait_ready(&proc).with_context(|| format!("{} never answered on {addr}", kind.name()))?;
    Ok(proc)
}

fn turnstone_config(listen: &str) -> String {
    format!(
        r#"[server]
realm = "{REALM}"
workers = 1

[log]
level = "warn"

[[listen]]
protocol = "udp"
address = "{listen}"

[admin]
enabled = false

[relay]
address = "127.0.0.1"
ports = "2000-16999"

[auth]
secrets = ["{SECRET}"]

[[auth.users]]
name = "{USER}"
password = "{PASSWORD}"

[peers]
allow = ["127.0.0.0/8"]

[limits]
requests_per_second_per_ip = 0
"#
    )
}

/// A STUN Binding (TURN servers) or a raw hello (the forwarder), retried for up to 10 s.
fn wait_ready(proc: &Proc) -> Result<()> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let probe = match proc.kind {
        Kind::Forwarder => Hello {
            kind: HelloKind::Hello,
            index: 0,
            addr: "127.0.0.1:9".parse()?,
        }
        .encode()
        .to_vec(),
        _ => {
            let mut buf = [0u8; 64];
            let ty = MessageType::new(Method::BINDING, Class::Request);
            let w = MessageWriter::new(&mut buf, ty, TransactionId([7; 12]))?;
            let n = w.finish();
            buf[..n].to_vec()
        }
    };
    let mut buf = [0u8; 1500];
    for _ in 0..100 {
        socket.send_to(&probe, proc.addr)?;
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            let ok = match proc.kind {
                Kind::Forwarder => Hello::decode(&buf[..n]).is_some(),
                _ => Message::parse(&buf[..n]).is_ok(),
            };
            if ok {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no answer")
}

/// CPU % of each server idling for 2 s, e.g. "forwarder 0.0%, turnstone 0.5%".
fn idle_cpu(servers: &[Proc]) -> String {
    let before: Vec<f64> = servers.iter().map(|s| cpu_secs(s.pid())).collect();
    std::thread::sleep(Duration::from_secs(2));
    let idle: Vec<String> = servers
        .iter()
        .zip(before)
        .map(|(s, b)| format!("{} {:.1}%", s.kind.name(), (cpu_secs(s.pid()) - b) * 50.0))
        .collect();
    println!("compare: idle CPU {}", idle.join(", "));
    idle.join(", ")
}

/// Busy seconds of one core from /proc/stat (user, nice, system, irq, softirq, steal).
fn core_busy(core: usize) -> f64 {
    let prefix = format!("cpu{core} ");
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(&prefix))?.to_owned();
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal
            Some([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum())
        })
        .unwrap_or(0);
    ticks as f64 / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// /proc/PID/stat utime + stime (fields 14 and 15) in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let hz = clock_ticks();
    // After ')' comes field 3 (state), so field 14 is index 11.
    (ticks(11) + ticks(12)) as f64 / hz
}

/// /proc/PID/status VmRSS in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Pins the calling thread (the generator) to `core`; children inherit it until taskset.
fn pin_self_to_core(core: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) affects only this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            println!("compare: cannot pin the generator to core {core}; it floats");
        }
    }
}

/// 10,000 allocations need ~2 descriptors each in coturn and one per socket here.
fn raise_fd_limit() {
    let want = libc::rlimit {
        rlim_cur: 65_536,
        rlim_max: 65_536,
    };
    // SAFETY: plain struct arguments.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            let mut now: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut now);
            now.rlim_cur = now.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &now);
            println!("compare: open files capped at {}", now.rlim_max);
        }
    }
}

// ---- runs ---------------------------------------------------------------------------------

fn static_user() -> Credentials {
    Credentials::Static {
        user: USER.into(),
        password: PASSWORD.into(),
    }
}

fn traffic_run(server: &Proc, cell: &Cell, plan: &Plan) -> Result<Sample> {
    let mut config = LoadConfig::new(server.addr, static_user());
    config.raw = server.kind == Kind::Forwarder;
    config.allocations = cell.allocations;
    config.payload = cell.payload;
    config.rate = cell.rate;
    config.window = (SATURATION_IN_FLIGHT / cell.allocations).max(1);
    config.duration = plan.duration;
    config.warmup = plan.warmup;
    let pid = server.pid();
    let me = std::process::id();
    let mut rss = 0;
    // (time, server CPU, generator CPU, core 0 busy, core 1 busy) at both edges.
    let snap = || {
        (
            Instant::now(),
            cpu_secs(pid),
            cpu_secs(me),
            core_busy(0),
            core_busy(1),
        )
    };
    let (mut a, mut b) = (snap(), snap());
    let r: LoadReport = loadgen::run_with(&config, &mut |stage| match stage {
        Stage::Ready => rss = rss_kib(pid),
        Stage::Measuring => a = snap(),
        Stage::Measured => b = snap(),
    })
    .with_context(|| format!("load against {}", server.kind.name()))?;
    let cpu = b.1 - a.1;
    let wall = b.0.duration_since(a.0).as_secs_f64().max(1e-9);
    let foreign = [
        ((b.3 - a.3) - cpu) / wall,
        ((b.4 - a.4) - (b.2 - a.2)) / wall,
    ]
    .map(|f| f.max(0.0));
    let relayed = 2.0 * r.received as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    Ok(Sample {
        sent_pps: r.sent_per_sec(),
        delivered_pps: r.delivered_per_sec(),
        loss_pct: r.loss_percent(),
        p50_us: us(r.rtt.p50),
        p99_us: us(r.rtt.p99),
        cpu_us_per_packet: if relayed > 0.0 {
            cpu * 1e6 / relayed
        } else {
            f64::NAN
        },
        utilisation: cpu / r.elapsed.as_secs_f64().max(1e-9),
        rss_kib: rss,
        foreign,
    })
}

/// samples[cell][kind] = one sample per round.
type Traffic = Vec<Vec<Vec<Sample>>>;

fn run_traffic(plan: &Plan, servers: &[Proc]) -> Result<Traffic> {
    let mut all: Traffic = vec![vec![Vec::new(); servers.len()]; plan.cells.len()];
    // Reruns of noisy runs, at most a quarter of the planned runs (bounds the total time).
    let mut reruns_left = (plan.rounds * plan.cells.len() * servers.len()).div_ceil(4);
    for round in 0..plan.rounds {
        for (c, cell) in plan.cells.iter().enumerate() {
            // Alternate the order so no server always runs first (or right after another).
            for k in 0..servers.len() {
                let k = (k + round + c) % servers.len();
                let mut s = traffic_run(&servers[k], cell, plan)?;
                for _ in 0..NOISY_RETRIES {
                    if s.noise() <= NOISY || reruns_left == 0 {
                        break;
                    }
                    reruns_left -= 1;
                    println!(
                        "  other processes took {:.0}% / {:.0}% of cores 0 / 1: run again",
                        s.foreign[0] * 100.0,
                        s.foreign[1] * 100.0
                    );
                    let again = traffic_run(&servers[k], cell, plan)?;
                    if again.noise() < s.noise() {
                        s = again;
                    }
                }
                println!(
                    "round {} {:>5} B {:>5} allocs {:>10} {:>9}: {:>8.0} pps, loss {:.3}%, \
                     p50 {:.0} µs, p99 {:.0} µs, {:.2} µs/pkt, CPU {:.0}%, foreign {:.0}%/{:.0}%",
                    round + 1,
                    cell.payload,
                    cell.allocations,
                    cell.load(),
                    servers[k].kind.name(),
                    s.delivered_pps,
                    s.loss_pct,
                    s.p50_us,
                    s.p99_us,
                    s.cpu_us_per_packet,
                    s.utilisation * 100.0,
                    s.foreign[0] * 100.0,
                    s.foreign[1] * 100.0
                );
                all[c][k].push(s);
            }
        }
    }
    Ok(all)
}

struct ControlRow {
    server: &'static str,
    credentials: &'static str,
    us_per_cycle: Vec<f64>,
    cycles_per_sec: Vec<f64>,
    failures: u64,
    /// What the failures were, e.g. "4032 Allocate (last error 437)".
    failure_kinds: String,
}

fn run_control(plan: &Plan, servers: &[Proc], tmp: &Path, coturn: bool) -> Result<Vec<ControlRow>> {
    if plan.churn_cycles == 0 {
        return Ok(Vec::new());
    }
    let rest_coturn = if coturn {
        Some(start(Kind::Coturn, tmp, true)?)
    } else {
        None
    };
    let rest = Credentials::Rest {
        secret: SECRET.into(),
    };
    let mut targets: Vec<(&Proc, &'static str, Credentials)> = Vec::new();
    for s in servers.iter().filter(|s| s.kind == Kind::Turnstone) {
        targets.push((s, "static", static_user()));
        targets.push((s, "REST", rest.clone()));
    }
    for s in servers.iter().filter(|s| s.kind == Kind::Coturn) {
        targets.push((s, "static", static_user()));
    }
    if let Some(s) = &rest_coturn {
        targets.push((s, "REST", rest.clone()));
    }
    let mut rows: Vec<ControlRow> = targets
        .iter()
        .map(|(s, c, _)| ControlRow {
            server: s.kind.name(),
            credentials: c,
            us_per_cycle: Vec::new(),
            cycles_per_sec: Vec::new(),
            failures: 0,
            failure_kinds: String::new(),
        })
        .collect();
    for round in 0..plan.rounds {
        for i in 0..targets.len() {
            let i = (i + round) % targets.len();
            let (server, _, credentials) = &targets[i];
            let mut churn = Churn::new(server.addr, credentials, CHURN_POOL)?;
            let cpu0 = cpu_secs(server.pid());
            let r = churn.run(plan.churn_cycles, Duration::from_secs(30))?;
            let cpu = cpu_secs(server.pid()) - cpu0;
            let row = &mut rows[i];
            let us = cpu * 1e6 / r.cycles.max(1) as f64;
            println!(
                "round {} control {:>9} {:>6}: {:.1} µs CPU per cycle, {:.0} cycles/s, {} stale \
                 nonces; failures: {} challenge, {} Allocate, {} Refresh(0), {} timeouts, last \
                 error {:?}",
                round + 1,
                row.server,
                row.credentials,
                us,
                r.cycles_per_sec(),
                r.stale_nonces,
                r.challenge_failures,
                r.allocate_failures,
                r.delete_failures,
                r.timeouts,
                r.last_error
            );
            if r.failures() > 0 {
                row.failure_kinds = format!(
                    "({} challenge, {} Allocate, {} Refresh(0); last error {})",
                    r.challenge_failures,
                    r.allocate_failures,
                    r.delete_failures,
                    r.last_error
                        .map_or("none: timeouts".into(), |c| c.to_string())
                );
            }
            row.us_per_cycle.push(us);
            row.cycles_per_sec.push(r.cycles_per_sec());
            row.failures += r.failures();
        }
    }
    Ok(rows)
}

struct MemoryRow {
    server: &'static str,
    allocations: usize,
    baseline_kib: u64,
    rss_kib: u64,
}

/// Fresh servers (no allocator memory left over from earlier runs): RSS idle before, then
/// with N allocations holding one permission and one channel each.
fn run_memory(plan: &Plan, tmp: &Path, coturn: bool) -> Result<Vec<MemoryRow>> {
    let mut rows = Vec::new();
    let mut kinds = vec![Kind::Turnstone];
    if plan.memory_counts.is_empty() {
        kinds.clear();
    }
    if coturn && !kinds.is_empty() {
        kinds.push(Kind::Coturn);
    }
    for kind in kinds {
        let server = start(kind, tmp, false)?;
        std::thread::sleep(Duration::from_millis(500));
        let baseline = rss_kib(server.pid());
        for &n in &plan.memory_counts {
            // Let coturn forget the 5-tuples of the previous run (about a second).
            std::thread::sleep(Duration::from_secs(2));
            let mut config = LoadConfig::new(server.addr, static_user());
            config.allocations = n;
            config.rate = 1000;
            config.duration = Duration::from_millis(100);
            let pid = server.pid();
            let (mut rss, mut fds) = (0, 0);
            loadgen::run_with(&config, &mut |stage| {
                if stage == Stage::Ready {
                    std::thread::sleep(Duration::from_millis(500));
                    rss = rss_kib(pid);
                    fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
                }
            })
            .with_context(|| format!("{n} allocations on {}", kind.name()))?;
            println!(
                "memory {:>9}: {n} allocations ({fds} fds), RSS {} KiB over a {} KiB baseline: \
                 {:.0} B each",
                kind.name(),
                rss,
                baseline,
                (rss.saturating_sub(baseline) * 1024) as f64 / n as f64
            );
            rows.push(MemoryRow {
                server: kind.name(),
                allocations: n,
                baseline_kib: baseline,
                rss_kib: rss,
            });
        }
    }
    Ok(rows)
}

// ---- report -------------------------------------------------------------------------------

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

fn med(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
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
fn notes(cell: &Cell, s: &[Sample]) -> String {
    let mut n = Vec::new();
    let sent = med(s, |x| x.sent_pps);
    if cell.rate > 0 && sent < 0.95 * cell.rate as f64 {
        n.push(format!("generator sent only {sent:.0} pps"));
    }
    let util = med(s, |x| x.utilisation);
    if cell.rate == 0 && util < 0.9 {
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
    n.join("; ")
}

fn report(
    plan: &Plan,
    kinds: &[Kind],
    traffic: &Traffic,
    control: &[ControlRow],
    memory: &[MemoryRow],
    (load_start, load_end): (&str, &str),
    idle: &str,
) -> String {
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
        server → client. Server CPU % = CPU seconds per wall second of the measured phase. A run in which other \
         processes took more than {:.0}% of core 0 or 1 (from /proc/stat) is run again, up to {NOISY_RETRIES} \
         times, keeping the quietest.\n",
        NOISY * 100.0
    );
    let _ = writeln!(w, "## Data plane\n");
    let _ = writeln!(
        w,
        "| payload | allocs | load | server | delivered pps | loss % | RTT p50 µs | RTT p99 µs | CPU µs/pkt | server CPU % | RSS MiB | notes |"
    );
    let _ = writeln!(
        w,
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for (c, cell) in plan.cells.iter().enumerate() {
        for (k, kind) in kinds.iter().enumerate() {
            let s = &traffic[c][k];
            let (lo, hi) = range(s, |x| x.cpu_us_per_packet);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.0} | {:.3} | {:.0} | {:.0} | {:.2} ({:.2}–{:.2}) | {:.0} | {:.1} | {} |",
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
                notes(cell, s)
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

// ---- plots --------------------------------------------------------------------------------

/// A figure of a run.
type Metric = fn(&Sample) -> f64;

struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    ys: Vec<f64>,
}

/// CPU per packet and RTT p99 against allocations, one file per metric and load.
fn plots(plan: &Plan, kinds: &[Kind], traffic: &Traffic) -> Vec<(String, String)> {
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
                for (p, &payload) in payloads.iter().enumerate() {
                    let ys = xs
                        .iter()
                        .map(|&x| {
                            plan.cells
                                .iter()
                                .position(|c| {
                                    c.allocations == x
                                        && c.payload == payload
                                        && (c.rate > 0) == fixed
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
