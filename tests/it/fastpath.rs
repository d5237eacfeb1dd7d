//! The kernel fast path (issue 15, item 5) against the real kernel: byte-exact equivalence
//! with the userspace path, expiry, permission removal, policy reload, counters, caps,
//! relay-to-relay, the veth redirect path, and the fallback when loading fails.
//!
//! Every test builds network namespaces of its own (removed on drop), so the host's `lo`
//! never carries a program or a packet of these tests; the servers, clients and peers run on
//! threads that entered them (or, where the server must see the namespace's /sys, in a
//! child process started with `ip netns exec`). Needs root, `ip`, `ethtool`, `setpriv` and
//! a build with the fast path (clang): a missing piece fails the test, it never skips.

mod equivalence;
mod fallback;
mod lifecycle;
mod veth;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use turnstone::config::Config;
use turnstone::core::{Transport, UsageRecord};
use turnstone::io::fastpath::EVENTS;
use turnstone::io::{RunningServer, UsageSink};
use turnstone::proto::{Method, attr};

use crate::client::{Conn, TurnClient, binding_request, parse};
use crate::common::{PASSWORD, REALM, REPLY_TIMEOUT, TEST_TIMEOUT, TempDir, USER, bounded};
use crate::netns::{Netns, inside};

/// Relay ports: below Linux's ephemeral range (32768–60999), so a peer socket bound to port 0
/// never lands on a relay-range port (the policy refuses those at the relay address).
const RELAY_PORTS: &str = "20000-20999";

/// A server's configuration: only what these tests vary, the rest fixed.
#[derive(Clone, Debug)]
pub struct Cfg {
    /// `[relay] fast_path`.
    pub fast_path: &'static str,
    /// UDP listeners.
    pub listen: Vec<String>,
    /// `[relay] address`.
    pub relay: String,
    /// `[relay] address_v6`.
    pub relay_v6: Option<String>,
    /// `[peers] allow`.
    pub allow: Vec<String>,
    /// `[peers] deny`.
    pub deny: Vec<String>,
    /// Lines of `[limits]`.
    pub limits: String,
    /// Worker threads.
    pub workers: usize,
}

impl Cfg {
    /// Both loopback families: listeners on 127.0.0.1 and ::1, relays there, loopback peers
    /// allowed (the built-in deny list refuses them otherwise).
    pub fn loopback(fast_path: &'static str) -> Cfg {
        Cfg {
            fast_path,
            listen: vec!["127.0.0.1:0".into(), "[::1]:0".into()],
            relay: "127.0.0.1".into(),
            relay_v6: Some("::1".into()),
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            deny: Vec::new(),
            limits: String::new(),
            workers: 2,
        }
    }

    /// The same with these `[limits]` lines.
    pub fn with_limits(mut self, limits: &str) -> Cfg {
        self.limits = limits.to_string();
        self
    }

    /// The configuration file's text.
    pub fn toml(&self) -> String {
        let quoted = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let listeners: String = self
            .listen
            .iter()
            .map(|a| format!("[[listen]]\nprotocol = \"udp\"\naddress = \"{a}\"\n\n"))
            .collect();
        let relay_v6 = self
            .relay_v6
            .as_ref()
            .map_or(String::new(), |a| format!("address_v6 = \"{a}\"\n"));
        format!(
            r#"
[server]
realm = "{REALM}"
workers = {workers}

[log]
level = "info"

{listeners}
[admin]
enabled = false

[relay]
address = "{relay}"
{relay_v6}ports = "{RELAY_PORTS}"
fast_path = "{fast_path}"

[auth]
[[auth.users]]
name = "{USER}"
password = "{PASSWORD}"

[peers]
allow = [{allow}]
deny = [{deny}]

[limits]
{limits}
"#,
            workers = self.workers,
            relay = self.relay,
            fast_path = self.fast_path,
            allow = quoted(&self.allow),
            deny = quoted(&self.deny),
            limits = self.limits,
        )
    }
}

/// The program's event counters ([`EVENTS`] order), by name.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Events(pub [u64; EVENTS.len()]);

impl Events {
    /// All zero but the named counts.
    pub fn of(counts: &[(&str, u64)]) -> Events {
        let mut e = Events::default();
        for (name, n) in counts {
            e.0[index(name)] = *n;
        }
        e
    }

    /// One counter.
    pub fn get(&self, name: &str) -> u64 {
        self.0[index(name)]
    }

    /// What grew since `before`.
    pub fn since(&self, before: &Events) -> Events {
        let mut d = Events::default();
        for (i, slot) in d.0.iter_mut().enumerate() {
            *slot = self.0[i] - before.0[i];
        }
        d
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(EVENTS.iter().zip(self.0)).finish()
    }
}

fn index(name: &str) -> usize {
    EVENTS
        .iter()
        .position(|e| *e == name)
        .unwrap_or_else(|| panic!("no fast path event {name}"))
}

/// An in-process server started from a [`Cfg`], with its usage records.
pub struct Server {
    running: Option<RunningServer>,
    usage: Arc<Mutex<Vec<UsageRecord>>>,
    dir: TempDir,
}

impl Server {
    /// Starts it in the calling thread's network namespace (its threads stay there).
    pub fn start(cfg: &Cfg) -> Server {
        let dir = TempDir::new();
        let config = Config::from_toml(&cfg.toml(), &dir.0)
            .unwrap_or_else(|e| panic!("test config refused:\n{e}"));
        let usage = Arc::new(Mutex::new(Vec::new()));
        let records = Arc::clone(&usage);
        let sink: UsageSink = Arc::new(move |r| records.lock().unwrap().push(r));
        let spec = config
            .server_spec(Arc::new(config.credential_store()), sink)
            .unwrap();
        let running = turnstone::io::start(spec)
            .unwrap_or_else(|e| panic!("server with fast_path = {:?}: {e}", cfg.fast_path));
        Server {
            running: Some(running),
            usage,
            dir,
        }
    }

    /// Applies `cfg` as SIGHUP does (listeners stay).
    pub fn reload(&self, cfg: &Cfg) {
        let config = Config::from_toml(&cfg.toml(), &self.dir.0)
            .unwrap_or_else(|e| panic!("reloaded config refused:\n{e}"));
        let noop: UsageSink = Arc::new(|_| {});
        let spec = config
            .server_spec(Arc::new(config.credential_store()), noop)
            .unwrap();
        self.running().reload(spec);
    }

    fn running(&self) -> &RunningServer {
        self.running.as_ref().unwrap()
    }

    /// The UDP listener of this family.
    pub fn udp(&self, v6: bool) -> SocketAddr {
        self.running()
            .bound()
            .iter()
            .find(|(t, a)| *t == Transport::Udp && a.is_ipv6() == v6)
            .map(|(_, a)| *a)
            .unwrap()
    }

    /// The program's counters, `None` when the fast path is inactive.
    pub fn events(&self) -> Option<Events> {
        self.running().fast_path_events().map(Events)
    }

    /// The counters of a server whose fast path must be active.
    pub fn kernel(&self) -> Events {
        self.events().expect("the fast path is not active")
    }

    /// Waits for a usage record matching `pred`.
    pub async fn wait_usage(&self, pred: impl Fn(&UsageRecord) -> bool) -> UsageRecord {
        for _ in 0..150 {
            if let Some(r) = self.usage.lock().unwrap().iter().find(|r| pred(r)) {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "no matching usage record; have {:?}",
            self.usage.lock().unwrap()
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
        }
    }
}

/// Runs `body` on a current-thread runtime, on a thread inside a fresh network namespace
/// whose only interface is its own `lo` (up): servers, clients and peers started there are
/// private to the test.
pub fn on_private_lo<F, Fut>(tag: &str, body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    on_private_lo_with(tag, &[], body);
}

/// [`on_private_lo`] with `addresses` (CIDR) added to that `lo` first.
pub fn on_private_lo_with<F, Fut>(tag: &str, addresses: &[&str], body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let ns = Netns::new(tag);
    for a in addresses {
        ns.ip(&["addr", "add", a, "dev", "lo"]);
    }
    inside(&ns, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(bounded(body()));
    });
}

/// A UDP client of `server`'s listener, from the same family's loopback or `from`.
pub async fn client_at(listener: SocketAddr, from: IpAddr) -> TurnClient {
    let sock = UdpSocket::bind(SocketAddr::new(from, 0)).await.unwrap();
    TurnClient::new(
        Conn::Udp {
            sock,
            server: listener,
        },
        USER,
        PASSWORD,
    )
}

/// The loopback address of a family.
pub fn loopback(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::from(std::net::Ipv4Addr::LOCALHOST)
    }
}

/// A UDP client of `server` over loopback of the family.
pub async fn client(server: &Server, v6: bool) -> TurnClient {
    client_at(server.udp(v6), loopback(v6)).await
}

/// Allocates a UDP relay of the client's family (RFC 8656 §7.2: REQUESTED-ADDRESS-FAMILY
/// for IPv6); returns the relayed address.
pub async fn allocate(c: &mut TurnClient, v6: bool) -> SocketAddr {
    let (relayed, _, _) = c
        .allocate_with(|w| {
            if v6 {
                // RFC 8656 §18.10: family 0x02 in the first byte.
                w.add_u32(attr::REQUESTED_ADDRESS_FAMILY, 0x02 << 24)
                    .unwrap();
            }
        })
        .await;
    assert_eq!(relayed.is_ipv6(), v6, "relay family");
    relayed
}

/// ChannelBind that must succeed.
pub async fn bind(c: &mut TurnClient, channel: u16, peer: SocketAddr) {
    c.request_ok(Method::CHANNEL_BIND, |w| {
        w.add_u32(attr::CHANNEL_NUMBER, u32::from(channel) << 16)
            .unwrap();
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .await;
}

/// CreatePermission that must succeed.
pub async fn permit(c: &mut TurnClient, peer: SocketAddr) {
    c.request_ok(Method::CREATE_PERMISSION, |w| {
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .await;
}

/// A Binding round trip on the client's 5-tuple. The worker that answers it (the same one
/// that served the client's last request: the listener socket is chosen by the 5-tuple) has
/// finished the batch before it, and with it the mirror sync that follows the batch's replies
/// (a reply leaves a few microseconds before the kernel's maps change). After this, the next
/// ChannelData takes the path the last request set up, so kernel counts are exact.
pub async fn settle(c: &mut TurnClient) {
    let (tid, bytes) = binding_request();
    let reply = c.transact(tid, &bytes).await;
    assert_eq!(parse(&reply).transaction_id(), tid);
}

/// The next datagram on `sock` within `wait`: its bytes and source.
pub async fn recv_within(sock: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65536];
    match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            buf.truncate(n);
            Some((buf, from))
        }
        Ok(Err(e)) => panic!("recv_from: {e}"),
        Err(_) => None,
    }
}

/// How long to wait before concluding that nothing arrives (loopback delivers in
/// microseconds; this is many orders of magnitude above that).
pub const SILENCE: Duration = Duration::from_millis(200);

/// Waits for an expected datagram on `sock` (fails after [`REPLY_TIMEOUT`]).
pub async fn recv(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    recv_within(sock, REPLY_TIMEOUT)
        .await
        .unwrap_or_else(|| panic!("nothing arrived at {}", sock.local_addr().unwrap()))
}

/// ChannelData bytes as the RFC frames them over UDP: header, data, then `pad` (RFC 8656
/// §12.5: up to 3 bytes of padding may follow over UDP too, and are ignored).
pub fn channel_data(channel: u16, data: &[u8], pad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + data.len() + pad.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(pad);
    out
}

/// Set in the environment of a child process that runs one of the `#[ignore]`d inner tests.
const INNER: &str = "TURNSTONE_IT_FASTPATH_INNER";

/// Whether this process is such a child (the inner tests do nothing otherwise).
pub fn is_inner() -> bool {
    std::env::var_os(INNER).is_some()
}

/// Runs the `#[ignore]`d test `name` of this test binary in a process of its own inside `ns`
/// (`ip netns exec`, which also mounts the namespace's /sys), with `env`; fails unless it
/// passes within [`TEST_TIMEOUT`] and a bit.
pub fn run_inner(ns: &Netns, name: &str, env: &[(&str, String)]) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run ip netns exec");
    // Readers on their own threads, so a chatty child never blocks on a full pipe.
    let collect = |pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        })
    };
    let stdout = collect(Box::new(child.stdout.take().unwrap()));
    let stderr = collect(Box::new(child.stderr.take().unwrap()));
    let limit = TEST_TIMEOUT + Duration::from_secs(10);
    let mut status = None;
    // Bounded: polls 50 ms apart up to `limit`.
    for _ in 0..limit.as_millis() / 50 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        pause(Duration::from_millis(50));
    }
    if status.is_none() {
        // Our own child, by its PID.
        let _ = child.kill();
        let _ = child.wait();
    }
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    assert!(
        status.is_some_and(|s| s.success()) && stdout.contains("1 passed"),
        "{name} in namespace {} failed ({status:?}):\n{stdout}\n{stderr}",
        ns.name
    );
}

/// Blocks the calling (test) thread; the servers run on their own threads.
#[allow(
    clippy::disallowed_methods,
    reason = "waits for a child process or a lifetime, outside the server"
)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}
