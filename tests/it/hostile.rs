//! Hostile clients (issue 13, "Done when"): while one source holds as many TCP connections as
//! it can, floods junk requests and rotates IPv6 source addresses through a /64, clients from
//! other addresses still allocate over UDP, TCP and TLS and relay without loss.
//!
//! Each test runs in a private network namespace (`unshare(CLONE_NEWNET)` on a thread of its
//! own, so root is needed): the attacker owns 127.0.0.66 and fd00:66::/64 there, the victims
//! use 127.0.0.1, and nothing reaches the host's network. The namespace has no name and
//! disappears with the last thread and socket in it, on success or failure alike.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use turnstone::core::Transport;
use turnstone::proto::{ChannelData, Class, Method, attr};

use crate::client::{Conn, TurnClient, binding_request, build, channel_data};
use crate::common::{EchoPeer, Options, PASSWORD, TestServer, USER, bounded};

/// The attacker's IPv4 source.
const ATTACKER_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 66);
/// The attacker's /64; it rotates through the first [`V6_ADDRESSES`] addresses of it.
const ATTACKER_V6: u128 = 0xfd00_0066_0000_0000_0000_0000_0000_0000;
const V6_ADDRESSES: u128 = 256;
/// Junk datagrams per flood per tick (one tick is [`TICK`]): about 10 000 a second each.
const JUNK_PER_TICK: u64 = 50;
const TICK: Duration = Duration::from_millis(5);
/// TCP/TLS connections the attacker tries to keep open, and its connection attempts in all.
const HOLD: usize = 128;
const MAX_CONNECTS: usize = 5000;
/// How long the attack runs before the victims start, and at most in all.
const WARM_UP: Duration = Duration::from_secs(1);
const ATTACK_AT_MOST: Duration = Duration::from_secs(25);
/// ChannelData round trips each victim makes.
const ECHOES: usize = 20;
/// The request limits: modest, so the test is fast; the rate is per source (an IPv4 address
/// or an IPv6 /64), and the table is small enough for 256 rotating addresses to overflow it
/// if each counted on its own.
const RATE: u64 = 20;
const BURST: u64 = 40;
const REQUEST_LIMITS: &str = "requests_per_second_per_ip = 20\nrequest_burst_per_ip = 40\n\
                              max_tracked_ips = 64\nipv6_prefix_length = 64\n\
                              tcp_handshake_timeout = \"2s\"\nmax_tcp_connections = 32\n";
/// The per-IP TCP connection cap (issue 13, item on TCP limits; another branch).
const TCP_PER_IP: &str = "max_tcp_connections_per_ip = 4\n";

#[test]
fn a_junk_flood_rotating_through_an_ipv6_prefix_does_not_stop_others_from_relaying() {
    in_private_netns(|| run(REQUEST_LIMITS.to_string(), false));
}

#[test]
fn clients_allocate_and_relay_over_udp_tcp_and_tls_while_one_source_holds_connections_and_floods() {
    in_private_netns(|| run(format!("{REQUEST_LIMITS}{TCP_PER_IP}"), true));
}

/// Starts the server, the attack, then the victims; checks the victims and the attacker's share.
fn run(limits: String, hold_connections: bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = TestServer::start_with(&Options::limits(&limits));
    let peer = EchoPeer::start();
    let attack = Attack::start(&server, hold_connections);
    pause(WARM_UP);
    let started = turnstone::io::clock::now().mono;
    let relayed = runtime.block_on(bounded(async {
        tokio::join!(
            victim(&server, Transport::Udp, peer.addr),
            victim(&server, Transport::Tcp, peer.addr),
            victim(&server, Transport::Tls, peer.addr),
        )
    }));
    let report = attack.stop();
    eprintln!("attack: {report:?}");
    let secs = turnstone::io::clock::now()
        .mono
        .saturating_duration_since(started)
        + WARM_UP;
    assert_eq!(
        relayed,
        (ECHOES, ECHOES, ECHOES),
        "echoes over UDP, TCP, TLS; {report:?}"
    );
    assert!(
        report.v4_sent > 10 * BURST,
        "the IPv4 flood was too weak: {report:?}"
    );
    if hold_connections {
        assert!(report.held_at_most > 0, "no connection held: {report:?}");
    }
    // The whole /64 is one source: it got at most its own burst plus its rate.
    let allowed = BURST + RATE * (secs.as_secs() + 2);
    assert!(
        report.v6_sent > 10 * allowed,
        "the flood was too weak to prove anything: {report:?}"
    );
    assert!(
        report.v6_answered <= allowed,
        "{report:?}: more than {allowed} answered in {secs:?}"
    );
}

/// Allocates over `transport` from 127.0.0.1, binds a channel to `peer` and makes [`ECHOES`]
/// round trips; returns how many came back intact.
async fn victim(server: &TestServer, transport: Transport, peer: SocketAddr) -> usize {
    const CHANNEL: u16 = 0x4001;
    let conn = Conn::connect(server, transport).await;
    let mut client = TurnClient::new(conn, USER, PASSWORD);
    client.allocate().await;
    client
        .request_ok(Method::CHANNEL_BIND, |w| {
            w.add_u32(attr::CHANNEL_NUMBER, u32::from(CHANNEL) << 16)
                .unwrap();
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer).unwrap();
        })
        .await;
    let mut intact = 0;
    for i in 0..ECHOES {
        let payload = format!("{transport:?} echo {i}").into_bytes();
        let pad = client.conn.is_stream();
        client
            .conn
            .send(&channel_data(CHANNEL, &payload, pad))
            .await;
        let Some(reply) = client.conn.recv_within(Duration::from_secs(3)).await else {
            break;
        };
        if ChannelData::parse(&reply).is_ok_and(|cd| cd.data() == &payload[..]) {
            intact += 1;
        }
    }
    intact
}

/// What the attacker saw.
#[derive(Debug, Default)]
struct Report {
    v4_sent: u64,
    v6_sent: u64,
    v6_answered: u64,
    held_at_most: usize,
}

/// The attacker's threads: a junk flood from 127.0.0.66, one rotating through fd00:66::/64,
/// and (optionally) one holding TCP and TLS connections from 127.0.0.66.
struct Attack {
    stop: Arc<AtomicBool>,
    v4: JoinHandle<u64>,
    v6: JoinHandle<(u64, u64)>,
    hold: Option<JoinHandle<usize>>,
}

impl Attack {
    fn start(server: &TestServer, hold_connections: bool) -> Attack {
        let stop = Arc::new(AtomicBool::new(false));
        let v4 = {
            let (stop, to) = (Arc::clone(&stop), server.udp());
            std::thread::spawn(move || flood(&[bind_udp(ATTACKER_V4.into())], to, &stop))
        };
        let v6 = {
            let (stop, to) = (Arc::clone(&stop), server.udp6());
            std::thread::spawn(move || {
                let socks: Vec<UdpSocket> = (1..=V6_ADDRESSES)
                    .map(|i| bind_udp(Ipv6Addr::from(ATTACKER_V6 + i).into()))
                    .collect();
                let sent = flood(&socks, to, &stop);
                (sent, socks.iter().map(drain).sum())
            })
        };
        let hold = hold_connections.then(|| {
            let (stop, tcp, tls) = (Arc::clone(&stop), server.tcp(), server.tls());
            std::thread::spawn(move || hold(&[tcp, tls], &stop))
        });
        Attack { stop, v4, v6, hold }
    }

    fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let (v6_sent, v6_answered) = self.v6.join().unwrap();
        Report {
            v4_sent: self.v4.join().unwrap(),
            v6_sent,
            v6_answered,
            held_at_most: self.hold.map_or(0, |h| h.join().unwrap()),
        }
    }
}

/// Sends junk requests from `socks` in turn, [`JUNK_PER_TICK`] a tick, until stopped.
fn flood(socks: &[UdpSocket], to: SocketAddr, stop: &AtomicBool) -> u64 {
    let mut sent = 0u64;
    for _ in 0..ticks() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        for _ in 0..JUNK_PER_TICK {
            let sock = &socks[(sent % socks.len() as u64) as usize];
            if sock.send_to(&junk(sent), to).is_ok() {
                sent += 1;
            }
        }
        pause(TICK);
    }
    sent
}

/// Keeps up to [`HOLD`] connections open to `targets` from 127.0.0.66, reopening the ones the
/// server closes; plain TCP ones send one Binding request so they are past their first message.
/// Returns the most it held at once.
fn hold(targets: &[SocketAddr], stop: &AtomicBool) -> usize {
    let mut held: Vec<TcpStream> = Vec::new();
    let (mut attempts, mut most) = (0, 0);
    for _ in 0..ticks() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        held.retain(is_open);
        while held.len() < HOLD && attempts < MAX_CONNECTS {
            let target = targets[attempts % targets.len()];
            attempts += 1;
            let Some(mut stream) = connect_from(ATTACKER_V4.into(), target) else {
                break;
            };
            if attempts % targets.len() == 1 {
                let _ = std::io::Write::write_all(&mut stream, &binding_request().1);
            }
            held.push(stream);
        }
        most = most.max(held.len());
        pause(TICK * 4);
    }
    most
}

/// A request the server must look at before refusing it: Binding requests, Allocates without
/// credentials and requests with an unknown comprehension-required attribute, in turn.
fn junk(n: u64) -> Vec<u8> {
    match n % 3 {
        0 => binding_request().1,
        1 => {
            build(Method::ALLOCATE, Class::Request, None, |w| {
                w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
            })
            .1
        }
        _ => {
            build(Method::REFRESH, Class::Request, None, |w| {
                w.add(0x7f00, b"junk").unwrap();
            })
            .1
        }
    }
}

fn bind_udp(ip: IpAddr) -> UdpSocket {
    let sock = UdpSocket::bind(SocketAddr::new(ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind the attacker to {ip}: {e}"));
    sock.set_nonblocking(true).unwrap();
    sock
}

/// A TCP connection from `ip` (any port), or `None` when the server's backlog is full.
fn connect_from(ip: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::new(ip, 0).into()).ok()?;
    sock.connect_timeout(&to.into(), Duration::from_millis(200))
        .ok()?;
    sock.set_nonblocking(true).ok()?;
    Some(sock.into())
}

/// Whether the server still has `stream` open (reading without blocking: EOF or an error
/// means closed; data from the server is drained).
fn is_open(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 2048];
    loop {
        match std::io::Read::read(&mut &*stream, &mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }
}

/// Datagrams waiting on a non-blocking socket.
fn drain(sock: &UdpSocket) -> u64 {
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while sock.recv_from(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// The attack loops' bound: [`ATTACK_AT_MOST`] in [`TICK`]s.
fn ticks() -> u128 {
    ATTACK_AT_MOST.as_millis() / TICK.as_millis()
}

/// Blocks the calling (attacker or test) thread; the server runs on its own threads.
#[allow(
    clippy::disallowed_methods,
    reason = "the attacker paces itself in real time on its own thread"
)]
fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// Runs `body` on a thread in a fresh network namespace with loopback up and the attacker's
/// IPv6 addresses on it. Threads `body` starts (server workers, attackers) inherit the
/// namespace; it is freed when they have all ended.
fn in_private_netns(body: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET only moves the calling thread into a new
        // network namespace; it reads and writes no memory of ours.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) needs root (CAP_SYS_ADMIN): {}",
            std::io::Error::last_os_error()
        );
        let mut script = String::from("link set lo up\n");
        for i in 1..=V6_ADDRESSES {
            let addr = Ipv6Addr::from(ATTACKER_V6 + i);
            script.push_str(&format!("addr add {addr}/64 dev lo nodad\n"));
        }
        run_ip_batch(&script);
        body();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// `ip -batch -` with `script` on standard input (in the calling thread's namespace).
fn run_ip_batch(script: &str) {
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("iproute2's `ip` is needed for the hostile-client test");
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, script.as_bytes()).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success(), "ip -batch failed");
}
