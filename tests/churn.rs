//! Memory under churn (the most reported coturn problem): 100,000 authenticated Allocate +
//! Refresh(0) cycles from many source ports, then a Binding flood from 20,000 different source
//! addresses, must leave RSS within 10% of its baseline. A binary of its own, so no other test
//! shares the process whose memory is measured.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use turnstone::auth::{PasswordAlgorithm, long_term_key};
use turnstone::config::Config;
use turnstone::core::Transport;
use turnstone::proto::{Class, Message, MessageType, MessageWriter, Method, TransactionId, attr};

const REALM: &str = "churn.test";
const SOCKETS: usize = 256;
const CYCLES: usize = 100_000;
const WARMUP: usize = 20_000;
const FLOOD_SOURCES: u32 = 20_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

struct Client {
    sockets: Vec<UdpSocket>,
    server: SocketAddr,
    /// One nonce per socket: a nonce is bound to the client's IP address and port
    /// (RFC 8489 §9.2.4).
    nonces: Vec<Vec<u8>>,
    next_tid: u64,
}

impl Client {
    fn tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        let mut id = [0u8; 12];
        id[4..].copy_from_slice(&self.next_tid.to_be_bytes());
        TransactionId(id)
    }

    fn request(&mut self, socket: usize, method: Method, lifetime: Option<u32>) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let tid = self.tid();
        let mut w =
            MessageWriter::new(&mut buf, MessageType::new(method, Class::Request), tid).unwrap();
        if method == Method::ALLOCATE {
            w.add_u32(attr::REQUESTED_TRANSPORT, 17 << 24).unwrap();
        }
        if let Some(l) = lifetime {
            w.add_u32(attr::LIFETIME, l).unwrap();
        }
        if let Some(nonce) = self.nonces.get(socket).filter(|n| !n.is_empty()) {
            w.add(attr::USERNAME, b"churn").unwrap();
            w.add(attr::REALM, REALM.as_bytes()).unwrap();
            w.add(attr::NONCE, nonce).unwrap();
            let key = long_term_key(PasswordAlgorithm::Md5, b"churn", REALM.as_bytes(), b"churn");
            w.add_integrity(key.as_bytes()).unwrap();
        }
        w.add_fingerprint().unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    /// One request per socket, then every answer; returns how many were not successes.
    fn round(&mut self, method: Method, lifetime: Option<u32>) -> usize {
        let mut pending = HashMap::new();
        for i in 0..self.sockets.len() {
            let req = self.request(i, method, lifetime);
            self.sockets[i].send_to(&req, self.server).unwrap();
            pending.insert(i, req);
        }
        let mut failures = 0;
        let mut buf = [0u8; 1500];
        for (i, _) in pending {
            match self.sockets[i].recv(&mut buf) {
                Ok(n) => {
                    let ok = Message::parse(&buf[..n]).is_ok_and(|m| m.class() == Class::Success);
                    failures += usize::from(!ok);
                }
                Err(_) => failures += 1,
            }
        }
        failures
    }

    fn cycles(&mut self, count: usize) -> usize {
        let mut failures = 0;
        for _ in 0..count / self.sockets.len() {
            failures += self.round(Method::ALLOCATE, None);
            failures += self.round(Method::REFRESH, Some(0));
        }
        failures
    }
}

#[test]
#[allow(
    clippy::disallowed_methods,
    reason = "waits in real time for the server's housekeeping"
)]
fn rss_returns_to_baseline_after_allocation_churn_and_a_binding_flood() {
    let text = format!(
        r#"
        [server]
        realm = "{REALM}"
        workers = 2
        [[listen]]
        protocol = "udp"
        address = "127.0.0.1:0"
        [admin]
        enabled = false
        [relay]
        address = "127.0.0.1"
        ports = "20000-39999"
        [[auth.users]]
        name = "churn"
        password = "churn"
        [limits]
        # High enough for the churn from one IP; the flood's 20,000 sources are tracked.
        requests_per_second_per_ip = 1000000
        request_burst_per_ip = 1000000
        # 256 concurrent allocations of one user.
        max_allocations_per_user = 0
        "#
    );
    let dir = std::env::temp_dir();
    let config = Config::from_toml(&text, &dir).unwrap();
    let spec = config
        .server_spec(Arc::new(config.credential_store()), Arc::new(|_| {}))
        .unwrap();
    let server = turnstone::io::start(spec).unwrap();
    let address = server.address(Transport::Udp).unwrap();

    let sockets = (0..SOCKETS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        })
        .collect();
    let mut client = Client {
        sockets,
        server: address,
        nonces: vec![Vec::new(); SOCKETS],
        next_tid: 0,
    };
    // The 401 challenge's nonce is bound to the client's IP and port: one per socket.
    for i in 0..SOCKETS {
        let challenge = client.request(i, Method::ALLOCATE, None);
        client.sockets[i].send_to(&challenge, address).unwrap();
        let mut buf = [0u8; 1500];
        let n = client.sockets[i].recv(&mut buf).unwrap();
        client.nonces[i] = Message::parse(&buf[..n])
            .unwrap()
            .nonce()
            .unwrap()
            .unwrap()
            .to_vec();
    }

    assert_eq!(client.cycles(WARMUP), 0, "warm-up cycles failed");
    let baseline = rss_bytes();

    assert_eq!(client.cycles(CYCLES), 0, "churn cycles failed");
    assert_eq!(server.allocations(), 0, "allocations leaked");
    let after_churn = rss_bytes();

    // Bindings from many loopback source addresses: the admission limiter tracks each.
    let binding = {
        let mut b = vec![0u8; 64];
        let w = MessageWriter::new(
            &mut b,
            MessageType::new(Method::BINDING, Class::Request),
            TransactionId([1; 12]),
        )
        .unwrap();
        let n = w.finish();
        b.truncate(n);
        b
    };
    for i in 0..FLOOD_SOURCES {
        let ip = Ipv4Addr::from(0x7F01_0000 + i);
        if let Ok(s) = UdpSocket::bind((ip, 0)) {
            let _ = s.send_to(&binding, address);
        }
    }
    // Limiter housekeeping runs every second, heap trimming every 5 s.
    std::thread::sleep(Duration::from_millis(6500));
    let after = rss_bytes();
    server.shutdown();
    println!(
        "RSS baseline {} KiB, after churn {} KiB, after the flood {} KiB",
        baseline / 1024,
        after_churn / 1024,
        after / 1024
    );
    assert!(
        after as f64 <= baseline as f64 * 1.10,
        "RSS grew from {} KiB to {} KiB",
        baseline / 1024,
        after / 1024
    );
}
