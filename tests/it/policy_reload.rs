//! A tightened peer policy on reload (SIGHUP) revokes what it now refuses: the permission and
//! channel of a newly denied peer go at once, in both directions (issue 13, item 10).

use std::net::UdpSocket as StdUdpSocket;
use std::time::Duration;

use turnstone::core::Transport;
use turnstone::proto::{ChannelData, Class, Method, attr, error_code};

use crate::client::{Conn, TurnClient, build, channel_data, error_of, parse};
use crate::common::{Options, PASSWORD, TestServer, USER, bounded};

#[tokio::test]
async fn reload_denying_a_peer_removes_its_permission_and_channel_both_ways() {
    bounded(async {
        let server = TestServer::start();
        // The peer on 127.0.0.2, so it can be denied alone.
        let peer = StdUdpSocket::bind("127.0.0.2:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let conn = Conn::connect(&server, Transport::Udp).await;
        let mut client = TurnClient::new(conn, USER, PASSWORD);
        let (relayed, _, _) = client.allocate().await;
        client
            .request_ok(Method::CHANNEL_BIND, |w| {
                w.add_u32(attr::CHANNEL_NUMBER, 0x4000 << 16).unwrap();
                w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                    .unwrap();
            })
            .await;
        client
            .conn
            .send(&channel_data(0x4000, b"before", false))
            .await;
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"before"[..], relayed));
        peer.send_to(b"back", relayed).unwrap();
        let cd_bytes = client.conn.recv().await;
        assert_eq!(ChannelData::parse(&cd_bytes).unwrap().data(), b"back");

        server.reload(&Options {
            peers: "deny = [\"127.0.0.2/32\"]".to_string(),
            ..Options::default()
        });
        // Workers apply a reload asynchronously: wait until the channel is refused anew.
        let mut refused = false;
        for _ in 0..50 {
            let reply = client
                .request(Method::CHANNEL_BIND, |w| {
                    w.add_u32(attr::CHANNEL_NUMBER, 0x4001 << 16).unwrap();
                    w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                        .unwrap();
                })
                .await;
            // 403 only: binding a second channel to an already bound peer is a 400 under
            // the old policy too (RFC 8656 §12), which says nothing about the reload.
            let msg = parse(&reply);
            if msg.class() == Class::Error && error_of(&msg) == error_code::FORBIDDEN {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(refused, "the reloaded policy never applied");

        // Client → peer: the old channel is gone and a Send indication is refused.
        client
            .conn
            .send(&channel_data(0x4000, b"after", false))
            .await;
        let (_, send) = build(Method::SEND, Class::Indication, None, |w| {
            w.add_xor_address(attr::XOR_PEER_ADDRESS, peer_addr)
                .unwrap();
            w.add(attr::DATA, b"after-send").unwrap();
        });
        client.conn.send(&send).await;
        assert!(
            peer.recv_from(&mut buf).is_err(),
            "the denied peer got data"
        );
        // Peer → client: no permission any more.
        peer.send_to(b"late", relayed).unwrap();
        assert_eq!(
            client.conn.recv_within(Duration::from_millis(300)).await,
            None,
            "data from the denied peer reached the client"
        );
    })
    .await;
}
