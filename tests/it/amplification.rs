//! Over real UDP sockets, unauthenticated requests get answers of at most 4x their size (no
//! reflection amplifier for spoofed sources): Binding on IPv4 and IPv6, and the 401 challenge.

use tokio::net::UdpSocket;
use turnstone::core::Transport;
use turnstone::proto::{Class, attr};

use crate::client::{Conn, error_of, parse};
use crate::common::{TestServer, bounded, random_tid};

/// A request of `method` with no attributes but REQUESTED-TRANSPORT when `transport`.
fn bare(method: u16, transport: bool) -> Vec<u8> {
    let mut pkt = method.to_be_bytes().to_vec();
    pkt.extend(if transport { 8u16 } else { 0 }.to_be_bytes());
    pkt.extend(0x2112_A442u32.to_be_bytes());
    pkt.extend(random_tid().0);
    if transport {
        pkt.extend([0x00, 0x19, 0x00, 0x04, 17, 0, 0, 0]);
    }
    pkt
}

async fn answer(conn: &mut Conn, request: &[u8]) -> Vec<u8> {
    conn.send(request).await;
    let reply = conn.recv().await;
    assert!(
        reply.len() <= 4 * request.len(),
        "{} bytes answered with {} bytes",
        request.len(),
        reply.len()
    );
    reply
}

#[tokio::test]
async fn unauthenticated_binding_and_allocate_get_at_most_four_times_their_size() {
    bounded(async {
        let server = TestServer::start();
        let mut conn = Conn::connect(&server, Transport::Udp).await;
        let reply = answer(&mut conn, &bare(0x0001, false)).await;
        assert_eq!(parse(&reply).class(), Class::Success);
        // The test realm has 14 characters, more than the 12 the 20-byte case is sized for,
        // so only the Allocate a real client sends (with REQUESTED-TRANSPORT) is checked.
        let reply = answer(&mut conn, &bare(0x0003, true)).await;
        let msg = parse(&reply);
        assert_eq!(error_of(&msg), 401);
        assert!(msg.get(attr::NONCE).is_some() && msg.get(attr::REALM).is_some());
        assert_eq!(msg.software(), None);

        let sock = UdpSocket::bind("[::1]:0").await.unwrap();
        let mut v6 = Conn::Udp {
            sock,
            server: server.udp6(),
        };
        let reply = answer(&mut v6, &bare(0x0001, false)).await;
        assert_eq!(parse(&reply).class(), Class::Success);
    })
    .await;
}
