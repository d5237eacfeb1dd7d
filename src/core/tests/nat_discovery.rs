//! RFC 5780 NAT behaviour discovery (§6, §7): OTHER-ADDRESS and RESPONSE-ORIGIN, answers sent
//! from the socket CHANGE-REQUEST names and to the RESPONSE-PORT, PADDING within the
//! amplification limit, and the answers of a server without an alternate address.

use std::net::SocketAddr;

use crate::core::reply::AMPLIFICATION_LIMIT;
use crate::core::{ClientAddr, FiveTuple, Handled, NatDiscovery, Settings, Transport};
use crate::proto::{Class, Method, attr};

use super::harness::{Attr, Harness, LISTENER, Resp, SOFTWARE, sa, settings};

/// The alternate IP and port beside [`LISTENER`] (127.0.0.1:3478).
const ALTERNATE: &str = "127.0.0.2:3479";

fn nat() -> NatDiscovery {
    NatDiscovery::new(LISTENER, sa(ALTERNATE)).unwrap()
}

fn discovering(nat: NatDiscovery) -> Harness {
    Harness::with_settings(Settings {
        nat_discovery: Some(nat),
        ..settings()
    })
}

/// A UDP client at `client` that reached the server at `server`.
fn udp(client: &str, server: SocketAddr) -> FiveTuple {
    FiveTuple {
        client: ClientAddr(sa(client)),
        server,
        transport: Transport::Udp,
    }
}

/// A Binding request carrying only `attrs` (no FINGERPRINT): as small as a client can make it.
fn bare(attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (ty, value) in attrs {
        body.extend(ty.to_be_bytes());
        body.extend((value.len() as u16).to_be_bytes());
        body.extend(*value);
        body.resize(body.len().div_ceil(4) * 4, 0);
    }
    let mut pkt = vec![0x00, 0x01];
    pkt.extend((body.len() as u16).to_be_bytes());
    pkt.extend(0x2112_A442u32.to_be_bytes());
    pkt.extend([5; 12]);
    pkt.extend(body);
    pkt
}

/// CHANGE-REQUEST with the change-IP and change-port flags (RFC 5780 §7.2).
fn change(ip: bool, port: bool) -> (u16, [u8; 4]) {
    let flags = (u8::from(ip) << 2) | (u8::from(port) << 1);
    (attr::CHANGE_REQUEST, [0, 0, 0, flags])
}

/// RESPONSE-PORT (RFC 5780 §7.5): the port, then two bytes of padding.
fn response_port(port: u16) -> (u16, [u8; 4]) {
    let [a, b] = port.to_be_bytes();
    (attr::RESPONSE_PORT, [a, b, 0, 0])
}

#[track_caller]
fn assert_within_limit(request: &[u8], resp: &Resp) {
    assert!(
        resp.0.len() <= AMPLIFICATION_LIMIT * request.len(),
        "{} bytes answered with {} bytes",
        request.len(),
        resp.0.len()
    );
}

#[test]
fn binding_to_each_of_the_four_sockets_carries_other_address_and_response_origin() {
    let n = nat();
    let mut h = discovering(n);
    let [pp, pa, ap, aa] = n.addresses();
    for (arrival, other) in [(pp, aa), (pa, ap), (ap, pa), (aa, pp)] {
        let ft = udp("192.0.2.50:40000", arrival);
        let mut c = Harness::user_on(ft, "alice");
        let req = c.build(Method::BINDING, &[]);
        let (resp, local, to) = h.exchange_routed(ft, &req);
        let resp = resp.ok();
        assert_eq!(
            (local, to),
            (arrival, ft.client.addr()),
            "answered in place"
        );
        assert_eq!(resp.xor(attr::XOR_MAPPED_ADDRESS), Some(ft.client.addr()));
        assert_eq!(resp.address(attr::OTHER_ADDRESS), Some(other));
        assert_eq!(resp.address(attr::RESPONSE_ORIGIN), Some(arrival));
        assert_eq!(resp.attr_types().last(), Some(&attr::FINGERPRINT));
        assert_within_limit(&req, &resp);
    }
}

#[test]
fn change_request_is_answered_from_the_socket_its_flags_name() {
    let n = nat();
    let mut h = discovering(n);
    let [pp, pa, ap, aa] = n.addresses();
    let cases = [
        (pp, (false, false), pp),
        (pp, (true, false), ap),
        (pp, (false, true), pa),
        (pp, (true, true), aa),
        (aa, (true, false), pa),
        (aa, (false, true), ap),
        (aa, (true, true), pp),
        (pa, (true, true), ap),
    ];
    for (arrival, (ip, port), origin) in cases {
        let ft = udp("192.0.2.50:40000", arrival);
        let (ty, value) = change(ip, port);
        let req = bare(&[(ty, &value)]);
        let handled = h.input(ft, &req).0;
        let (resp, local, to) = h.exchange_routed(ft, &req);
        let resp = resp.ok();
        assert_eq!(local, origin, "from {arrival} with flags {ip}/{port}");
        assert_eq!(to, ft.client.addr());
        if origin == arrival {
            assert!(matches!(handled, Handled::Reply(_)), "{handled:?}");
        } else {
            assert!(matches!(handled, Handled::ReplyFrom { .. }), "{handled:?}");
        }
        assert_eq!(resp.address(attr::RESPONSE_ORIGIN), Some(origin));
        // OTHER-ADDRESS is relative to where the request arrived (RFC 5780 §7.4).
        assert_eq!(resp.address(attr::OTHER_ADDRESS), n.other(arrival));
        assert_eq!(resp.xor(attr::XOR_MAPPED_ADDRESS), Some(ft.client.addr()));
        assert_within_limit(&req, &resp);
    }
    assert_eq!(h.server.counters().requests_ok, 2 * cases.len() as u64);
}

#[test]
fn response_port_sends_the_answer_to_that_port_of_the_clients_ip() {
    let mut h = discovering(nat());
    let ft = udp("192.0.2.50:40000", LISTENER);
    let (ty, value) = response_port(40123);
    let req = bare(&[(ty, &value)]);
    let (resp, local, to) = h.exchange_routed(ft, &req);
    let resp = resp.ok();
    assert_eq!(local, LISTENER);
    assert_eq!(
        to,
        sa("192.0.2.50:40123"),
        "the client's IP, never another host"
    );
    // The mapped address is still where the request came from.
    assert_eq!(resp.xor(attr::XOR_MAPPED_ADDRESS), Some(ft.client.addr()));
    // With CHANGE-REQUEST too: another socket, still the client's IP.
    let (cty, cvalue) = change(true, true);
    let req = bare(&[(ty, &value), (cty, &cvalue)]);
    let (resp, local, to) = h.exchange_routed(ft, &req);
    assert_eq!((local, to), (sa(ALTERNATE), sa("192.0.2.50:40123")));
    assert_within_limit(&req, &resp);
    // RESPONSE-PORT naming the source port is a plain reply.
    let (ty, value) = response_port(40000);
    let handled = h.input(ft, &bare(&[(ty, &value)])).0;
    assert!(matches!(handled, Handled::Reply(_)), "{handled:?}");
}

#[test]
fn malformed_change_request_or_response_port_and_port_zero_are_answered_400_in_place() {
    let mut h = discovering(nat());
    let ft = udp("192.0.2.50:40000", LISTENER);
    let cases: [(u16, &[u8]); 4] = [
        (attr::CHANGE_REQUEST, &[0, 0, 6]),
        (attr::RESPONSE_PORT, &[0x9c, 0x40]),
        (attr::RESPONSE_PORT, &[0x9c, 0x40, 0, 0, 0, 0, 0, 0]),
        (attr::RESPONSE_PORT, &[0, 0, 0, 0]),
    ];
    for (ty, value) in cases {
        let req = bare(&[(ty, value)]);
        let (resp, local, to) = h.exchange_routed(ft, &req);
        resp.err(400);
        assert_eq!(
            (local, to),
            (ft.server, ft.client.addr()),
            "{ty:#06x} {value:?}"
        );
        assert_within_limit(&req, &resp);
    }
}

#[test]
fn padding_with_response_port_is_answered_400() {
    let mut h = discovering(nat());
    let ft = udp("192.0.2.50:40000", LISTENER);
    let (ty, value) = response_port(40123);
    let req = bare(&[(ty, &value), (attr::PADDING, &[0; 64])]);
    let (resp, local, to) = h.exchange_routed(ft, &req);
    resp.err(400);
    assert_eq!((local, to), (ft.server, ft.client.addr()));
    assert!(resp.reason().contains("PADDING"), "{}", resp.reason());
}

#[test]
fn a_request_padded_to_the_mtu_gets_an_answer_padded_to_the_mtu() {
    let mut h = discovering(nat());
    let ft = udp("192.0.2.50:40000", LISTENER);
    let (ty, value) = change(true, true);
    let req = bare(&[(ty, &value), (attr::PADDING, &[0; 1500])]);
    let (resp, local, _) = h.exchange_routed(ft, &req);
    let resp = resp.ok();
    assert_eq!(local, sa(ALTERNATE));
    assert_eq!(resp.get(attr::PADDING).map(|p| p.len()), Some(1500));
    assert_eq!(resp.msg().software(), Some(SOFTWARE));
    assert_eq!(resp.attr_types().last(), Some(&attr::FINGERPRINT));
    assert_within_limit(&req, &resp);
}

#[test]
fn a_small_padded_request_gets_a_shorter_padding_within_the_limit() {
    let v6 = NatDiscovery::new(sa("[::1]:3478"), sa("[::2]:3479")).unwrap();
    for (n, client) in [(nat(), "192.0.2.50:40000"), (v6, "[2001:db8::50]:40000")] {
        let mut h = discovering(n);
        let ft = udp(client, n.primary());
        for padding in [0, 4, 40, 200] {
            let req = bare(&[(attr::PADDING, &vec![0; padding])]);
            let (resp, _, _) = h.exchange_routed(ft, &req);
            let resp = resp.ok();
            assert_within_limit(&req, &resp);
            let got = resp
                .get(attr::PADDING)
                .expect("PADDING is always included")
                .len();
            assert!(got < 1500 && got % 4 == 0, "{got}");
            assert_eq!(resp.address(attr::OTHER_ADDRESS), n.other(ft.server));
            // The padding fills the room: less than one more word is left.
            assert!(
                resp.0.len() + 4 > AMPLIFICATION_LIMIT * req.len(),
                "{} of {}",
                resp.0.len(),
                AMPLIFICATION_LIMIT * req.len()
            );
        }
    }
}

#[test]
fn a_bare_ipv6_request_sheds_response_origin_rather_than_exceed_the_limit() {
    let n = NatDiscovery::new(sa("[::1]:3478"), sa("[::2]:3479")).unwrap();
    let mut h = discovering(n);
    let ft = udp("[2001:db8::50]:40000", n.primary());
    let req = bare(&[]);
    assert_eq!(req.len(), 20);
    let (resp, _, _) = h.exchange_routed(ft, &req);
    assert_within_limit(&req, &resp);
    assert_eq!(resp.address(attr::OTHER_ADDRESS), Some(n.alternate()));
    assert_eq!(resp.get(attr::RESPONSE_ORIGIN), None);
    assert_eq!(resp.attr_types().last(), Some(&attr::FINGERPRINT));
    // Any attribute makes room for both (RFC 5780 §6.1 asks for both).
    let (ty, value) = change(false, false);
    let req = bare(&[(ty, &value)]);
    let (resp, _, _) = h.exchange_routed(ft, &req);
    assert_within_limit(&req, &resp);
    assert_eq!(resp.address(attr::RESPONSE_ORIGIN), Some(n.primary()));
    // A bare IPv4 request has room for everything but SOFTWARE.
    let mut h = discovering(nat());
    let ft = udp("192.0.2.50:40000", LISTENER);
    let (resp, _, _) = h.exchange_routed(ft, &bare(&[]));
    assert_eq!(resp.0.len(), 64);
    assert_eq!(resp.address(attr::RESPONSE_ORIGIN), Some(LISTENER));
    assert_eq!(resp.msg().software(), None);
}

#[test]
fn a_tcp_client_is_answered_as_by_a_server_without_an_alternate_address() {
    let mut h = discovering(nat());
    let ft = FiveTuple {
        transport: Transport::Tcp,
        ..udp("192.0.2.50:40000", LISTENER)
    };
    let plain = h.exchange(ft, &bare(&[])).ok();
    assert_eq!(plain.get(attr::OTHER_ADDRESS), None);
    assert_eq!(plain.get(attr::RESPONSE_ORIGIN), None);
    let (ty, value) = change(true, false);
    let resp = h.exchange(ft, &bare(&[(ty, &value)]));
    resp.err(420);
    let unknown: Vec<u16> = resp.msg().unknown_attributes().collect();
    assert_eq!(unknown, [attr::CHANGE_REQUEST]);
    assert_eq!(resp.reason(), "CHANGE-REQUEST works over UDP only");
    // RESPONSE-PORT cannot move an answer off the connection: ignored, as before.
    let (ty, value) = response_port(40123);
    h.exchange(ft, &bare(&[(ty, &value)])).ok();
}

#[test]
fn a_udp_listener_outside_the_four_is_answered_without_discovery() {
    let mut h = discovering(nat());
    let ft = udp("192.0.2.50:40000", sa("127.0.0.1:5000"));
    let resp = h.exchange(ft, &bare(&[])).ok();
    assert_eq!(resp.get(attr::OTHER_ADDRESS), None);
    let (ty, value) = change(false, true);
    h.exchange(ft, &bare(&[(ty, &value)])).err(420);
}

#[test]
fn without_an_alternate_address_binding_is_answered_as_before() {
    let mut h = Harness::new();
    let mut c = h.client("alice");
    let resp = h.send(&mut c, Method::BINDING, &[]).ok();
    assert_eq!(resp.get(attr::OTHER_ADDRESS), None);
    assert_eq!(resp.get(attr::RESPONSE_ORIGIN), None);
    for (ip, port) in [(true, false), (false, true), (true, true)] {
        let (ty, value) = change(ip, port);
        let resp = h.send(&mut c, Method::BINDING, &[Attr::Raw(ty, value.to_vec())]);
        resp.err(420);
        let unknown: Vec<u16> = resp.msg().unknown_attributes().collect();
        assert_eq!(unknown, [attr::CHANGE_REQUEST]);
    }
    // No flags set: a plain answer (coturn and others accept an empty CHANGE-REQUEST).
    let (ty, value) = change(false, false);
    h.send(&mut c, Method::BINDING, &[Attr::Raw(ty, value.to_vec())])
        .ok();
    // RESPONSE-PORT and PADDING are understood but not acted on: answered in place.
    let (ty, value) = response_port(40123);
    let req = c.build(
        Method::BINDING,
        &[
            Attr::Raw(ty, value.to_vec()),
            Attr::Raw(attr::PADDING, vec![0; 8]),
        ],
    );
    let (resp, local, to) = h.exchange_routed(c.ft, &req);
    assert_eq!(resp.class(), Class::Success);
    assert_eq!((local, to), (c.ft.server, c.ft.client.addr()));
    assert_eq!(resp.get(attr::PADDING), None);
}
