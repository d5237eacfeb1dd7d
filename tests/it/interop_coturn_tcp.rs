//! Interop of RFC 6062 TCP relays with coturn's `turnutils_uclient` (Debian package
//! `coturn`): `-T` (client to client: each client Connects to the other's relayed address
//! and binds a data connection) and `-P` (passive: the tool's peer connects in to the relayed
//! address, the client gets a ConnectionAttempt), over TCP and, with `-S`, TLS (`-T` only,
//! see below). A missing tool fails the test; it is never skipped.
#![allow(
    clippy::disallowed_methods,
    reason = "external processes run in real time: deadlines and polling use the real clock"
)]

use std::time::{Duration, Instant};

use turnstone::core::Transport;

use crate::common::{Options, PASSWORD, TempDir, TestServer, USER};
use crate::interop_coturn::{TOOL_TIMEOUT, Tool, is_refused_legacy_tls_attempt};

/// Messages each client sends, and their size.
const MESSAGES: u64 = 30;
const LENGTH: u64 = 120;
/// Sessions per run (`-m`): with `-T` two clients relaying to each other, each with its own
/// allocation; with `-P` one client and the peer that connects in to its allocation.
const CLIENTS: u64 = 2;

/// `-T` or `-P` over `transport`, with the static user.
fn uclient_tcp_relay(transport: Transport, passive: bool) {
    let server = TestServer::start_with(&Options {
        relay: "tcp = true".into(),
        ..Options::default()
    });
    let dir = TempDir::new();
    let mut args: Vec<String> = vec![if passive { "-P" } else { "-T" }.into()];
    if transport == Transport::Tls {
        args.push("-S".into());
    }
    let port = server.address(transport).port();
    let common = format!(
        "-u {USER} -w {PASSWORD} -n {MESSAGES} -m {CLIENTS} -l {LENGTH} -X -p {port} 127.0.0.1"
    );
    args.extend(common.split_whitespace().map(String::from));
    let label = format!("uclient-{}", if passive { "passive" } else { "tcp-relay" });
    let run = Tool::spawn(&dir.0, &label, "turnutils_uclient", &args);
    let name = run.name.clone();
    let (status, out) = run.wait(Instant::now() + TOOL_TIMEOUT);
    let errors: Vec<&str> = out
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("error"))
        .filter(|l| !(transport == Transport::Tls && is_refused_legacy_tls_attempt(l)))
        .collect();
    assert!(status.success(), "{name} exited with {status}:\n{out}");
    assert!(errors.is_empty(), "{name}: {errors:?}\n{out}");
    let sent = MESSAGES * CLIENTS;
    assert!(
        out.contains(&format!("tot_send_msgs={sent},")),
        "{name}: not every message was sent:\n{out}"
    );
    if passive {
        // The tool's passive peer reads what reaches it as STUN and counts none of it (coturn's
        // own server shows the same 50 %), so only the client side is counted there: all of
        // what the peers sent. What reached the peers is checked in the usage records below.
        assert!(
            out.contains(&format!("tot_recv_msgs={},", sent / 2)),
            "{name}: the clients did not get every message of their peers:\n{out}"
        );
    } else {
        assert!(out.contains("Total lost packets 0"), "{name}:\n{out}");
    }
    // Every byte went through, both ways, on each client's allocation: the allocations that
    // relayed anything (uclient also makes a probe allocation that relays nothing).
    let allocations = if passive { CLIENTS / 2 } else { CLIENTS };
    let deadline = Instant::now() + Duration::from_secs(5);
    let relaying = loop {
        let records: Vec<_> = server
            .usage_records()
            .into_iter()
            .filter(|r| r.tcp_relay && r.traffic.bytes_to_peer + r.traffic.bytes_to_client > 0)
            .collect();
        if records.len() as u64 == allocations || Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(relaying.len() as u64, allocations, "{name}: {relaying:?}");
    for record in relaying {
        assert_eq!(
            (record.traffic.bytes_to_peer, record.traffic.bytes_to_client),
            (MESSAGES * LENGTH, MESSAGES * LENGTH),
            "{name}: {record:?}"
        );
    }
}

#[test]
fn coturn_uclient_relays_over_tcp_relays_client_to_client_without_loss() {
    uclient_tcp_relay(Transport::Tcp, false);
}

#[test]
fn coturn_uclient_relays_over_tcp_relays_client_to_client_over_tls_without_loss() {
    uclient_tcp_relay(Transport::Tls, false);
}

#[test]
fn coturn_uclient_passive_tcp_relays_every_byte_from_a_peer_connecting_in() {
    uclient_tcp_relay(Transport::Tcp, true);
}

// No `-P -S` run: this uclient cannot do it against any server. Its passive peer skips the
// TCP connect (`clnet_connect`: `if (clnet_info->is_peer) ;`) and then starts TLS on the
// unconnected socket, which fails with EPIPE until the tool exits. The passive case over TLS
// is covered by `tcp_relay::a_permitted_peer_connecting_in_over_tls_gets_a_connection_attempt`.
