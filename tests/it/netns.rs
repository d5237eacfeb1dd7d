//! The peer policy against a real host (issue 13, items 3 and 4), inside network namespaces
//! the tests create and remove: a second interface address, a wildcard listener, a UDP service
//! on loopback inside the relay port range, and a host with no default route. Nothing leaves
//! the namespace. Needs root (CAP_SYS_ADMIN) and `ip`; a missing tool fails the test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use turnstone::config::Config;
use turnstone::io::UsageSink;
use turnstone::proto::{ChannelData, Class, Method, attr, error_code};

use crate::client::{Conn, TurnClient, build, channel_data, error_of, parse};
use crate::common::{PASSWORD, REALM, USER};

/// A network namespace, removed on drop (also when the test fails).
pub(crate) struct Netns {
    /// Its name under /var/run/netns.
    pub name: String,
}

impl Netns {
    /// Creates `ts-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ts-{tag}-{}-{n}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args…`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// `ip netns exec NAME cmd args…`, which must succeed.
    pub fn exec(&self, cmd: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.name.as_str(), cmd];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Its file, for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `cmd args…`, which must succeed.
pub(crate) fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread (only) into the network namespace at `path` (`setns(2)`); its
/// sockets, and threads it spawns afterwards, live there. Test-only: the server never changes
/// namespace, so this stays out of the library.
pub(crate) fn enter(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)?;
    // SAFETY: a valid open descriptor and a namespace type constant; affects this thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `body` on a thread inside `ns` (its sockets and the server's threads live there).
pub(crate) fn inside<F>(ns: &Netns, body: F)
where
    F: FnOnce() + Send + 'static,
{
    let path = ns.path();
    let thread = std::thread::spawn(move || {
        enter(&path).expect("setns into the test namespace");
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

const SECOND_ADDRESS: &str = "9.9.9.9";
const SERVICE: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50005);

fn serve_toml() -> String {
    format!(
        r#"
[server]
realm = "{REALM}"
workers = 1

[[listen]]
protocol = "udp"
address = "0.0.0.0:3478"

[admin]
enabled = false

[relay]
address = "127.0.0.1"
ports = "50000-50009"

[auth]
secrets = ["netns-secret"]

[[auth.users]]
name = "{USER}"
password = "{PASSWORD}"
"#
    )
}

async fn client(server: SocketAddr) -> TurnClient {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    TurnClient::new(Conn::Udp { sock, server }, USER, PASSWORD)
}

async fn channel_bind(c: &mut TurnClient, number: u16, peer: SocketAddr) -> Vec<u8> {
    c.request(Method::CHANNEL_BIND, |w| {
        w.add_u32(attr::CHANNEL_NUMBER, u32::from(number) << 16)
            .unwrap();
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .await
}

async fn permit(c: &mut TurnClient, peer: SocketAddr) -> Vec<u8> {
    c.request(Method::CREATE_PERMISSION, |w| {
        w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
    })
    .await
}

fn assert_forbidden(reply: &[u8], what: &str) {
    let msg = parse(reply);
    assert_eq!(msg.class(), Class::Error, "{what} must be refused");
    assert_eq!(error_of(&msg), error_code::FORBIDDEN, "{what}");
}

#[test]
fn host_addresses_and_loopback_services_are_refused_while_relay_to_relay_works() {
    let ns = Netns::new("peers");
    // A second address of the host (on lo: the kernel may lack the dummy link type).
    ns.ip(&["addr", "add", &format!("{SECOND_ADDRESS}/32"), "dev", "lo"]);
    inside(&ns, || {
        // A local UDP service inside the relay port range (the pool must skip its port).
        let service = StdUdpSocket::bind(SERVICE).unwrap();
        service.set_nonblocking(true).unwrap();
        let dir = std::env::temp_dir();
        let config = Config::from_toml(&serve_toml(), &dir).unwrap();
        let noop: UsageSink = Arc::new(|_| {});
        let spec = config
            .server_spec(Arc::new(config.credential_store()), noop)
            .unwrap();
        let server = turnstone::io::start(spec).unwrap();
        let listener = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 3478);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(crate::common::bounded(async {
            let mut alice = client(listener).await;
            let (relay_a, _, _) = alice.allocate().await;
            assert_eq!(relay_a.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert_ne!(
                relay_a.port(),
                SERVICE.port(),
                "the service holds that port"
            );

            // Item 3: the second interface address reaches the wildcard listener.
            let second: IpAddr = SECOND_ADDRESS.parse().unwrap();
            let nested = channel_bind(&mut alice, 0x4000, SocketAddr::new(second, 3478)).await;
            assert_forbidden(
                &nested,
                "the wildcard listener via a second interface address",
            );
            let other_port = channel_bind(&mut alice, 0x4000, SocketAddr::new(second, 53)).await;
            assert_forbidden(&other_port, "a host address at any port");
            let by_ip = permit(&mut alice, SocketAddr::new(second, 0)).await;
            assert_forbidden(&by_ip, "a host address by IP");

            // Item 4: our loopback relay address is no way into a loopback service.
            let service_bind = channel_bind(&mut alice, 0x4001, SERVICE).await;
            assert_forbidden(&service_bind, "a loopback service at a relay-range port");
            let (_, send) = build(Method::SEND, Class::Indication, None, |w| {
                w.add_xor_address(attr::XOR_PEER_ADDRESS, SERVICE).unwrap();
                w.add(attr::DATA, b"leak").unwrap();
            });
            alice.conn.send(&send).await;

            // Relay-to-relay between two allocations keeps working.
            let mut bob = client(listener).await;
            let (relay_b, _, _) = bob.allocate().await;
            let bound = channel_bind(&mut alice, 0x4002, relay_b).await;
            assert_eq!(parse(&bound).class(), Class::Success, "relay-to-relay bind");
            let permitted = permit(&mut bob, relay_a).await;
            assert_eq!(parse(&permitted).class(), Class::Success);
            alice
                .conn
                .send(&channel_data(0x4002, b"hi bob", false))
                .await;
            let got = bob.conn.recv().await;
            let data = parse(&got);
            assert_eq!(
                (data.method(), data.class()),
                (Method::DATA, Class::Indication)
            );
            assert_eq!(data.get(attr::DATA).unwrap(), b"hi bob");
            // Bob answers through his permission; alice gets ChannelData.
            let (_, back) = build(Method::SEND, Class::Indication, None, |w| {
                w.add_xor_address(attr::XOR_PEER_ADDRESS, relay_a).unwrap();
                w.add(attr::DATA, b"hi alice").unwrap();
            });
            bob.conn.send(&back).await;
            let reply = alice.conn.recv().await;
            let cd = ChannelData::parse(&reply).unwrap();
            assert_eq!((cd.channel(), cd.data()), (0x4002, &b"hi alice"[..]));
        }));
        let mut buf = [0u8; 64];
        assert!(
            service.recv_from(&mut buf).is_err(),
            "the loopback service must receive nothing"
        );
        server.shutdown();
    });
}

#[test]
fn without_a_default_route_or_relay_address_the_server_refuses_to_start() {
    let ns = Netns::new("noroute");
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            env!("CARGO_BIN_EXE_turnstone"),
            "serve",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: 400 polls 50 ms apart (20 s).
    let mut status = None;
    for _ in 0..400 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        pause(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server started (it used to relay on 127.0.0.1 here)");
    }
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.unwrap().success());
    assert!(stderr.contains("relay.address"), "{stderr}");
}

#[allow(
    clippy::disallowed_methods,
    reason = "waits for a child process, outside the server"
)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}
