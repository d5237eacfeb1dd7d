//! Checks of `server.alternate_address` and `server.alternate_port` (RFC 5780 NAT behaviour
//! discovery): a second IP of the first UDP listener's family, and a second port.

use std::net::{IpAddr, SocketAddr};

use super::ctx::Ctx;
use super::raw::Ip;
use super::types::{ListenerConfig, NatDiscoveryConfig, Protocol};

const ADDRESS: &str = "server.alternate_address";
const PORT: &str = "server.alternate_port";

/// The discovery settings, or `None` (off, or refused with the reasons in `ctx`).
pub(super) fn nat_discovery(
    address: Option<Ip>,
    port: Option<u16>,
    listeners: &[ListenerConfig],
    ctx: &mut Ctx,
) -> Option<NatDiscoveryConfig> {
    let Some(Ip(alternate)) = address else {
        if port.is_some() && !ctx.failed(ADDRESS) {
            ctx.push(
                PORT,
                "has no effect without server.alternate_address; set both or neither",
            );
        }
        return None;
    };
    let Some(index) = listeners.iter().position(|l| l.protocol == Protocol::Udp) else {
        ctx.push(
            ADDRESS,
            "needs a udp [[listen]] entry: RFC 5780 discovery runs over UDP",
        );
        return None;
    };
    if ctx.failed(&format!("listen[{index}]")) {
        return None;
    }
    let primary = listeners[index].address;
    let ok = check_ips(alternate, primary, index, ctx);
    let port = alternate_port(port, primary, index, ctx)?;
    if !ok {
        return None;
    }
    let clashes = clashes(listeners, index, alternate, primary.port(), port, ctx);
    (!clashes).then_some(NatDiscoveryConfig {
        listener: index,
        address: alternate,
        port,
    })
}

/// The alternate IP is a concrete unicast address of the primary's family, other than its
/// IP; the primary listener has a concrete IP. Reports every problem; whether there were none.
fn check_ips(alternate: IpAddr, primary: SocketAddr, index: usize, ctx: &mut Ctx) -> bool {
    let mut ok = true;
    let broadcast = matches!(alternate, IpAddr::V4(a) if a.is_broadcast());
    if alternate.is_unspecified() || alternate.is_multicast() || broadcast {
        ctx.push(
            ADDRESS,
            "must be a unicast address of this host (not 0.0.0.0, :: or multicast)",
        );
        ok = false;
    } else if alternate.is_ipv4() != primary.is_ipv4() {
        let family = if primary.is_ipv4() { "IPv4" } else { "IPv6" };
        ctx.push(
            ADDRESS,
            format!(
                "must be an {family} address like listen[{index}] ({primary}), the first udp \
                 listener, which it pairs with"
            ),
        );
        ok = false;
    } else if alternate == primary.ip() {
        ctx.push(
            ADDRESS,
            format!(
                "must differ from the IP of listen[{index}] ({primary}), the first udp \
                 listener: RFC 5780 needs a second IP address"
            ),
        );
        ok = false;
    }
    if primary.ip().is_unspecified() {
        // Answers to CHANGE-REQUEST leave from a chosen IP, and a wildcard socket would
        // answer for both IPs: each of the four sockets binds one concrete address.
        ctx.push(
            ADDRESS,
            format!(
                "needs listen[{index}], the first udp listener, on a specific IP, not \
                 {primary}: the four RFC 5780 sockets each bind one address (write e.g. \
                 address = \"192.0.2.1:{}\")",
                primary.port()
            ),
        );
        ok = false;
    }
    ok
}

/// `alternate_port`, or the primary's port + 1; 0 only beside a primary on port 0 (both then
/// come from the kernel at start).
fn alternate_port(
    port: Option<u16>,
    primary: SocketAddr,
    index: usize,
    ctx: &mut Ctx,
) -> Option<u16> {
    if ctx.failed(PORT) {
        return None;
    }
    let primary_port = primary.port();
    let Some(port) = port else {
        if primary_port == 0 {
            return Some(0);
        }
        let next = primary_port.checked_add(1);
        if next.is_none() {
            ctx.push(
                PORT,
                format!(
                    "required: listen[{index}] is on port {primary_port}, so the default \
                     (its port + 1) does not exist"
                ),
            );
        }
        return next;
    };
    if port == 0 {
        ctx.push(
            PORT,
            "must be 1 to 65535; leave it out for the first udp listener's port + 1",
        );
        return None;
    }
    if port == primary_port {
        ctx.push(
            PORT,
            format!(
                "must differ from the port of listen[{index}] ({primary}): RFC 5780 needs a \
                 second port"
            ),
        );
        return None;
    }
    Some(port)
}

/// Whether another UDP listener already holds one of the three sockets discovery adds
/// (the same address, or the wildcard of its family on the same port); each is reported.
fn clashes(
    listeners: &[ListenerConfig],
    index: usize,
    alternate: IpAddr,
    primary_port: u16,
    port: u16,
    ctx: &mut Ctx,
) -> bool {
    let primary_ip = listeners[index].address.ip();
    let added = [
        (PORT, SocketAddr::new(primary_ip, port)),
        (ADDRESS, SocketAddr::new(alternate, primary_port)),
        (ADDRESS, SocketAddr::new(alternate, port)),
    ];
    let mut found = false;
    for (path, socket) in added.into_iter().filter(|(_, a)| a.port() != 0) {
        let holder = listeners.iter().enumerate().find(|&(j, l)| {
            let same_ip = l.address.ip() == socket.ip()
                || (l.address.ip().is_unspecified() && l.address.is_ipv4() == socket.is_ipv4());
            j != index
                && l.protocol == Protocol::Udp
                && l.address.port() == socket.port()
                && same_ip
        });
        if let Some((j, l)) = holder {
            ctx.push(
                path,
                format!(
                    "RFC 5780 discovery listens on udp {socket}, which listen[{j}] ({}) \
                     already holds",
                    l.address
                ),
            );
            found = true;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;
    use super::*;

    fn parse(text: &str) -> Result<Config, super::super::ConfigErrors> {
        Config::from_toml(text, Path::new("/etc/turnstone"))
    }

    /// The problems of `text`, one a line.
    fn errors(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    const UDP: &str = "[[listen]]\naddress = \"192.0.2.1:3478\"\n";

    #[test]
    fn the_alternate_port_defaults_to_the_listeners_port_plus_one() {
        let text = format!("[server]\nalternate_address = \"192.0.2.2\"\n{UDP}");
        let nat = parse(&text).unwrap().server.nat_discovery.unwrap();
        assert_eq!((nat.listener, nat.port), (0, 3479));
        assert_eq!(nat.address, "192.0.2.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_first_udp_listener_is_the_primary_and_port_zero_pairs_with_port_zero() {
        let text = "[server]\nalternate_address = \"::2\"\n\
                    [[listen]]\nprotocol = \"tcp\"\naddress = \"[::1]:3478\"\n\
                    [[listen]]\naddress = \"[::1]:0\"\n";
        let nat = parse(text).unwrap().server.nat_discovery.unwrap();
        assert_eq!((nat.listener, nat.port), (1, 0));
    }

    #[test]
    fn a_wildcard_primary_listener_is_refused() {
        assert_eq!(
            errors("[server]\nalternate_address = \"192.0.2.2\"\n"),
            "server.alternate_address: needs listen[0], the first udp listener, on a specific \
             IP, not 0.0.0.0:3478: the four RFC 5780 sockets each bind one address (write e.g. \
             address = \"192.0.2.1:3478\")"
        );
    }

    #[test]
    fn the_alternate_address_must_be_another_concrete_ip_of_the_same_family() {
        let cases = [
            (
                "192.0.2.1",
                "server.alternate_address: must differ from the IP of listen[0] \
                 (192.0.2.1:3478), the first udp listener: RFC 5780 needs a second IP address",
            ),
            (
                "2001:db8::2",
                "server.alternate_address: must be an IPv4 address like listen[0] \
                 (192.0.2.1:3478), the first udp listener, which it pairs with",
            ),
            (
                "0.0.0.0",
                "server.alternate_address: must be a unicast address of this host (not \
                 0.0.0.0, :: or multicast)",
            ),
            (
                "224.0.0.1",
                "server.alternate_address: must be a unicast address of this host (not \
                 0.0.0.0, :: or multicast)",
            ),
        ];
        for (alternate, message) in cases {
            let text = format!("[server]\nalternate_address = \"{alternate}\"\n{UDP}");
            assert_eq!(errors(&text), message, "{alternate}");
        }
        let text = format!("[server]\nalternate_address = \"192.0.2\"\n{UDP}");
        assert!(errors(&text).starts_with("server.alternate_address: "));
    }

    #[test]
    fn a_bad_alternate_port_is_refused() {
        let with = |port: &str| {
            errors(&format!(
                "[server]\nalternate_address = \"192.0.2.2\"\nalternate_port = {port}\n{UDP}"
            ))
        };
        assert_eq!(
            with("3478"),
            "server.alternate_port: must differ from the port of listen[0] (192.0.2.1:3478): \
             RFC 5780 needs a second port"
        );
        assert_eq!(
            with("0"),
            "server.alternate_port: must be 1 to 65535; leave it out for the first udp \
             listener's port + 1"
        );
        assert!(with("70000").starts_with("server.alternate_port: "));
        let top = "[server]\nalternate_address = \"192.0.2.2\"\n\
                   [[listen]]\naddress = \"192.0.2.1:65535\"\n";
        assert_eq!(
            errors(top),
            "server.alternate_port: required: listen[0] is on port 65535, so the default (its \
             port + 1) does not exist"
        );
    }

    #[test]
    fn an_alternate_port_without_an_alternate_address_is_refused() {
        assert_eq!(
            errors(&format!("[server]\nalternate_port = 3479\n{UDP}")),
            "server.alternate_port: has no effect without server.alternate_address; set both \
             or neither"
        );
    }

    #[test]
    fn discovery_needs_a_udp_listener() {
        let text = "[server]\nalternate_address = \"192.0.2.2\"\n\
                    [[listen]]\nprotocol = \"tcp\"\naddress = \"192.0.2.1:3478\"\n";
        assert_eq!(
            errors(text),
            "server.alternate_address: needs a udp [[listen]] entry: RFC 5780 discovery runs \
             over UDP"
        );
    }

    #[test]
    fn a_udp_listener_on_one_of_the_added_sockets_is_refused() {
        let text = format!(
            "[server]\nalternate_address = \"192.0.2.2\"\n{UDP}\
             [[listen]]\naddress = \"0.0.0.0:3479\"\n\
             [[listen]]\naddress = \"192.0.2.2:3478\"\n\
             [[listen]]\nprotocol = \"tcp\"\naddress = \"192.0.2.2:3479\"\n"
        );
        assert_eq!(
            errors(&text),
            "server.alternate_port: RFC 5780 discovery listens on udp 192.0.2.1:3479, which \
             listen[1] (0.0.0.0:3479) already holds\n\
             server.alternate_address: RFC 5780 discovery listens on udp 192.0.2.2:3478, which \
             listen[2] (192.0.2.2:3478) already holds\n\
             server.alternate_address: RFC 5780 discovery listens on udp 192.0.2.2:3479, which \
             listen[1] (0.0.0.0:3479) already holds"
        );
    }
}
