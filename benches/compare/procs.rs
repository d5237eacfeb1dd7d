//! Server processes: PID guards, start-up and readiness, pinning and descriptor limits.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use turnstone::loadgen::{Hello, HelloKind, LoadTransport};
use turnstone::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId};

use crate::{Kind, PASSWORD, REALM, SECRET, USER};

/// A server process, killed (SIGKILL) and reaped by PID when dropped.
pub(crate) struct Proc {
    pub(crate) kind: Kind,
    child: Child,
    pub(crate) addr: SocketAddr,
    /// Turnstone's admin listener (/metrics).
    admin: Option<SocketAddr>,
    /// Its standard error.
    pub(crate) log: PathBuf,
    /// Its TCP and TLS listeners, when started for the stream cells.
    streams: Option<StreamAddrs>,
}

/// Where a server started by [`start_streams`] takes TCP and TLS clients.
#[derive(Clone, Copy, Debug)]
struct StreamAddrs {
    /// The UDP listener's port, over TCP (coturn serves both on `--listening-port`).
    tcp: SocketAddr,
    tls: SocketAddr,
}

impl Proc {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address clients over `transport` connect to.
    pub(crate) fn addr_for(&self, transport: LoadTransport) -> Result<SocketAddr> {
        match (transport, self.streams) {
            (LoadTransport::Udp, _) => Ok(self.addr),
            (LoadTransport::Tcp, Some(s)) => Ok(s.tcp),
            (LoadTransport::Tls, Some(s)) => Ok(s.tls),
            (_, None) => bail!("{} runs without TCP and TLS listeners", self.kind.name()),
        }
    }

    /// The kernel fast path's event counters from Turnstone's /metrics
    /// (`turnstone_fast_path_events_total{event=...}`), and whether `turnstone_fast_path_active`
    /// is 1. Empty and false for the other servers, and for a Turnstone without the fast path.
    pub(crate) fn fast_path_events(&self) -> Result<FastPathEvents> {
        let Some(admin) = self.admin else {
            return Ok(FastPathEvents::default());
        };
        let text = http_get(admin, "/metrics")?;
        let mut out = FastPathEvents::default();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("turnstone_fast_path_active ") {
                out.active = v.trim() == "1";
            }
            let Some(rest) = line.strip_prefix("turnstone_fast_path_events_total{event=\"") else {
                continue;
            };
            let Some((event, value)) = rest.split_once("\"} ") else {
                continue;
            };
            let n: f64 = value.trim().parse().unwrap_or(0.0);
            match event {
                "relayed_to_peer" => out.to_peer = n as u64,
                "relayed_to_client" => out.to_client = n as u64,
                _ => out.other += n as u64,
            }
        }
        Ok(out)
    }
}

/// What Turnstone's kernel fast path says it did (process-wide totals, published once a
/// second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FastPathEvents {
    pub(crate) active: bool,
    pub(crate) to_peer: u64,
    pub(crate) to_client: u64,
    /// Packets it matched but handed to userspace (stale, no route, too big, ...).
    pub(crate) other: u64,
}

/// One plain HTTP/1.1 GET, the whole body (the admin listener is plain HTTP on loopback).
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn out_dir() -> Result<PathBuf> {
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

/// A port free for UDP and TCP alike: coturn listens on both, and a stream server's TCP
/// listener shares its UDP listener's port.
fn free_port() -> Result<u16> {
    for _ in 0..100 {
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no port free for both UDP and TCP on 127.0.0.1")
}

fn free_tcp_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub(crate) fn coturn_installed() -> bool {
    Command::new("turnserver")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A self-signed certificate and its key (PEM files) for the TLS listeners; the generator
/// accepts any certificate (`tls_insecure`), so the names only need to parse.
pub(crate) struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

pub(crate) fn self_signed(tmp: &Path) -> Result<TlsFiles> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified =
        rcgen::generate_simple_self_signed(names).context("cannot make a certificate")?;
    let files = TlsFiles {
        cert: tmp.join("cert.pem"),
        key: tmp.join("key.pem"),
    };
    std::fs::write(&files.cert, certified.cert.pem())?;
    std::fs::write(&files.key, certified.key_pair.serialize_pem())?;
    Ok(files)
}

/// Starts a server pinned to core 0 and waits until it answers. `rest`: coturn in REST API
/// mode (Turnstone always takes both kinds of credentials).
pub(crate) fn start(kind: Kind, tmp: &Path, rest: bool) -> Result<Proc> {
    launch(kind, tmp, rest, None)
}

/// [`start`] with TCP and TLS listeners too (the UDP one stays: readiness is a UDP Binding).
pub(crate) fn start_streams(kind: Kind, tmp: &Path, tls: &TlsFiles) -> Result<Proc> {
    if kind == Kind::Forwarder {
        bail!("the forwarder takes UDP clients only");
    }
    launch(kind, tmp, false, Some(tls))
}

fn launch(kind: Kind, tmp: &Path, rest: bool, tls: Option<&TlsFiles>) -> Result<Proc> {
    let port = free_port()?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listen = addr.to_string();
    let streams = match tls {
        Some(files) => Some((stream_addrs(port)?, files)),
        None => None,
    };
    let mut admin = None;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]);
    match kind {
        Kind::Forwarder => {
            cmd.arg(tmp.join("turnstone-forwarder"))
                .args(["--listen", &listen]);
        }
        Kind::Turnstone | Kind::TurnstoneKernel => {
            let config = tmp.join(format!("turnstone-{port}.toml"));
            let a = SocketAddr::from((Ipv4Addr::LOCALHOST, free_tcp_port()?));
            admin = Some(a);
            let kernel = kind == Kind::TurnstoneKernel;
            let listeners = streams.map_or(String::new(), |(s, f)| stream_listeners(s, f));
            std::fs::write(&config, turnstone_config(&listen, a, kernel, &listeners))?;
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
            match streams {
                // TCP is on `--listening-port` already.
                Some((s, files)) => cmd.args([
                    format!("--tls-listening-port={}", s.tls.port()),
                    format!("--cert={}", files.cert.display()),
                    format!("--pkey={}", files.key.display()),
                ]),
                None => cmd.arg("--no-tls"),
            };
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
    let log = tmp.join(format!("{}-{port}.log", kind.name()));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", kind.name()))?;
    let proc = Proc {
        kind,
        child,
        addr,
        admin,
        log,
        streams: streams.map(|(s, _)| s),
    };
    let tail = || std::fs::read_to_string(&proc.log).unwrap_or_default();
    wait_ready(&proc).with_context(|| {
        format!(
            "{} never answered on {addr}; its log:\n{}",
            kind.name(),
            tail()
        )
    })?;
    // The userspace kind must not relay in the kernel, the kernel kind must: `fast_path = "on"`
    // already refuses to start without it; this checks that the build and the log agree.
    // The admin listener may come up a moment after the TURN listener answered.
    let mut events = proc.fast_path_events();
    for _ in 0..30 {
        if events.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        events = proc.fast_path_events();
    }
    let mut events = events?;
    if kind == Kind::TurnstoneKernel {
        // Published once a second: give the first publication time to come.
        for _ in 0..30 {
            if events.active {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            events = proc.fast_path_events()?;
        }
    }
    match kind {
        Kind::TurnstoneKernel if !tail().contains("kernel fast path active") || !events.active => {
            bail!(
                "turnstone-kernel started without its kernel fast path (active metric {}); its \
                 log:\n{}",
                events.active,
                tail()
            );
        }
        Kind::Turnstone if events.active => {
            bail!("turnstone (userspace) has the kernel fast path active despite fast_path = off")
        }
        _ => {}
    }
    Ok(proc)
}

/// TCP on the UDP listener's port, TLS on another.
fn stream_addrs(port: u16) -> Result<StreamAddrs> {
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    for _ in 0..100 {
        let tls = free_tcp_port()?;
        if tls != port {
            return Ok(StreamAddrs {
                tcp: at(port),
                tls: at(tls),
            });
        }
    }
    bail!("no second TCP port free on 127.0.0.1")
}

/// Turnstone's `[[listen]]` tables for the stream cells.
fn stream_listeners(addrs: StreamAddrs, files: &TlsFiles) -> String {
    format!(
        r#"
[[listen]]
protocol = "tcp"
address = "{}"

[[listen]]
protocol = "tls"
address = "{}"
certificate = "{}"
private_key = "{}"
"#,
        addrs.tcp,
        addrs.tls,
        files.cert.display(),
        files.key.display()
    )
}

/// Turnstone's configuration. The userspace kind turns the kernel fast path off (the default
/// `auto` would load it as root); the kernel kind requires it (`on`: no start without it),
/// which also means no bandwidth caps (they are enforced in userspace, so `on` refuses them).
/// `listeners`: more `[[listen]]` tables after the UDP one.
fn turnstone_config(listen: &str, admin: SocketAddr, kernel: bool, listeners: &str) -> String {
    let (fast_path, caps) = if kernel {
        ("on", "")
    } else {
        (
            "off",
            "max_allocation_bitrate = \"1Gbps\"\nmax_total_bitrate = \"40Gbps\"\n",
        )
    };
    format!(
        r#"[server]
realm = "{REALM}"
workers = 1

# info: the fast path's start-up line (active, or inactive and why); nothing per packet.
[log]
level = "info"

[[listen]]
protocol = "udp"
address = "{listen}"
{listeners}
[admin]
address = "{admin}"

[relay]
address = "127.0.0.1"
ports = "2000-16999"
fast_path = "{fast_path}"

[auth]
secrets = ["{SECRET}"]

[[auth.users]]
name = "{USER}"
password = "{PASSWORD}"

[peers]
allow = ["127.0.0.0/8"]

# Limits on, as in production, but above what one generator on loopback sends: the request
# limiter (every request of the churn phase comes from 127.0.0.1), a per-allocation and a
# total bandwidth cap (token buckets on every relayed packet; userspace kind only) and a
# per-user quota.
[limits]
requests_per_second_per_ip = 200000
request_burst_per_ip = 200000
max_allocations_per_user = 20000
{caps}"#
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
                return match proc.streams {
                    Some(s) => wait_listening(s.tcp).and_then(|()| wait_listening(s.tls)),
                    None => Ok(()),
                };
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no answer")
}

/// A TCP connect (and close) to a stream listener, retried for up to 10 s.
fn wait_listening(addr: SocketAddr) -> Result<()> {
    for _ in 0..100 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("nothing listens on {addr}")
}

/// Pins the calling thread (the generator) to `core`; children inherit it until taskset.
pub(crate) fn pin_self_to_core(core: usize) {
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
pub(crate) fn raise_fd_limit() {
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
