//! STUN and TURN URIs (RFC 7064, RFC 7065): `stun:HOST[:PORT]`, `stuns:HOST[:PORT]`,
//! `turn:HOST[:PORT][?transport=udp|tcp]`, `turns:HOST[:PORT][?transport=tcp]`.

use std::fmt;
use std::str::FromStr;

/// How the probe talks to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Datagrams (RFC 8489 §6.2.1: retransmitted until answered).
    Udp,
    /// A TCP connection (RFC 8489 §6.2.2).
    Tcp,
    /// TLS over TCP (RFC 8489 §6.2.3).
    Tls,
}

impl Transport {
    /// The lowercase name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// Whether messages travel on a byte stream (TCP or TLS).
    pub fn is_stream(self) -> bool {
        !matches!(self, Self::Udp)
    }
}

/// A parsed `stun:`/`stuns:`/`turn:`/`turns:` URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Whether the URI asks for TURN (`turn:`/`turns:`) rather than only STUN.
    pub turn: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port (3478 by default, 5349 for `stuns:`/`turns:`).
    pub port: u16,
    /// Transport to the server.
    pub transport: Transport,
}

/// Why a URI is not a STUN or TURN URI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The scheme is not one of the four.
    #[error(
        "the URI must start with stun:, stuns:, turn: or turns: (e.g. turn:turn.example.com:3478?transport=udp)"
    )]
    Scheme,
    /// No host after the scheme.
    #[error("the URI names no host")]
    NoHost,
    /// The port is not a number from 1 to 65535.
    #[error("the port must be a number from 1 to 65535")]
    Port,
    /// An IPv6 literal without its closing bracket.
    #[error("an IPv6 address must be written in brackets, e.g. turn:[2001:db8::1]:3478")]
    Bracket,
    /// A query other than `transport=udp|tcp`.
    #[error("unsupported query {0:?}: only ?transport=udp or ?transport=tcp")]
    Query(String),
    /// `turns:` or `stuns:` with `transport=udp` would be DTLS, which the probe does not speak.
    #[error("TURN over DTLS (turns:...?transport=udp) is not supported; use ?transport=tcp")]
    Dtls,
}

impl FromStr for Target {
    type Err = UriError;

    fn from_str(uri: &str) -> Result<Target, UriError> {
        let uri = uri.trim();
        let (scheme, rest) = uri.split_once(':').ok_or(UriError::Scheme)?;
        let (turn, secure) = match scheme.to_ascii_lowercase().as_str() {
            "stun" => (false, false),
            "stuns" => (false, true),
            "turn" => (true, false),
            "turns" => (true, true),
            _ => return Err(UriError::Scheme),
        };
        // RFC 7065 §3.1: the only query is "transport"; RFC 7064 defines none for stun:, but
        // accepting it there costs nothing.
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let asked = match query {
            None => None,
            Some(q) => match q.to_ascii_lowercase().as_str() {
                "transport=udp" => Some(Transport::Udp),
                "transport=tcp" => Some(Transport::Tcp),
                _ => return Err(UriError::Query(q.to_owned())),
            },
        };
        let transport = match (secure, asked) {
            (true, Some(Transport::Udp)) => return Err(UriError::Dtls),
            (true, _) => Transport::Tls,
            (false, asked) => asked.unwrap_or(Transport::Udp),
        };
        let (host, port) = split_host_port(authority)?;
        let default_port = if secure { 5349 } else { 3478 };
        Ok(Target {
            turn,
            host: host.to_owned(),
            port: port.unwrap_or(default_port),
            transport,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.turn, self.transport) {
            (true, Transport::Tls) => "turns",
            (true, _) => "turn",
            (false, Transport::Tls) => "stuns",
            (false, _) => "stun",
        };
        if self.host.contains(':') {
            write!(f, "{scheme}:[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{scheme}:{}:{}", self.host, self.port)?;
        }
        match self.transport {
            Transport::Udp if self.turn => f.write_str("?transport=udp"),
            Transport::Tcp => f.write_str("?transport=tcp"),
            _ => Ok(()),
        }
    }
}

/// Splits `host[:port]` or `[v6][:port]`.
fn split_host_port(authority: &str) -> Result<(&str, Option<u16>), UriError> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or(UriError::Bracket)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or(UriError::Port)?)),
        }
    } else {
        match authority.split_once(':') {
            Some((_, p)) if p.contains(':') => return Err(UriError::Bracket),
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UriError::NoHost);
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(UriError::Port),
            Ok(n) => Some(n),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Target, UriError> {
        s.parse()
    }

    #[test]
    fn turn_uri_with_port_and_transport_parses() {
        let t = parse("turn:turn.example.com:3479?transport=tcp").unwrap();
        assert_eq!(
            t,
            Target {
                turn: true,
                host: "turn.example.com".into(),
                port: 3479,
                transport: Transport::Tcp
            }
        );
    }

    #[test]
    fn default_ports_and_transports_follow_the_scheme() {
        let t = parse("turn:example.com").unwrap();
        assert_eq!((t.port, t.transport, t.turn), (3478, Transport::Udp, true));
        let t = parse("turns:example.com").unwrap();
        assert_eq!((t.port, t.transport), (5349, Transport::Tls));
        let t = parse("stun:example.com").unwrap();
        assert_eq!((t.port, t.transport, t.turn), (3478, Transport::Udp, false));
        let t = parse("turns:example.com:443?transport=tcp").unwrap();
        assert_eq!((t.port, t.transport), (443, Transport::Tls));
    }

    #[test]
    fn ipv6_literals_need_brackets() {
        let t = parse("turn:[::1]:3478").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 3478));
        assert_eq!(parse("turn:[::1]").unwrap().port, 3478);
        assert_eq!(parse("turn:::1:3478"), Err(UriError::Bracket));
        assert_eq!(parse("turn:[::1:3478"), Err(UriError::Bracket));
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        assert_eq!(parse("http://x"), Err(UriError::Scheme));
        assert_eq!(parse("example.com"), Err(UriError::Scheme));
        assert_eq!(parse("turn:"), Err(UriError::NoHost));
        assert_eq!(parse("turn:x:0"), Err(UriError::Port));
        assert_eq!(parse("turn:x:99999"), Err(UriError::Port));
        assert_eq!(parse("turn:x:abc"), Err(UriError::Port));
        assert_eq!(parse("turns:x?transport=udp"), Err(UriError::Dtls));
        assert!(matches!(parse("turn:x?foo=bar"), Err(UriError::Query(_))));
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "turn:a.example:3478?transport=udp",
            "turn:a.example:80?transport=tcp",
            "turns:[2001:db8::1]:5349",
            "stun:1.2.3.4:3478",
        ] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
    }
}
