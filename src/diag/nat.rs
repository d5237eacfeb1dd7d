//! RFC 5780 NAT behaviour discovery over UDP: with a server that has a second address
//! (OTHER-ADDRESS), the mapping test (§4.3) and the filtering test (§4.4).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use super::ProbeConfig;
use super::conn::{udp_socket, unspecified};
use super::report::{Step, StepReport};
use super::uri::Transport;
use super::wire::{Reply, Req, random_tid, read_reply, request};

/// How the NAT maps one local address to public ones (RFC 4787 §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// No NAT: the reflexive address is the local one.
    NoNat,
    /// Same public address for every destination: peer-to-peer friendly.
    EndpointIndependent,
    /// A new public port per destination IP.
    AddressDependent,
    /// A new public port per destination IP and port ("symmetric NAT").
    AddressAndPortDependent,
}

/// Which senders the NAT lets reach a mapping (RFC 4787 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filtering {
    /// Anyone, once the mapping exists.
    EndpointIndependent,
    /// Only IPs this socket sent to.
    AddressDependent,
    /// Only the exact IP and port this socket sent to.
    AddressAndPortDependent,
}

impl Mapping {
    /// From test I (`m1`, to the primary address), test II (`m2`, to the other IP, primary
    /// port) and test III (`m3`, to the other IP and port); RFC 5780 §4.3.
    pub fn classify(
        local: SocketAddr,
        m1: SocketAddr,
        m2: SocketAddr,
        m3: Option<SocketAddr>,
    ) -> Self {
        if m1 == local {
            Self::NoNat
        } else if m2 == m1 {
            Self::EndpointIndependent
        } else if m3 == Some(m2) {
            Self::AddressDependent
        } else {
            Self::AddressAndPortDependent
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::NoNat => "no NAT (the reflexive address is the local one)",
            Self::EndpointIndependent => {
                "endpoint-independent mapping (one public address for every destination)"
            }
            Self::AddressDependent => {
                "address-dependent mapping (a new public port per destination IP)"
            }
            Self::AddressAndPortDependent => {
                "address- and port-dependent mapping (a \"symmetric NAT\")"
            }
        }
    }
}

impl Filtering {
    /// From test II (a response from the other IP and port arrived) and test III (a response
    /// from the other port arrived); RFC 5780 §4.4.
    pub fn classify(other_ip_and_port: bool, other_port: bool) -> Self {
        if other_ip_and_port {
            Self::EndpointIndependent
        } else if other_port {
            Self::AddressDependent
        } else {
            Self::AddressAndPortDependent
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::EndpointIndependent => {
                "endpoint-independent filtering (anyone may send to the mapping)"
            }
            Self::AddressDependent => "address-dependent filtering (only IPs you sent to)",
            Self::AddressAndPortDependent => {
                "address- and port-dependent filtering (only the exact address you sent to)"
            }
        }
    }
}

/// What the two findings mean for WebRTC.
pub(crate) fn advice(mapping: Mapping, filtering: Filtering) -> &'static str {
    match (mapping, filtering) {
        (Mapping::NoNat, _) => "direct connections work when the firewall lets them in",
        (Mapping::AddressAndPortDependent, _) => {
            "direct peer-to-peer connections usually fail from here: WebRTC needs the TURN relay"
        }
        (_, Filtering::EndpointIndependent) => {
            "direct peer-to-peer connections work well from here"
        }
        _ => "direct connections usually work with ICE hole punching; keep TURN as the fallback",
    }
}

/// Step 7: runs the RFC 5780 tests, or says why they cannot run.
pub(super) async fn discover(
    config: &ProbeConfig,
    server: SocketAddr,
    other: Option<SocketAddr>,
) -> StepReport {
    if config.target.transport != Transport::Udp {
        return StepReport::skipped(
            Step::Nat,
            "RFC 5780 discovery runs over UDP only; probe the stun: URI of the same server for it",
        );
    }
    let Some(other) = other else {
        return StepReport::skipped(
            Step::Nat,
            "the server does not offer RFC 5780 discovery (no OTHER-ADDRESS in the Binding response)",
        );
    };
    match run_tests(server, other, config.timeout).await {
        Ok((mapping, filtering)) => StepReport::pass(
            Step::Nat,
            format!(
                "{}; {}: {}",
                mapping.words(),
                filtering.words(),
                advice(mapping, filtering)
            ),
        ),
        Err(what) => StepReport::fail(
            Step::Nat,
            what,
            "the server's second address (OTHER-ADDRESS) does not answer; its RFC 5780 setup may be broken",
        ),
    }
}

async fn run_tests(
    server: SocketAddr,
    other: SocketAddr,
    timeout: Duration,
) -> Result<(Mapping, Filtering), String> {
    let local_ip = {
        let probe = udp_socket(server).await.map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?.ip()
    };
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0))
        .await
        .map_err(|e| e.to_string())?;
    let local = socket.local_addr().unwrap_or_else(|_| unspecified(server));
    let no_answer = |to: SocketAddr| format!("no answer from {to} during NAT discovery");
    let m1 = binding(&socket, server, Req::BINDING, timeout)
        .await
        .and_then(|r| r.mapped)
        .ok_or_else(|| no_answer(server))?;
    let mapping = if m1 == local {
        Mapping::NoNat
    } else {
        let second = SocketAddr::new(other.ip(), server.port());
        let m2 = binding(&socket, second, Req::BINDING, timeout)
            .await
            .and_then(|r| r.mapped)
            .ok_or_else(|| no_answer(second))?;
        let m3 = if m2 == m1 {
            None
        } else {
            binding(&socket, other, Req::BINDING, timeout)
                .await
                .and_then(|r| r.mapped)
        };
        Mapping::classify(local, m1, m2, m3)
    };
    let both = Req::Binding {
        change_ip: true,
        change_port: true,
    };
    let port = Req::Binding {
        change_ip: false,
        change_port: true,
    };
    // Silence is the finding here, so a shorter wait suffices.
    let wait = timeout.min(Duration::from_secs(2));
    let f2 = binding(&socket, server, both, wait).await.is_some();
    let f3 = f2 || binding(&socket, server, port, wait).await.is_some();
    Ok((mapping, Filtering::classify(f2, f3)))
}

/// One Binding transaction on an unconnected socket: the answer may come from any address.
async fn binding(socket: &UdpSocket, to: SocketAddr, req: Req, timeout: Duration) -> Option<Reply> {
    let tid = random_tid();
    let raw = request(req, None, tid).ok()?;
    let deadline = Instant::now() + timeout;
    let mut rto = Duration::from_millis(500);
    let mut buf = vec![0u8; 2048];
    while Instant::now() < deadline {
        socket.send_to(&raw, to).await.ok()?;
        let retransmit = deadline.min(Instant::now() + rto);
        while let Ok(got) = timeout_at(retransmit, socket.recv_from(&mut buf)).await {
            let Ok((n, _from)) = got else { continue };
            if let Some(reply) = read_reply(&buf[..n], tid, None).filter(|r| r.success) {
                return Some(reply);
            }
        }
        rto *= 2;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapping_follows_rfc_5780_section_4_3() {
        let local = a("192.168.1.2:5000");
        let m1 = a("203.0.113.1:6000");
        assert_eq!(Mapping::classify(local, local, m1, None), Mapping::NoNat);
        assert_eq!(
            Mapping::classify(local, m1, m1, None),
            Mapping::EndpointIndependent
        );
        let m2 = a("203.0.113.1:6001");
        assert_eq!(
            Mapping::classify(local, m1, m2, Some(m2)),
            Mapping::AddressDependent
        );
        let m3 = a("203.0.113.1:6002");
        assert_eq!(
            Mapping::classify(local, m1, m2, Some(m3)),
            Mapping::AddressAndPortDependent
        );
        assert_eq!(
            Mapping::classify(local, m1, m2, None),
            Mapping::AddressAndPortDependent
        );
    }

    #[test]
    fn filtering_follows_rfc_5780_section_4_4() {
        assert_eq!(
            Filtering::classify(true, true),
            Filtering::EndpointIndependent
        );
        assert_eq!(
            Filtering::classify(false, true),
            Filtering::AddressDependent
        );
        assert_eq!(
            Filtering::classify(false, false),
            Filtering::AddressAndPortDependent
        );
    }

    #[test]
    fn a_symmetric_nat_is_told_to_rely_on_turn() {
        let s = advice(
            Mapping::AddressAndPortDependent,
            Filtering::AddressAndPortDependent,
        );
        assert!(s.contains("needs the TURN relay"));
        let s = advice(Mapping::EndpointIndependent, Filtering::EndpointIndependent);
        assert!(s.contains("work well"));
    }
}
