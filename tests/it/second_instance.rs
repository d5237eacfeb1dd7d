//! A second Turnstone (or any other process) on a listener address is refused at start,
//! instead of silently joining the first one's SO_REUSEPORT group and taking its traffic.

use std::net::SocketAddr;
use std::sync::Arc;

use turnstone::config::Config;
use turnstone::core::Transport;
use turnstone::io::{StartError, UsageSink};

use crate::common::{TempDir, TestServer};

/// Starts a two-worker server with one listener of `protocol` on `address`.
fn start_on(
    protocol: &str,
    address: SocketAddr,
) -> Result<turnstone::io::RunningServer, StartError> {
    let dir = TempDir::new();
    let text = format!(
        "[server]\nworkers = 2\n[[listen]]\nprotocol = \"{protocol}\"\naddress = \"{address}\"\n\
         [admin]\nenabled = false\n[relay]\naddress = \"127.0.0.1\"\nports = \"40000-49999\"\n"
    );
    let config = Config::from_toml(&text, &dir.0).unwrap();
    let noop: UsageSink = Arc::new(|_| {});
    let spec = config
        .server_spec(Arc::new(config.credential_store()), noop)
        .unwrap();
    turnstone::io::start(spec)
}

fn assert_in_use(result: Result<turnstone::io::RunningServer, StartError>, address: SocketAddr) {
    match result {
        Ok(_) => panic!("a second server started on {address} beside the first"),
        Err(e @ StartError::InUse { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&address.to_string()), "{text}");
            assert!(text.contains("another turnstone"), "{text}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
    }
}

#[test]
fn a_second_server_on_the_udp_or_tcp_address_of_a_running_one_is_refused() {
    let first = TestServer::start();
    assert_in_use(start_on("udp", first.udp()), first.udp());
    assert_in_use(start_on("udp", first.udp6()), first.udp6());
    assert_in_use(start_on("tcp", first.tcp()), first.tcp());
    assert_in_use(start_on("tcp", first.tls()), first.tls());
    // The first one is unharmed: a fresh address still works for a second server.
    let other = start_on("udp", "127.0.0.1:0".parse().unwrap()).unwrap();
    assert_ne!(other.address(Transport::Udp), Some(first.udp()));
}

#[test]
fn a_server_is_refused_on_an_address_a_plain_socket_of_another_program_holds() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    assert_in_use(start_on("udp", addr), addr);
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    assert_in_use(start_on("tcp", addr), addr);
}

#[test]
fn a_stopped_server_frees_its_addresses_for_the_next_one() {
    let first = start_on("tcp", "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = first.address(Transport::Tcp).unwrap();
    first.shutdown();
    let second = start_on("tcp", addr).unwrap();
    assert_eq!(second.address(Transport::Tcp), Some(addr));
}
