//! When the program cannot be loaded, the `turnstone` binary says why: under "auto" it
//! starts, logs "kernel fast path inactive: <why>" and relays in userspace; under "on" it
//! exits non-zero with the reason. Two ways to fail, each in a private namespace:
//!
//! - no privilege: the binary runs as nobody with every capability dropped (`setpriv`);
//! - the kernel refuses the program: a seccomp filter makes `bpf(BPF_PROG_LOAD)` fail with
//!   EINVAL, what the verifier's refusal looks like to the loader (the verifier itself
//!   cannot be made to refuse a sound program from outside). How the loader's errors are
//!   sorted into these reasons is unit-tested in src/io/fastpath/mod.rs.
//!
//! First, as root, "on" starts with the fast path active: the failures below are the
//! privilege's and the filter's doing, not the build's.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{Cfg, allocate, bind, channel_data, client_at, pause, recv};
use crate::common::{REPLY_TIMEOUT, TempDir, bounded};
use crate::netns::{Netns, inside};

/// The UDP listener of the binary inside its namespace (nothing else listens there).
const LISTENER: &str = "127.0.0.1:3478";

/// nobody, no supplementary groups, no capabilities to keep, inherit or regain.
const UNPRIVILEGED: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
    "--bounding-set=-all",
    "--no-new-privs",
    "--",
];

/// How the binary is started.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    Root,
    Unprivileged,
    ProgramRefused,
}

/// The binary, run in a namespace; killed (by its own PID) if the test ends early.
struct Binary {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Binary {
    fn spawn(ns: &Netns, config: &std::path::Path, how: How) -> Binary {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]);
        if how == How::Unprivileged {
            cmd.args(UNPRIVILEGED);
        }
        cmd.arg(env!("CARGO_BIN_EXE_turnstone"))
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("NO_COLOR", "1")
            .env_remove("TURNSTONE_CONFIG")
            .env_remove("TURNSTONE_LOG")
            .env_remove("TURNSTONE_SECRET")
            .env_remove("TURNSTONE_EXTERNAL_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if how == How::ProgramRefused {
            let filter = refuse_program_loads();
            // SAFETY: between fork and exec the closure only makes two prctl(2) calls on
            // memory prepared before the fork (no allocation, no lock).
            unsafe {
                cmd.pre_exec(move || install(&filter));
            }
        }
        let mut child = cmd.spawn().expect("cannot run ip netns exec");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Binary { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) for the log to show `text`.
    fn wait_log(&mut self, text: &str) {
        for _ in 0..100 {
            if self.log().contains(text) {
                return;
            }
            if self.child.try_wait().unwrap().is_some() {
                break;
            }
            pause(Duration::from_millis(50));
        }
        panic!("no {text:?} in the log:\n{}", self.log());
    }

    /// The exit status, if it ends within `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        for _ in 0..within.as_millis() / 50 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            pause(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `AUDIT_ARCH_*` of this build's target: the filter applies to its system call numbers only.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// `BPF_PROG_LOAD`, the bpf(2) command (include/uapi/linux/bpf.h).
const BPF_PROG_LOAD: u32 = 5;

/// A classic BPF seccomp filter: `bpf(BPF_PROG_LOAD, …)` fails with EINVAL, every other
/// system call (and every other bpf(2) command: maps, BTF) goes through.
fn refuse_program_loads() -> Vec<libc::sock_filter> {
    let op = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    let ret = libc::BPF_RET | libc::BPF_K;
    // struct seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low half on a little
    // endian machine, which both architectures above are).
    vec![
        op(load, 4, 0, 0),
        op(jeq, AUDIT_ARCH, 1, 0),
        op(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
        op(load, 0, 0, 0),
        op(jeq, libc::SYS_bpf as u32, 0, 3),
        op(load, 16, 0, 0),
        op(jeq, BPF_PROG_LOAD, 0, 1),
        op(ret, libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32, 0, 0),
        op(ret, libc::SECCOMP_RET_ALLOW, 0, 0),
    ]
}

/// Installs `filter` on the calling (child) process; it is inherited across exec.
fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let program = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: plain prctl(2) calls; `program` points at `filter`, alive for the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The binary's configuration with `fast_path`, written into `dir` (readable by nobody).
fn config(dir: &TempDir, fast_path: &'static str) -> PathBuf {
    let cfg = Cfg {
        listen: vec![LISTENER.into()],
        relay_v6: None,
        allow: vec!["127.0.0.0/8".into()],
        workers: 1,
        ..Cfg::loopback(fast_path)
    };
    let path = dir.0.join(format!("{fast_path}.toml"));
    std::fs::write(&path, cfg.toml()).unwrap();
    path
}

/// Allocates through the binary in `ns`, binds a channel and relays ChannelData both ways.
fn relays(ns: &Netns) {
    inside(ns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(bounded(async {
            let listener: SocketAddr = LISTENER.parse().unwrap();
            let mut c = client_at(listener, listener.ip()).await;
            let relayed = allocate(&mut c, false).await;
            let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            bind(&mut c, 0x4321, peer.local_addr().unwrap()).await;
            c.conn
                .send(&channel_data(0x4321, b"to the peer", &[0, 0, 0]))
                .await;
            assert_eq!(recv(&peer).await, (b"to the peer".to_vec(), relayed));
            peer.send_to(b"to the client", relayed).await.unwrap();
            let got = c.conn.recv_within(REPLY_TIMEOUT).await;
            assert_eq!(got, Some(channel_data(0x4321, b"to the client", &[])));
        }));
    });
}

/// Runs the three cases of one failure: root "on" (the control), then `how` under "auto"
/// (starts, logs `reason`, relays) and under "on" (exits non-zero naming `reason`).
fn fallback(tag: &str, how: How, reason: &str) {
    let ns = Netns::new(tag);
    let dir = TempDir::new();
    let (auto, on) = (config(&dir, "auto"), config(&dir, "on"));

    let mut root = Binary::spawn(&ns, &on, How::Root);
    root.wait_log("kernel fast path active");
    root.wait_log("listening on udp");
    drop(root);

    let mut server = Binary::spawn(&ns, &auto, how);
    server.wait_log(&format!("kernel fast path inactive: {reason}"));
    server.wait_log("listening on udp");
    relays(&ns);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server ended:\n{}",
        server.log()
    );
    drop(server);

    let mut refused = Binary::spawn(&ns, &on, how);
    let status = refused.wait_exit(Duration::from_secs(10));
    let log = refused.log();
    assert!(
        status.is_some_and(|s| !s.success()),
        "fast_path = \"on\" must refuse to start ({status:?}):\n{log}"
    );
    assert!(
        log.contains("fast_path = \"on\", but the kernel fast path cannot be used")
            && log.contains(reason),
        "{log}"
    );
    assert!(!log.contains("listening on"), "{log}");
}

#[test]
fn without_privilege_auto_relays_in_userspace_and_on_refuses_to_start() {
    fallback(
        "fp-nopriv",
        How::Unprivileged,
        "no privilege to load eBPF programs",
    );
}

#[test]
fn when_the_kernel_refuses_the_program_auto_relays_in_userspace_and_on_refuses_to_start() {
    fallback(
        "fp-refused",
        How::ProgramRefused,
        "the kernel refused the program",
    );
}
