//! Interop: the webrtc-rs `stun` 0.17 client gets its XOR-MAPPED-ADDRESS from Turnstone.

use std::net::SocketAddr;
use std::sync::Arc;

use stun::agent::TransactionId;
use stun::client::ClientBuilder;
use stun::message::{BINDING_REQUEST, Getter, Message};
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;

use crate::common::{REPLY_TIMEOUT, TestServer, bounded};

#[tokio::test]
async fn stun_crate_client_gets_its_address_as_xor_mapped_address_over_udp() {
    bounded(async {
        let server = TestServer::start();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(server.udp()).await.unwrap();
        let local = sock.local_addr().unwrap();
        let mut client = ClientBuilder::new()
            .with_conn(Arc::new(sock))
            .build()
            .unwrap();

        let mut msg = Message::new();
        msg.build(&[Box::<TransactionId>::default(), Box::new(BINDING_REQUEST)])
            .unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        client.send(&msg, Some(Arc::new(tx))).await.unwrap();
        let event = tokio::time::timeout(REPLY_TIMEOUT, rx.recv())
            .await
            .expect("no STUN response")
            .unwrap();
        let response = event.event_body.unwrap();
        let mut xor = XorMappedAddress::default();
        xor.get_from(&response).unwrap();
        assert_eq!(SocketAddr::new(xor.ip, xor.port), local);
        client.close().await.unwrap();
    })
    .await;
}
