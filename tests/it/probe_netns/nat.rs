//! The client behind NATs the router namespace builds with nft, and RFC 5780 discovery
//! against a server with a second address (`[server] alternate_address`): `probe --nat` and
//! coturn's `turnutils_natdiscovery` must both name each NAT's mapping and filtering, and the
//! TURN steps must pass through every one of them.
//!
//! - `masquerade`: Linux keeps the source port for every destination (endpoint-independent
//!   mapping) and lets in only replies from the exact address and port a mapping was opened
//!   to (address- and port-dependent filtering): a "port-restricted cone".
//! - `masquerade random` / `fully-random`: a random port per connection, so a new one per
//!   destination address and port: address- and port-dependent mapping, a "symmetric NAT".
//! - A static 1:1 `snat`/`dnat` of the client to an address of its own: endpoint-independent
//!   mapping and filtering, a "full cone".

use std::time::Duration;

use turnstone::diag::{Credentials, Status, Step};

use super::{Net, Proc, SHORT, Server, ServerCfg, assert_healthy, config, nft, probe, turn, user};
use crate::common::{PASSWORD, TempDir};

/// The server's primary and RFC 5780 alternate addresses, behind the router.
const SERVER: &str = "10.88.2.2";
const ALTERNATE: &str = "10.88.2.3";
/// The client, behind the router.
const CLIENT: &str = "10.88.1.2";
/// The client's own public address under the 1:1 NAT.
const CLIENT_PUBLIC: &str = "10.88.2.100";

/// A NAT the router applies to the client.
#[derive(Clone, Copy, Debug)]
enum Nat {
    Masquerade,
    MasqueradeRandom,
    MasqueradeFullyRandom,
    FullCone,
}

impl Net {
    /// Client 10.88.1.2 behind a router (10.88.1.1 | 10.88.2.1) applying `nat`; the server
    /// at 10.88.2.2 and 10.88.2.3.
    fn client_nat(nat: Nat) -> Net {
        let net = Net::routed(
            ("10.88.1.2/24", &["10.88.1.1/24"]),
            (&["10.88.2.1/24"], &["10.88.2.2/24", "10.88.2.3/24"]),
        );
        let chains = "add table ip nat; \
             add chain ip nat pre { type nat hook prerouting priority dstnat; }; \
             add chain ip nat post { type nat hook postrouting priority srcnat; }; ";
        let rules = match nat {
            Nat::Masquerade => "add rule ip nat post oifname \"r1\" masquerade".to_owned(),
            Nat::MasqueradeRandom => {
                "add rule ip nat post oifname \"r1\" masquerade random".to_owned()
            }
            Nat::MasqueradeFullyRandom => {
                "add rule ip nat post oifname \"r1\" masquerade fully-random".to_owned()
            }
            Nat::FullCone => {
                // The router answers for the client's public address (ARP) and maps it 1:1.
                net.router()
                    .ip(&["addr", "add", &format!("{CLIENT_PUBLIC}/32"), "dev", "r1"]);
                format!(
                    "add rule ip nat pre iifname \"r1\" ip daddr {CLIENT_PUBLIC} dnat to {CLIENT}; \
                     add rule ip nat post oifname \"r1\" ip saddr {CLIENT} snat to {CLIENT_PUBLIC}"
                )
            }
        };
        nft(net.router(), &format!("{chains}{rules}"));
        net
    }
}

/// What each NAT must be found to be.
struct Expected {
    /// The probe's `nat` step detail.
    probe: &'static str,
    /// turnutils_natdiscovery's mapping and filtering lines.
    coturn: [&'static str; 2],
}

fn expected(nat: Nat) -> Expected {
    match nat {
        Nat::Masquerade => Expected {
            probe: "endpoint-independent mapping (one public address for every destination); \
                    address- and port-dependent filtering (only the exact address you sent to): \
                    direct connections usually work with ICE hole punching; keep TURN as the fallback",
            coturn: [
                "NAT with Endpoint Independent Mapping!",
                "NAT with Address and Port Dependent Filtering!",
            ],
        },
        Nat::MasqueradeRandom | Nat::MasqueradeFullyRandom => Expected {
            probe: "address- and port-dependent mapping (a \"symmetric NAT\"); \
                    address- and port-dependent filtering (only the exact address you sent to): \
                    direct peer-to-peer connections usually fail from here: WebRTC needs the TURN relay",
            coturn: [
                "NAT with Address and Port Dependent Mapping!",
                "NAT with Address and Port Dependent Filtering!",
            ],
        },
        Nat::FullCone => Expected {
            probe: "endpoint-independent mapping (one public address for every destination); \
                    endpoint-independent filtering (anyone may send to the mapping): \
                    direct peer-to-peer connections work well from here",
            coturn: [
                "NAT with Endpoint Independent Mapping!",
                "NAT with Endpoint Independent Filtering!",
            ],
        },
    }
}

/// Behind `nat`: the probe passes every TURN step and names the NAT, and so does coturn's
/// natdiscovery, run at the same time from the same namespace.
fn nat_is_found(nat: Nat) {
    let net = Net::client_nat(nat);
    let cfg = ServerCfg {
        ip: SERVER,
        alternate: Some(ALTERNATE),
        ..ServerCfg::direct()
    };
    let _server = Server::start(&net.server, &cfg);
    let dir = TempDir::new();
    // -L binds one local socket for every test (each test of its own would be a new mapping).
    let args = ["-m", "-f", "-L", CLIENT, "-p", "3478", SERVER];
    let coturn = Proc::spawn(&net.client, &dir, "turnutils_natdiscovery", &args);

    // The TURN steps through the NAT, then the NAT itself: silence is a finding there, so
    // that run waits 1 s per test.
    let report = probe(
        &net,
        config(
            &turn(SERVER, 3478, "udp"),
            user(PASSWORD),
            Duration::from_secs(2),
        ),
    );
    let text = report.to_text();
    assert_healthy(&report);
    let binding = &report.step(Step::Binding).unwrap().detail;
    assert!(
        binding.contains(&format!("the local address is {CLIENT}:"))
            && binding.contains("a NAT is between you and the server"),
        "{text}"
    );
    let mut c = config(&format!("stun:{SERVER}:3478"), Credentials::None, SHORT);
    c.nat = true;
    let report = probe(&net, c);
    let text = report.to_text();
    let found = report.step(Step::Nat).unwrap();
    assert_eq!(found.status, Status::Pass, "{text}");
    assert_eq!(found.detail, expected(nat).probe, "{nat:?}: {text}");
    let (code, out) = coturn.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{nat:?}: {out}");
    let findings: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("NAT with") || l.starts_with("No NAT"))
        .collect();
    assert_eq!(findings, expected(nat).coturn, "{nat:?}:\n{out}");
    assert!(
        out.contains(&format!("Other addr: : {ALTERNATE}:3479")),
        "{nat:?}: OTHER-ADDRESS:\n{out}"
    );
}

#[test]
fn behind_masquerade_mapping_is_endpoint_independent_and_filtering_port_dependent() {
    nat_is_found(Nat::Masquerade);
}

#[test]
fn behind_masquerade_random_the_nat_is_symmetric() {
    nat_is_found(Nat::MasqueradeRandom);
}

#[test]
fn behind_masquerade_fully_random_the_nat_is_symmetric() {
    nat_is_found(Nat::MasqueradeFullyRandom);
}

#[test]
fn behind_a_static_one_to_one_nat_the_nat_is_a_full_cone() {
    nat_is_found(Nat::FullCone);
}
