//! The `turnstone` binary itself: `check-config`, `credentials`, and `serve` with SIGHUP reload
//! and SIGTERM drain. Loopback only; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turnstone::auth::{PasswordAlgorithm, long_term_key, rest_password, rest_username};
use turnstone::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId, attr};

/// One wait for a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_turnstone"));
    cmd.env("NO_COLOR", "1")
        .env_remove("TURNSTONE_CONFIG")
        .env_remove("TURNSTONE_LOG")
        .env_remove("TURNSTONE_SECRET")
        .env_remove("TURNSTONE_EXTERNAL_ADDRESS");
    cmd
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

/// Blocks the (test) thread: real time passes for the child process.
#[allow(
    clippy::disallowed_methods,
    reason = "the binary runs in real time; a test thread may block"
)]
fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The monotonic clock, through the one module allowed to read it.
fn now() -> Instant {
    turnstone::io::clock::now().mono
}

/// Polls `check` every 50 ms until it holds or `within` passes.
fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = now() + within;
    loop {
        if check() {
            return true;
        }
        if now() >= deadline {
            return false;
        }
        pause(50);
    }
}

/// A unique, self-deleting temporary directory.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("turnstone-cli-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a self-signed certificate and its key at `cert` and `key`.
fn write_cert(cert: &Path, key: &Path) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    for (path, pem) in [
        (cert, certified.cert.pem()),
        (key, certified.key_pair.serialize_pem()),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, pem).unwrap();
    }
}

/// The quoted value of an uncommented `key = "value"` line.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line
        .trim()
        .strip_prefix(key)?
        .trim_start()
        .strip_prefix('=')?;
    Some(rest.trim().trim_matches('"'))
}

#[test]
fn check_config_accepts_every_shipped_configuration_file() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let dir = TempDir::new();
    let mut checked = Vec::new();
    let mut with_tls = 0;
    for entry in std::fs::read_dir(&conf).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let mut text = String::new();
        let mut certificates = 0;
        // TLS files must load too: generate them where the copy expects them; absolute paths
        // (/etc/turnstone/…) are pointed into the temporary directory instead.
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let file = ["certificate", "private_key"]
                .iter()
                .find_map(|k| value_of(line, k).map(|v| (*k, v)));
            match file {
                Some((key, value)) => {
                    certificates += 1;
                    let relative = if Path::new(value).is_absolute() {
                        format!("generated/{key}.pem")
                    } else {
                        value.to_string()
                    };
                    text.push_str(&format!("{key} = \"{relative}\"\n"));
                }
                None => {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
        let copy_dir = dir.0.join(name.trim_end_matches(".toml"));
        std::fs::create_dir_all(&copy_dir).unwrap();
        // Certificate and key pairs in file order.
        let pairs: Vec<(String, String)> = {
            let certs: Vec<&str> = text
                .lines()
                .filter_map(|l| value_of(l, "certificate"))
                .collect();
            let keys: Vec<&str> = text
                .lines()
                .filter_map(|l| value_of(l, "private_key"))
                .collect();
            assert_eq!(certs.len(), keys.len(), "{name}");
            certs
                .into_iter()
                .zip(keys)
                .map(|(c, k)| (c.to_string(), k.to_string()))
                .collect()
        };
        for (cert, key) in &pairs {
            write_cert(&copy_dir.join(cert), &copy_dir.join(key));
        }
        if certificates > 0 {
            with_tls += 1;
        }
        let copy = copy_dir.join(&name);
        std::fs::write(&copy, &text).unwrap();
        let out = run(&["check-config", copy.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(": ok"),
            "check-config {name} ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        checked.push(name);
    }
    for expected in ["default.toml", "full.toml", "tls.toml"] {
        assert!(checked.iter().any(|c| c == expected), "{checked:?}");
    }
    assert!(
        with_tls >= 2,
        "full.toml and tls.toml reference certificates"
    );
}

#[test]
fn check_config_reports_every_problem_with_its_key_path_and_fails() {
    let dir = TempDir::new();
    let file = dir.0.join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nrealm = \"x\"\ncolour = \"blue\"\ndrain_grace = \"soon\"\n\n\
         [limits]\nmax_allocationz = 3\n",
    )
    .unwrap();
    let out = run(&["check-config", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let problems: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(problems.len(), 3, "{stdout}");
    for (line, key) in problems.iter().zip([
        "server.colour",
        "server.drain_grace",
        "limits.max_allocationz",
    ]) {
        assert!(line.contains(&format!("bad.toml: {key}: ")), "{line}");
    }
    assert!(problems[0].contains("unknown key"), "{}", problems[0]);
    assert!(problems[1].contains("duration"), "{}", problems[1]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("3 problem"));
}

#[test]
fn credentials_prints_a_rest_credential_and_ice_servers() {
    let out = run(&[
        "credentials",
        "--secret",
        "s",
        "--user",
        "u",
        "--ttl",
        "1h",
        "--uri",
        "turn:h:3478",
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .trim()
            .to_string()
    };
    let username = field("username");
    let password = field("password");
    let (expiry, user) = username.split_once(':').unwrap();
    assert_eq!(user, "u");
    let expiry: u64 = expiry.parse().unwrap();
    let unix = turnstone::io::clock::now().unix_secs;
    assert!((unix + 3590..=unix + 3610).contains(&expiry), "{username}");
    assert_eq!(password, rest_password(b"s", &username));
    let ice = format!(
        r#"{{"iceServers":[{{"urls":["turn:h:3478"],"username":"{username}","credential":"{password}"}}]}}"#
    );
    assert!(stdout.lines().any(|l| l == ice), "{stdout}");
}

#[test]
fn credentials_help_does_not_print_the_secret_from_the_environment() {
    let secret = "do-not-print-this-secret-4f1c";
    let out = bin()
        .args(["credentials", "--help"])
        .env("TURNSTONE_SECRET", secret)
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("TURNSTONE_SECRET"), "{help}");
    assert!(!help.contains(secret), "{help}");
}

#[test]
fn credentials_refuses_a_ttl_past_the_end_of_unix_time() {
    let out = run(&[
        "credentials",
        "--secret",
        "s",
        "--ttl",
        "18446744073709551615s",
    ]);
    assert_eq!(out.status.code(), Some(1), "an error, not a panic");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--ttl 18446744073709551615s is too long"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

// ---- serve ----

/// A loopback port that was free a moment ago (the binary cannot report port 0 back).
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// A fresh random transaction id.
fn tid() -> TransactionId {
    let mut tid = [0u8; 12];
    getrandom::fill(&mut tid).unwrap();
    TransactionId(tid)
}

/// A request with `attrs`, MESSAGE-INTEGRITY when `key` is given, and FINGERPRINT.
fn request(
    method: Method,
    key: Option<&[u8]>,
    attrs: impl FnOnce(&mut MessageWriter<'_>),
) -> (TransactionId, Vec<u8>) {
    let mut buf = vec![0u8; 1024];
    let tid = tid();
    let mut w =
        MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
    attrs(&mut w);
    if let Some(key) = key {
        w.add_integrity(key).unwrap();
    }
    w.add_fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    (tid, buf)
}

/// Sends `bytes` and returns the response to `tid`, or `None` after [`REPLY_TIMEOUT`].
fn transact(
    sock: &UdpSocket,
    server: SocketAddr,
    tid: TransactionId,
    bytes: &[u8],
) -> Option<Vec<u8>> {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    sock.send_to(bytes, server).unwrap();
    let deadline = now() + REPLY_TIMEOUT;
    let mut buf = [0u8; 2048];
    while now() < deadline {
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from == server
            && Message::parse(&buf[..n]).is_ok_and(|m| m.transaction_id() == tid)
        {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Whether a Binding request is answered with our address.
fn binding_answered(server: SocketAddr) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tid, bytes) = request(Method::BINDING, None, |_| {});
    transact(&sock, server, tid, &bytes).is_some_and(|reply| {
        let msg = Message::parse(&reply).unwrap();
        msg.class() == Class::Success
            && msg.xor_address(attr::XOR_MAPPED_ADDRESS).unwrap().unwrap()
                == sock.local_addr().unwrap()
    })
}

/// An Allocate as `user`: the socket (keeping the allocation alive) and the final code.
fn allocate(server: SocketAddr, user: &str, password: &str) -> (UdpSocket, u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let transport = |w: &mut MessageWriter<'_>| {
        w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
    };
    let (tid, bytes) = request(Method::ALLOCATE, None, transport);
    let reply = transact(&sock, server, tid, &bytes).expect("no 401 challenge");
    let challenge = Message::parse(&reply).unwrap();
    let realm = challenge.realm().unwrap().unwrap().to_vec();
    let nonce = challenge.nonce().unwrap().unwrap().to_vec();
    let key = long_term_key(
        PasswordAlgorithm::Md5,
        user.as_bytes(),
        &realm,
        password.as_bytes(),
    );
    let (tid, bytes) = request(Method::ALLOCATE, Some(key.as_bytes()), |w| {
        transport(w);
        w.add(attr::USERNAME, user.as_bytes()).unwrap();
        w.add(attr::REALM, &realm).unwrap();
        w.add(attr::NONCE, &nonce).unwrap();
    });
    let reply = transact(&sock, server, tid, &bytes).expect("no Allocate response");
    let msg = Message::parse(&reply).unwrap();
    let code = match msg.class() {
        Class::Success => 200,
        _ => msg.error_code().unwrap().unwrap().code,
    };
    (sock, code)
}

/// A REST credential from `secret`, valid for an hour.
fn credential(secret: &str, user: &str) -> (String, String) {
    let username = rest_username(turnstone::io::clock::now().unix_secs + 3600, Some(user));
    let password = rest_password(secret.as_bytes(), &username);
    (username, password)
}

/// `GET path` on the admin listener: the status code, or `None` when it is not listening.
fn http_status(admin: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

/// The spawned binary; killed (by its own PID) if the test ends early.
struct Server {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn spawn(config: &Path) -> Server {
        let mut child = bin()
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
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
        Server { child, stderr }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) only sends a signal, to the child this test spawned.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the log to show `text`.
    fn wait_log(&self, text: &str) {
        assert!(
            wait_until(REPLY_TIMEOUT, || self.log().contains(text)),
            "no {text:?} in the log:\n{}",
            self.log()
        );
    }

    /// The exit status, if the process ends within `within`.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(within, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve_config(udp: u16, admin: u16, secret: &str) -> String {
    format!(
        r#"
[server]
realm = "turnstone.cli"
workers = 1
drain_grace = "1s"

[log]
level = "info"

[[listen]]
protocol = "udp"
address = "127.0.0.1:{udp}"

[admin]
address = "127.0.0.1:{admin}"

[relay]
address = "127.0.0.1"

[auth]
secrets = ["{secret}"]

[peers]
allow = ["127.0.0.0/8"]

[usage]
output = "log"
"#
    )
}

#[test]
fn serve_answers_reloads_on_sighup_and_drains_then_exits_on_sigterm() {
    let dir = TempDir::new();
    let config = dir.0.join("turnstone.toml");
    let (udp, admin) = (free_port(true), free_port(false));
    let server_addr = SocketAddr::from(([127, 0, 0, 1], udp));
    let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin));
    std::fs::write(&config, serve_config(udp, admin, "cli-secret-a")).unwrap();
    let mut server = Server::spawn(&config);

    assert!(
        wait_until(Duration::from_secs(5), || http_status(
            admin_addr, "/readyz"
        ) == Some(200)),
        "/readyz never answered 200; log:\n{}",
        server.log()
    );
    assert!(binding_answered(server_addr), "no Binding response");
    assert_eq!(http_status(admin_addr, "/healthz"), Some(200));

    // A broken file: refused, the running configuration stays.
    std::fs::write(&config, "[server]\nrealm = \n").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("reload refused");
    assert!(
        binding_answered(server_addr),
        "no Binding after a refused reload"
    );
    let (user, password) = credential("cli-secret-a", "a");
    assert_eq!(allocate(server_addr, &user, &password).1, 200);
    assert_eq!(http_status(admin_addr, "/readyz"), Some(200));

    // A new secret: applied to new allocations.
    std::fs::write(&config, serve_config(udp, admin, "cli-secret-b")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_log("configuration reloaded");
    let (user, password) = credential("cli-secret-b", "b");
    let mut kept = None;
    assert!(
        wait_until(REPLY_TIMEOUT, || {
            let (sock, code) = allocate(server_addr, &user, &password);
            kept = Some(sock);
            code == 200
        }),
        "a credential from the new secret was refused; log:\n{}",
        server.log()
    );
    let (user, password) = credential("cli-secret-a", "a2");
    assert_eq!(allocate(server_addr, &user, &password).1, 401);

    // SIGTERM: not ready at once, allocations relay for drain_grace, then exit 0.
    let term = now();
    server.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_millis(900), || http_status(
            admin_addr, "/readyz"
        ) == Some(503)),
        "/readyz did not turn 503 while draining; log:\n{}",
        server.log()
    );
    let status = server.wait_exit(Duration::from_secs(3));
    let took = now().saturating_duration_since(term);
    assert_eq!(
        status.map(|s| s.code()),
        Some(Some(0)),
        "exit after {took:?}; log:\n{}",
        server.log()
    );
    assert!(
        took >= Duration::from_millis(900),
        "drained for {took:?} only"
    );
    let log = server.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("\"end_reason\":\"shutdown\""), "{log}");
    drop(kept);
}
