//! Plain-language verdicts for network and TLS failures: silence, refused connections and
//! certificate problems. Pure functions of the error and the context.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

use super::uri::Transport;
use super::verdict::{Verdict, human_secs};

/// How a request went unanswered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Silence {
    /// Nothing came back before the timeout.
    Timeout,
    /// The host answered ICMP "port unreachable" (a UDP socket reports it as refused).
    PortUnreachable,
    /// The server closed the TCP/TLS connection without answering.
    Closed,
}

/// No answer to the first STUN Binding request.
pub fn binding_unanswered(
    transport: Transport,
    server: SocketAddr,
    timeout: Duration,
    silence: Silence,
) -> Verdict {
    let port = server.port();
    let secs = format_timeout(timeout);
    match (transport, silence) {
        (Transport::Udp, Silence::PortUnreachable) => problem(
            format!(
                "no answer: the host {} answered 'port unreachable' for UDP port {port}: nothing listens there, or a firewall rejects the traffic (a REJECT rule sends the same message)",
                server.ip()
            ),
            "start the server or fix the port in the URI (3478 is the usual one); if it runs, check the firewalls between here and the server for a rule rejecting UDP to this port",
        ),
        (Transport::Udp, _) => problem(
            format!("no answer within {secs}: UDP blocked or server down"),
            format!(
                "check that the server runs and listens on UDP port {port}, and that firewalls (and the cloud security group) let UDP {port} in and out; if this network blocks UDP, use TURN over TCP or TLS (turn:HOST:PORT?transport=tcp, turns:HOST:443)"
            ),
        ),
        (_, Silence::Closed) => problem(
            format!(
                "no answer: the server closed the connection without answering the STUN request on port {port}"
            ),
            "this port may belong to another service, or the server refused this client (per-IP limits); check the server's log",
        ),
        (_, _) => problem(
            format!(
                "no answer within {secs}: the connection is open but nothing answered STUN on port {port}"
            ),
            "this port may belong to another service (a web server?); check the port, and for TLS that the server speaks TURN over TLS on it",
        ),
    }
}

/// An ICMP error the probe's echo socket got for its datagrams to the relayed address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Icmp {
    /// 'port unreachable': a host holds the address but refuses the port (or a REJECT rule).
    PortUnreachable,
    /// 'host unreachable' or 'network unreachable': nobody holds the address, or no route.
    HostUnreachable,
}

/// The relay step's first datagrams, which never came through the relay.
#[derive(Clone, Copy, Debug)]
pub struct Unreached {
    /// The address the server answered on.
    pub server: SocketAddr,
    /// The relayed address the server gave.
    pub relayed: SocketAddr,
    /// The probe's echo socket, which sent to `relayed`.
    pub echo_local: SocketAddr,
    /// The IP the permission was made for.
    pub peer_ip: IpAddr,
    /// How long the probe waited.
    pub timeout: Duration,
    /// The last ICMP error the echo socket got, if any.
    pub heard: Option<Icmp>,
}

/// Datagrams to the relayed address never came through: a relayed address on the IP the
/// server answered on points at a firewall in front of the relay ports; another IP at the
/// address the server advertises (behind NAT: its external address).
pub fn relay_unreached(u: &Unreached) -> Verdict {
    let relay_ip = u.relayed.ip();
    let port = u.relayed.port();
    let base = format!(
        "the relay did not pass on a datagram from this machine's echo socket ({}, permitted as {}) to {} within {}",
        u.echo_local,
        u.peer_ip,
        u.relayed,
        format_timeout(u.timeout)
    );
    let ports = "Turnstone: [relay] ports; coturn: min-port/max-port";
    let external = "Turnstone: [relay] external_address or --external-address; coturn: external-ip";
    let elsewhere = relay_ip != u.server.ip() && relay_ip.is_ipv4() == u.server.is_ipv4();
    if !elsewhere {
        let what = if u.heard == Some(Icmp::PortUnreachable) {
            format!(
                "{base}: {relay_ip} answered 'port unreachable' for UDP port {port}, which the server holds for this allocation, so a firewall rejects UDP to the relay ports"
            )
        } else {
            format!(
                "{base}: the relayed address is on the IP the server answered on, so a firewall (or a NAT's port forwarding) drops UDP to the relay ports"
            )
        };
        return problem(
            what,
            format!(
                "open the server's relay port range to UDP from anywhere, in its host firewall, the firewalls on the way and the cloud security group ({ports})"
            ),
        );
    }
    let icmp = match u.heard {
        Some(Icmp::PortUnreachable) => {
            format!(" ({relay_ip} answered 'port unreachable': a host there refuses the port)")
        }
        Some(Icmp::HostUnreachable) => {
            format!(" ('host unreachable': nobody answers at {relay_ip})")
        }
        None => String::new(),
    };
    problem(
        format!(
            "{base}{icmp}: the relayed address {relay_ip} is not the IP the server answered on ({}), so the address the server advertises for its relays may be wrong",
            u.server.ip()
        ),
        format!(
            "behind NAT, the server must advertise the public address clients reach it at ({external}); if {relay_ip} is right, open UDP to the relay ports in the firewalls on the way ({ports})"
        ),
    )
}

/// No answer to Allocate although Binding was answered.
pub fn allocate_unanswered(timeout: Duration) -> Verdict {
    problem(
        format!(
            "no answer to Allocate within {}, although Binding was answered: not a TURN server, or TURN is disabled on this port",
            format_timeout(timeout)
        ),
        "use a TURN server (this looks like a STUN-only server), or enable TURN on it",
    )
}

/// An Allocate without credentials that did not get 401 with REALM and NONCE.
pub fn missing_challenge(success: bool) -> Verdict {
    if success {
        problem(
            "the server relayed without asking for credentials: it is an open relay anyone can abuse",
            "enable authentication on the server (Turnstone: [auth]; coturn: lt-cred-mech or use-auth-secret)",
        )
    } else {
        problem(
            "the server did not challenge with 401 and REALM/NONCE: not a TURN server or an open relay",
            "check that the URI points at a TURN server with long-term credentials (RFC 8656 §7)",
        )
    }
}

/// A TCP connection that could not be opened.
pub fn connect_failed(server: SocketAddr, timeout: Duration, err: &io::Error) -> Verdict {
    let port = server.port();
    match err.kind() {
        io::ErrorKind::ConnectionRefused => problem(
            format!(
                "connection refused on TCP port {port} at {}: nothing listens there, or a firewall rejects the connection (a REJECT rule answers the same way)",
                server.ip()
            ),
            "start the server, fix the port, or enable its TCP/TLS listener; if it runs, check the firewalls between here and the server for a rule rejecting this port",
        ),
        io::ErrorKind::TimedOut => problem(
            format!(
                "no answer to the TCP connection within {}: a firewall drops the packets, or the host is down",
                format_timeout(timeout)
            ),
            format!(
                "open TCP port {port} in the firewalls on the way (and the cloud security group)"
            ),
        ),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => problem(
            format!("no route to {} from this machine", server.ip()),
            "check this machine's network connection; for an IPv6 address, whether this network has IPv6",
        ),
        io::ErrorKind::PermissionDenied => problem(
            "this machine refused to open the connection (local firewall or policy)",
            "allow outgoing connections to the server's port on this machine",
        ),
        _ => problem(
            format!("could not connect to {server}: {err}"),
            "check the address and this machine's network",
        ),
    }
}

/// A failed TLS handshake: certificate problems and protocol mismatches in words.
pub fn tls_failed(host: &str, err: &rustls::Error) -> Verdict {
    match err {
        rustls::Error::InvalidCertificate(cert) => certificate_problem(host, cert),
        rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure
            | AlertDescription::ProtocolVersion
            | AlertDescription::InsufficientSecurity,
        )
        | rustls::Error::PeerIncompatible(_) => problem(
            "TLS handshake failure: the server and the probe share no TLS version or cipher suite",
            "enable TLS 1.2 or 1.3 with modern cipher suites on the server",
        ),
        rustls::Error::AlertReceived(alert) => problem(
            format!("the server aborted the TLS handshake (alert: {alert:?})"),
            "check the server's TLS configuration and log",
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => problem(
            "the server did not answer in TLS: this port seems to speak plain TCP",
            "use turn:HOST:PORT?transport=tcp for this port, or the server's TLS port with turns:",
        ),
        other => problem(
            format!("TLS handshake failed: {other}"),
            "check the server's TLS configuration and log",
        ),
    }
}

/// A name as rustls prints it (`DnsName("turn.example.com")`, `IpAddress(…)`), plainly.
fn plain_name(name: &str) -> String {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .map_or_else(|| name.to_string(), str::to_string)
}

/// A certificate the verifier refused.
pub fn certificate_problem(host: &str, err: &CertificateError) -> Verdict {
    match err {
        CertificateError::Expired => problem(
            "the server's certificate has expired",
            "renew the certificate (e.g. certbot renew) and reload the server (Turnstone: SIGHUP)",
        ),
        CertificateError::ExpiredContext { time, not_after } => problem(
            format!(
                "the server's certificate expired {} ago",
                human_secs(time.as_secs().saturating_sub(not_after.as_secs()))
            ),
            "renew the certificate (e.g. certbot renew) and reload the server (Turnstone: SIGHUP)",
        ),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => problem(
            "the server's certificate is not valid yet: this machine's clock or the server's is wrong",
            "sync clocks with NTP, or wait until the certificate's start date",
        ),
        CertificateError::NotValidForName => problem(
            format!("wrong name: the certificate is not valid for {host:?}"),
            format!(
                "connect with a name the certificate lists, or get a certificate that includes {host}"
            ),
        ),
        CertificateError::NotValidForNameContext { presented, .. } => problem(
            format!(
                "wrong name: the certificate is not valid for {host:?} (it names: {})",
                presented
                    .iter()
                    .map(|n| plain_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "connect with a name the certificate lists, or get a certificate that includes {host}"
            ),
        ),
        CertificateError::UnknownIssuer => problem(
            "unknown issuer: the certificate is signed by an authority this machine does not trust (self-signed, or a private CA)",
            "use a certificate from a public CA (browsers need one), or pass --ca-file with your CA; --insecure skips the check for testing",
        ),
        CertificateError::BadSignature => problem(
            "the certificate's signature does not verify: a broken chain or a tampered certificate",
            "serve the full certificate chain (leaf first, then intermediates); a self-signed certificate may share its name with a trusted CA",
        ),
        CertificateError::Revoked => problem(
            "the server's certificate has been revoked",
            "get a new certificate",
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            problem(
                "the certificate is not meant for TLS servers (its extended key usage lacks serverAuth)",
                "issue a certificate with extendedKeyUsage serverAuth",
            )
        }
        // webpki reports some refusals only as text (its error type is not ours to match).
        other if format!("{other:?}").contains("CaUsedAsEndEntity") => problem(
            "the server presents a CA certificate (basicConstraints CA:TRUE) as its own: clients that check this as RFC 5280 says refuse it (rustls and webpki-based ones, like this probe and webrtc-rs); OpenSSL-based ones may accept it, so it can look fine elsewhere",
            "issue a leaf certificate (CA:FALSE); with openssl req -x509 add -addext basicConstraints=critical,CA:FALSE",
        ),
        other => problem(
            format!("the certificate was refused: {other:?}"),
            "check the certificate chain the server presents",
        ),
    }
}

/// An I/O error during the TLS handshake that carries no rustls error.
pub fn tls_io_failed(err: &io::Error) -> Verdict {
    match err.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => problem(
            "the server closed the connection during the TLS handshake: the port may not speak TLS, or it refused the hello",
            "check that this port is the server's TLS listener and its certificate loads (server log); for a plain TCP port use turn:HOST:PORT?transport=tcp",
        ),
        io::ErrorKind::TimedOut => problem(
            "the TLS handshake did not finish in time: the port may speak plain TCP and wait for data",
            "use turn:HOST:PORT?transport=tcp for this port, or the server's TLS port with turns:",
        ),
        _ => problem(
            format!("TLS handshake failed: {err}"),
            "check the server's TLS configuration and log",
        ),
    }
}

fn problem(what: impl Into<String>, todo: impl Into<String>) -> Verdict {
    Verdict {
        expected: false,
        what: what.into(),
        todo: todo.into(),
    }
}

/// "3 s", "1.5 s", "250 ms".
pub(crate) fn format_timeout(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// "0.4 ms", "12 ms".
pub(super) fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::UnixTime;

    use super::*;

    const SERVER: &str = "192.0.2.1:3478";

    #[test]
    fn udp_silence_blames_udp_blocking_or_a_down_server() {
        let v = binding_unanswered(
            Transport::Udp,
            SERVER.parse().unwrap(),
            Duration::from_secs(3),
            Silence::Timeout,
        );
        assert_eq!(v.what, "no answer within 3 s: UDP blocked or server down");
        assert!(v.todo.contains("UDP port 3478") && v.todo.contains("transport=tcp"));
    }

    #[test]
    fn port_unreachable_says_nothing_listens_or_a_firewall_rejects() {
        let v = binding_unanswered(
            Transport::Udp,
            SERVER.parse().unwrap(),
            Duration::from_secs(3),
            Silence::PortUnreachable,
        );
        assert!(
            v.what.starts_with(
                "no answer: the host 192.0.2.1 answered 'port unreachable' for UDP port 3478"
            ),
            "{}",
            v.what
        );
        assert!(v.what.contains("or a firewall rejects"), "{}", v.what);
        assert!(v.todo.contains("rejecting UDP"), "{}", v.todo);
    }

    #[test]
    fn certificate_names_are_printed_plainly() {
        assert_eq!(
            plain_name("DnsName(\"turn.example.com\")"),
            "turn.example.com"
        );
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "IpAddress(127.0.0.1)");
    }

    #[test]
    fn stream_silence_suspects_another_service() {
        let addr = SERVER.parse().unwrap();
        let v = binding_unanswered(
            Transport::Tcp,
            addr,
            Duration::from_millis(1500),
            Silence::Timeout,
        );
        assert!(v.what.contains("within 1.5 s") && v.todo.contains("another service"));
        let v = binding_unanswered(
            Transport::Tls,
            addr,
            Duration::from_secs(1),
            Silence::Closed,
        );
        assert!(v.what.contains("closed the connection"));
    }

    #[test]
    fn connect_errors_are_explained() {
        let addr = SERVER.parse().unwrap();
        let t = Duration::from_secs(3);
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(
            connect_failed(addr, t, &refused)
                .what
                .starts_with("connection refused")
        );
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert!(connect_failed(addr, t, &timeout).what.contains("firewall"));
        let unreachable = io::Error::from(io::ErrorKind::NetworkUnreachable);
        assert!(
            connect_failed(addr, t, &unreachable)
                .what
                .contains("no route")
        );
    }

    #[test]
    fn certificate_errors_are_named_in_words() {
        let expired = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000)),
            not_after: UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000 - 3 * 86_400)),
        };
        let v = tls_failed(
            "turn.example.com",
            &rustls::Error::InvalidCertificate(expired),
        );
        assert_eq!(v.what, "the server's certificate expired 3 days ago");
        let name = CertificateError::NotValidForNameContext {
            expected: rustls::pki_types::ServerName::try_from("turn.example.com").unwrap(),
            presented: vec!["DnsName(\"other.example\")".into()],
        };
        let v = certificate_problem("turn.example.com", &name);
        assert!(v.what.starts_with("wrong name") && v.what.contains("other.example"));
        let v = certificate_problem("x", &CertificateError::UnknownIssuer);
        assert!(v.what.starts_with("unknown issuer") && v.todo.contains("--insecure"));
    }

    #[test]
    fn handshake_failures_and_plain_tcp_ports_are_told_apart() {
        let v = tls_failed(
            "x",
            &rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
        );
        assert!(v.what.starts_with("TLS handshake failure"));
        let v = tls_failed(
            "x",
            &rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(v.what.contains("plain TCP"));
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert!(tls_io_failed(&eof).what.contains("closed the connection"));
    }

    #[test]
    fn the_open_relay_and_the_stun_only_server_are_recognised() {
        assert!(missing_challenge(true).what.contains("open relay"));
        assert!(
            missing_challenge(false)
                .what
                .contains("not a TURN server or an open relay")
        );
        assert!(
            allocate_unanswered(Duration::from_secs(2))
                .what
                .contains("not a TURN server")
        );
    }

    #[test]
    fn timeouts_are_formatted_for_people() {
        assert_eq!(format_timeout(Duration::from_secs(3)), "3 s");
        assert_eq!(format_timeout(Duration::from_millis(250)), "250 ms");
        assert_eq!(format_timeout(Duration::from_millis(2500)), "2.5 s");
    }

    #[test]
    fn round_trip_times_are_printed_in_milliseconds() {
        assert_eq!(millis(Duration::from_micros(420)), "0.4 ms");
        assert_eq!(millis(Duration::from_millis(123)), "123 ms");
    }

    #[test]
    fn an_unreached_relay_blames_the_firewall_or_the_advertised_address() {
        let server: SocketAddr = "203.0.113.10:3478".parse().unwrap();
        let u = |relayed: &str, heard| Unreached {
            server,
            relayed: relayed.parse().unwrap(),
            echo_local: "198.51.100.2:40000".parse().unwrap(),
            peer_ip: "198.51.100.2".parse().unwrap(),
            timeout: Duration::from_secs(2),
            heard,
        };
        let v = relay_unreached(&u("203.0.113.10:50000", None));
        assert!(
            v.what.starts_with("the relay did not pass on a datagram from this machine's echo socket (198.51.100.2:40000, permitted as 198.51.100.2) to 203.0.113.10:50000 within 2 s: "),
            "{}",
            v.what
        );
        assert!(
            v.what.contains("drops UDP to the relay ports"),
            "{}",
            v.what
        );
        assert!(v.todo.contains("[relay] ports"), "{}", v.todo);
        let v = relay_unreached(&u("203.0.113.10:50000", Some(Icmp::PortUnreachable)));
        assert!(
            v.what.contains("'port unreachable' for UDP port 50000") && v.what.contains("rejects"),
            "{}",
            v.what
        );
        let v = relay_unreached(&u("10.0.0.5:50000", None));
        assert!(
            v.what.contains(
                "the relayed address 10.0.0.5 is not the IP the server answered on (203.0.113.10)"
            ),
            "{}",
            v.what
        );
        assert!(v.todo.contains("external_address"), "{}", v.todo);
        let v = relay_unreached(&u("203.0.113.99:50000", Some(Icmp::HostUnreachable)));
        assert!(v.what.contains("'host unreachable'"), "{}", v.what);
        // An IPv6 relay for an IPv4 listener is no sign of a wrong address.
        let v = relay_unreached(&u("[2001:db8::1]:50000", None));
        assert!(
            v.what.contains("drops UDP to the relay ports"),
            "{}",
            v.what
        );
    }
}
