//! The probe's first steps, in order: resolve, connect (and TLS), Binding; then the TURN steps
//! and NAT discovery.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::conn::{Conn, ConnError, udp_socket, unspecified};
use super::report::{Step, StepReport};
use super::tls::TlsClient;
use super::uri::Transport;
use super::verdict::{Context, Request, Verdict, bug, error_verdict};
use super::verdict_net::{Silence, binding_unanswered, connect_failed, format_timeout, millis};
use super::wire::{Req, random_tid, request};
use super::{ProbeConfig, nat, turn};

/// What the Binding step learnt.
pub(super) struct Bound {
    /// The client's address as the server sees it.
    pub(super) reflexive: SocketAddr,
    /// RFC 5780 OTHER-ADDRESS, if the server offers discovery.
    pub(super) other: Option<SocketAddr>,
}

/// Runs every step it can, appending one report per step.
pub(super) async fn run(config: &ProbeConfig, steps: &mut Vec<StepReport>) {
    let Some(server) = resolve(config, steps).await else {
        return;
    };
    let Some(mut conn) = connect(config, server, steps).await else {
        return;
    };
    let Some(bound) = binding(config, server, &mut conn, steps).await else {
        return;
    };
    if config.target.turn {
        let second = async || connect(config, server, &mut Vec::new()).await;
        turn::run(config, server, &mut conn, bound.reflexive, steps, second).await;
    }
    drop(conn);
    if config.nat {
        steps.push(nat::discover(config, server, bound.other).await);
    }
}

/// Step 1: the host name to an address (IPv4 preferred: most relays are IPv4).
async fn resolve(config: &ProbeConfig, steps: &mut Vec<StepReport>) -> Option<SocketAddr> {
    let host = config.target.host.clone();
    let port = config.target.port;
    if let Ok(ip) = host.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, port);
        steps.push(StepReport::pass(
            Step::Resolve,
            format!("{addr} (an IP address: no DNS lookup)"),
        ));
        return Some(addr);
    }
    let lookup = tokio::task::spawn_blocking(move || {
        (host.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
    });
    let name = &config.target.host;
    let addrs = match tokio::time::timeout(config.timeout, lookup).await {
        Ok(Ok(Ok(addrs))) => addrs,
        Ok(Ok(Err(e))) => {
            steps.push(StepReport::fail(
                Step::Resolve,
                format!("cannot resolve {name}: {e}"),
                "check the host name's spelling and its DNS records (A or AAAA), and this machine's DNS",
            ));
            return None;
        }
        Ok(Err(_)) | Err(_) => {
            steps.push(StepReport::fail(
                Step::Resolve,
                format!(
                    "DNS did not answer for {name} within {}",
                    format_timeout(config.timeout)
                ),
                "check this machine's DNS resolver, or probe the server's IP address",
            ));
            return None;
        }
    };
    let Some(&addr) = addrs.iter().find(|a| a.is_ipv4()).or_else(|| addrs.first()) else {
        steps.push(StepReport::fail(
            Step::Resolve,
            format!("{name} has no address"),
            "add an A (or AAAA) record for the host",
        ));
        return None;
    };
    let more = match addrs.len() - 1 {
        0 => String::new(),
        n => format!(" ({n} more address(es); probing this one)"),
    };
    steps.push(StepReport::pass(
        Step::Resolve,
        format!("{name} → {addr}{more}"),
    ));
    Some(addr)
}

/// Step 2: a connected UDP socket, or a TCP connection and the TLS handshake.
async fn connect(
    config: &ProbeConfig,
    server: SocketAddr,
    steps: &mut Vec<StepReport>,
) -> Option<Conn> {
    let fail = |steps: &mut Vec<StepReport>, v: Verdict| {
        steps.push(StepReport::fail(Step::Connect, v.what, v.todo));
        None
    };
    if config.target.transport == Transport::Udp {
        let socket = match udp_socket(server).await {
            Ok(s) => s,
            Err(e) => return fail(steps, connect_failed(server, config.timeout, &e)),
        };
        let local = socket.local_addr().unwrap_or_else(|_| unspecified(server));
        steps.push(StepReport::pass(
            Step::Connect,
            format!("UDP socket {local} → {server} (UDP has no handshake: the Binding step tests reachability)"),
        ));
        return Some(Conn::udp(socket, local));
    }
    let started = Instant::now();
    let tcp = match tokio::time::timeout(config.timeout, TcpStream::connect(server)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return fail(steps, connect_failed(server, config.timeout, &e)),
        Err(_) => {
            let e = std::io::ErrorKind::TimedOut.into();
            return fail(steps, connect_failed(server, config.timeout, &e));
        }
    };
    let local = tcp.local_addr().unwrap_or_else(|_| unspecified(server));
    steps.push(StepReport::pass(
        Step::Connect,
        format!(
            "TCP connection {local} → {server} in {}",
            millis(started.elapsed())
        ),
    ));
    if config.target.transport == Transport::Tcp {
        return Some(Conn::stream(Box::new(tcp), local));
    }
    let client = match TlsClient::new(config.insecure, config.ca_file.as_deref()) {
        Ok(c) => c,
        Err(v) => {
            steps.push(StepReport::fail(Step::Tls, v.what, v.todo));
            return None;
        }
    };
    match client
        .handshake(tcp, &config.target.host, config.timeout)
        .await
    {
        Ok(done) => {
            let check = match (&done.unverified, config.insecure) {
                (Some(v), _) => format!("certificate NOT verified (--insecure); a real check refuses it: {}", v.what),
                (None, true) => "certificate accepted unverified (--insecure), though it would also pass a real check".to_owned(),
                (None, false) => format!("certificate valid for {} ({})", config.target.host, client.roots),
            };
            steps.push(StepReport::pass(
                Step::Tls,
                format!("{}; {check}", done.parameters),
            ));
            Some(Conn::stream(Box::new(done.stream), local))
        }
        Err(v) => {
            steps.push(StepReport::fail(Step::Tls, v.what, v.todo));
            None
        }
    }
}

/// Step 3: Binding, the reflexive address, and whether a NAT is in between.
async fn binding(
    config: &ProbeConfig,
    server: SocketAddr,
    conn: &mut Conn,
    steps: &mut Vec<StepReport>,
) -> Option<Bound> {
    let tid = random_tid();
    let fail = |steps: &mut Vec<StepReport>, v: Verdict| {
        steps.push(StepReport::fail(Step::Binding, v.what, v.todo));
        None
    };
    let req = match request(Req::BINDING, None, tid) {
        Ok(r) => r,
        Err(e) => return fail(steps, bug(e)),
    };
    let started = Instant::now();
    let transport = config.target.transport;
    let reply = match conn.transact(&req, tid, None, config.timeout).await {
        Ok(r) => r,
        Err(e) => {
            let silence = match e {
                ConnError::Refused => Silence::PortUnreachable,
                ConnError::Closed => Silence::Closed,
                ConnError::Timeout => Silence::Timeout,
                ConnError::Framing(_) => {
                    return fail(steps, Verdict {
                        expected: false,
                        what: format!("the server answered with bytes that are not STUN ({e})"),
                        todo: "another protocol runs on this port; check the port (for TLS ports use turns:)".to_owned(),
                    });
                }
                ConnError::Io(ref io) => {
                    return fail(steps, connect_failed(server, config.timeout, io));
                }
            };
            return fail(
                steps,
                binding_unanswered(transport, server, config.timeout, silence),
            );
        }
    };
    let rtt = started.elapsed();
    if !reply.success {
        let ctx = Context {
            request: Request::Binding,
            username: None,
            minted: false,
            unix_now: config.unix_now,
            peer: None,
            alternate: reply.alternate,
        };
        return fail(steps, error_verdict(&ctx, reply.code, &reply.reason));
    }
    let Some(reflexive) = reply.mapped else {
        return fail(
            steps,
            Verdict {
                expected: false,
                what: "the Binding response carries no XOR-MAPPED-ADDRESS".to_owned(),
                todo: "the server is broken or not a STUN server".to_owned(),
            },
        );
    };
    let software = reply
        .software
        .as_deref()
        .map(|s| format!("; server software: {s}"))
        .unwrap_or_default();
    steps.push(StepReport::pass(
        Step::Binding,
        format!(
            "reflexive address {reflexive} in {}: {}{software}",
            millis(rtt),
            nat_words(conn.local, reflexive)
        ),
    ));
    Some(Bound {
        reflexive,
        other: reply.other,
    })
}

/// Whether the reflexive address shows a NAT.
fn nat_words(local: SocketAddr, reflexive: SocketAddr) -> String {
    if local == reflexive {
        "the same as the local address: no NAT between you and the server".to_owned()
    } else if local.ip() == reflexive.ip() {
        format!("the local address is {local}: a firewall or NAT rewrites ports")
    } else {
        format!("the local address is {local}: a NAT is between you and the server")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_is_inferred_from_the_reflexive_address() {
        let local: SocketAddr = "192.168.1.5:5000".parse().unwrap();
        assert!(nat_words(local, local).contains("no NAT"));
        let same_ip: SocketAddr = "192.168.1.5:6000".parse().unwrap();
        assert!(nat_words(local, same_ip).contains("rewrites ports"));
        let public: SocketAddr = "203.0.113.9:6000".parse().unwrap();
        assert!(nat_words(local, public).contains("a NAT is between"));
    }
}
