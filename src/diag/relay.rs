//! The relay round trip: the echo socket's hello through the relay, ChannelBind, then
//! ChannelData to the echo socket and back (RFC 8656 §11, §12), with round-trip times.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use super::conn::ConnError;
use super::report::{Step, StepReport};
use super::session::{Session, unanswered};
use super::verdict::Request;
use super::verdict_net::{Icmp, Unreached, millis, relay_unreached};
use super::wire::{CHANNEL, Req, channel_data, channel_data_frame, data_indication};

/// What the echo socket sends until the relay delivers something back to it.
const HELLO: &[u8] = b"turnstone-probe hello";
/// ChannelData round trips measured.
const PINGS: u32 = 3;

impl Session<'_> {
    /// The echo socket's hello through the relay, ChannelBind, then [`PINGS`] round trips.
    pub(super) async fn round_trips(
        &mut self,
        server: SocketAddr,
        relayed: SocketAddr,
        peer_ip: IpAddr,
        echo_local: SocketAddr,
        heard: &Heard,
    ) -> StepReport {
        let timeout = self.config.timeout;
        let deadline = Instant::now() + timeout;
        let peer = loop {
            let msg = match timeout_at(deadline, self.conn.recv()).await {
                Ok(Ok(msg)) => msg,
                Ok(Err(e)) => {
                    let v = unanswered(Request::CreatePermission, &e, timeout);
                    return StepReport::fail(Step::Relay, v.what, v.todo);
                }
                Err(_) => {
                    let v = relay_unreached(&Unreached {
                        server,
                        relayed,
                        echo_local,
                        peer_ip,
                        timeout,
                        heard: heard.get(),
                    });
                    return StepReport::fail(Step::Relay, v.what, v.todo);
                }
            };
            if let Some((peer, HELLO)) = data_indication(&msg) {
                break peer;
            }
        };
        let bind = Req::ChannelBind {
            channel: CHANNEL,
            peer,
        };
        match self
            .transact(bind, Request::ChannelBind, Some(peer.ip()))
            .await
        {
            Ok(_) => {}
            // The relay passed the echo socket's hello, but the policy refuses it as a channel
            // peer (e.g. the server's own address outside its relay ports).
            Err(v) if v.expected => {
                return StepReport::skipped(Step::Relay, format!("skipped: {}", v.what));
            }
            Err(v) => {
                return StepReport::fail(
                    Step::Relay,
                    format!("ChannelBind to {peer} failed: {}", v.what),
                    v.todo,
                );
            }
        }
        let mut rtts = Vec::new();
        for i in 0..PINGS {
            match self.ping(i, timeout / PINGS).await {
                Ok(Some(rtt)) => rtts.push(rtt),
                Ok(None) => {}
                Err(e) => {
                    let v = unanswered(Request::ChannelBind, &e, timeout);
                    return StepReport::fail(Step::Relay, v.what, v.todo);
                }
            }
        }
        let Some(rtt) = rtt_summary(&rtts) else {
            return StepReport::fail(
                Step::Relay,
                format!(
                    "data from the echo socket reached you through the relay, but none of {PINGS} ChannelData messages to {peer} came back"
                ),
                "the server drops ChannelData from this client or cannot send from its relay to this machine; check its log and egress firewall",
            );
        };
        StepReport::pass(
            Step::Relay,
            format!(
                "{}/{PINGS} ChannelData round trips via {relayed} to the echo socket {peer} and back: {rtt}",
                rtts.len(),
            ),
        )
    }

    /// Sends ping `i` on the channel and waits up to `wait` for it to come back.
    async fn ping(&mut self, i: u32, wait: Duration) -> Result<Option<Duration>, ConnError> {
        let payload = format!("turnstone-probe ping {i}");
        let Some(frame) = channel_data_frame(CHANNEL, payload.as_bytes(), self.conn.is_stream())
        else {
            return Ok(None);
        };
        let sent = Instant::now();
        self.conn.send(&frame).await?;
        loop {
            let Ok(msg) = timeout_at(sent + wait, self.conn.recv()).await else {
                return Ok(None);
            };
            let msg = msg?;
            let data = channel_data(&msg)
                .filter(|&(ch, _)| ch == CHANNEL)
                .map(|(_, d)| d)
                .or_else(|| data_indication(&msg).map(|(_, d)| d));
            if data == Some(payload.as_bytes()) {
                return Ok(Some(sent.elapsed()));
            }
        }
    }
}

impl Session<'_> {
    /// Relay to relay: this session's channel carries ping `i` to the other allocation,
    /// which sends it back on its own channel; the round-trip time, or `None` on loss.
    pub(super) async fn ping_via(
        &mut self,
        other: &mut Session<'_>,
        i: u32,
        wait: Duration,
    ) -> Result<Option<Duration>, ConnError> {
        let payload = format!("turnstone-probe relay ping {i}");
        let Some(frame) = channel_data_frame(CHANNEL, payload.as_bytes(), self.conn.is_stream())
        else {
            return Ok(None);
        };
        let sent = Instant::now();
        self.conn.send(&frame).await?;
        let deadline = sent + wait;
        loop {
            let Ok(msg) = timeout_at(deadline, other.conn.recv()).await else {
                return Ok(None);
            };
            let msg = msg?;
            if channel_data(&msg) == Some((CHANNEL, payload.as_bytes())) {
                break;
            }
        }
        let Some(back) = channel_data_frame(CHANNEL, payload.as_bytes(), other.conn.is_stream())
        else {
            return Ok(None);
        };
        other.conn.send(&back).await?;
        loop {
            let Ok(msg) = timeout_at(deadline, self.conn.recv()).await else {
                return Ok(None);
            };
            if channel_data(&msg?) == Some((CHANNEL, payload.as_bytes())) {
                return Ok(Some(sent.elapsed()));
            }
        }
    }

    /// [`PINGS`] relay-to-relay round trips (channels already bound both ways).
    pub(super) async fn relay_round_trips(
        &mut self,
        other: &mut Session<'_>,
        relayed: SocketAddr,
        other_relayed: SocketAddr,
    ) -> StepReport {
        let timeout = self.config.timeout;
        let mut rtts = Vec::new();
        for i in 0..PINGS {
            match self.ping_via(other, i, timeout / PINGS).await {
                Ok(Some(rtt)) => rtts.push(rtt),
                Ok(None) => {}
                Err(e) => {
                    let v = unanswered(Request::ChannelBind, &e, timeout);
                    return StepReport::fail(Step::Relay, v.what, v.todo);
                }
            }
        }
        let Some(rtt) = rtt_summary(&rtts) else {
            return StepReport::fail(
                Step::Relay,
                format!(
                    "none of {PINGS} ChannelData messages relayed from {relayed} to a second allocation at {other_relayed} came back"
                ),
                "the server cannot relay between its own relay addresses: check its log, its host firewall (UDP between the relay ports) and, behind 1:1 NAT, whether it hairpins to its public address",
            );
        };
        StepReport::pass(
            Step::Relay,
            format!(
                "{}/{PINGS} ChannelData round trips from {relayed} to a second allocation at {other_relayed} and back: {rtt}",
                rtts.len(),
            ),
        )
        .with_caveat(
            "peers outside the server: this machine's address is private, so the server (rightly) refuses it as a peer, and the relay was tested between two of its own allocations only; a firewall in front of the relay ports would not show. Run the probe from a machine with a public address to test that path",
        )
    }
}

/// What the echo socket heard instead of the relay: the last ICMP error reported on it.
#[derive(Clone, Default)]
pub(super) struct Heard(Arc<Mutex<Option<Icmp>>>);

impl Heard {
    fn set(&self, e: &std::io::Error) {
        let icmp = match e.kind() {
            ErrorKind::ConnectionRefused => Icmp::PortUnreachable,
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => Icmp::HostUnreachable,
            _ => return,
        };
        if let Ok(mut last) = self.0.lock() {
            *last = Some(icmp);
        }
    }

    fn get(&self) -> Option<Icmp> {
        self.0.lock().ok().and_then(|last| *last)
    }
}

/// "RTT min …, avg …, max …" of the round trips that came back; `None` when none did.
fn rtt_summary(rtts: &[Duration]) -> Option<String> {
    let min = *rtts.iter().min()?;
    let max = rtts.iter().max().copied().unwrap_or(min);
    let avg = rtts.iter().sum::<Duration>() / rtts.len().max(1) as u32;
    Some(format!(
        "RTT min {}, avg {}, max {}",
        millis(min),
        millis(avg),
        millis(max)
    ))
}

/// Echoes every datagram from the relay back to it; until the first arrives, sends [`HELLO`]
/// every 250 ms so that the relay learns this socket's address (and a NAT opens for it).
/// ICMP errors for the hellos go to `heard`.
pub(super) async fn echo_loop(socket: UdpSocket, heard: Heard) {
    let mut buf = vec![0u8; 65_536];
    let mut hello = tokio::time::interval(Duration::from_millis(250));
    let mut answered = false;
    loop {
        tokio::select! {
            _ = hello.tick(), if !answered => {
                if let Err(e) = socket.send(HELLO).await {
                    heard.set(&e);
                }
            }
            got = socket.recv(&mut buf) => match got {
                Ok(n) => {
                    answered = true;
                    let _ = socket.send(&buf[..n]).await;
                }
                // ICMP reports for earlier hellos: noted, and the socket keeps listening.
                Err(e) => heard.set(&e),
            }
        }
    }
}
