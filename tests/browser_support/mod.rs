//! What the headless-browser tests share: where Node.js, Chromium and the scripts are, a
//! temporary directory, running a child process with a deadline, a test certificate, JSON
//! string literals and a private network namespace. Included by `tests/browser_e2e.rs` and
//! `tests/selftest_e2e.rs` (`mod browser_support;`); each uses most of it.
#![allow(dead_code, reason = "each test binary uses a different part of it")]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use turnstone::io::clock;

pub mod netns;

const NPM_TIMEOUT: Duration = Duration::from_secs(180);

/// `tests/browser`: the Node scripts and their `node_modules`.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("browser")
}

/// Chromium: `/usr/bin/chromium`, or env `CHROMIUM`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new directory, distinct for every call in this process.
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "turnstone-browser-e2e-{}-{}-{}",
            std::process::id(),
            clock::now().unix_secs,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits for `child` up to `timeout`, killing it (by its own pid) when it overruns.
// Polling a child process in real time (no worker involved): sleep is fine here.
#[allow(clippy::disallowed_methods)]
pub fn wait_with_timeout(mut child: Child, timeout: Duration, what: &str) -> Output {
    let start = clock::now().mono;
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&err_thread.join().unwrap()).into_owned();
            panic!("{what} did not finish within {timeout:?}; stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_thread.join().unwrap(),
        stderr: err_thread.join().unwrap(),
    }
}

pub fn spawn(cmd: &mut Command, what: &str) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {what}: {e} (the browser test needs Node.js 20+ and npm on PATH)")
    })
}

/// Fails (never skips) when Node.js or Chromium is missing; installs node_modules when absent.
pub fn check_prerequisites() {
    let node = wait_with_timeout(
        spawn(Command::new("node").arg("--version"), "node"),
        Duration::from_secs(20),
        "node",
    );
    assert!(
        node.status.success(),
        "`node --version` failed: {}",
        String::from_utf8_lossy(&node.stderr)
    );
    let chromium = chromium_path();
    assert!(
        chromium.is_file(),
        "Chromium not found at {} (install the Debian package `chromium`, or set CHROMIUM)",
        chromium.display()
    );
    let dir = browser_dir();
    if !dir
        .join("node_modules")
        .join("playwright-core")
        .join("package.json")
        .is_file()
    {
        eprintln!("installing {}/node_modules with npm ci", dir.display());
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        let out = wait_with_timeout(spawn(&mut cmd, "npm"), NPM_TIMEOUT, "npm ci");
        assert!(
            out.status.success(),
            "npm ci in {} failed:\n{}\n{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A self-signed certificate for "localhost" and 127.0.0.1, as PEM files in `dir`.
pub fn write_certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// A JSON string literal (the values here are ASCII, but quote and escape properly anyway).
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
