//! TLS clients after the handshake meet Turnstone's own record layer (`io/tls_records.rs`):
//! key updates are followed; whatever else it cannot carry on (a forged, oversized or
//! truncated record) ends that connection, cleanly, and nothing else.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::client::binding_request;
use crate::common::{REPLY_TIMEOUT, TestServer, bounded};

async fn tls_client(server: &TestServer) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.tls()).await.unwrap();
    server
        .tls_connector()
        .connect(TestServer::tls_name(), tcp)
        .await
        .unwrap()
}

/// Whether a Binding request is answered on `tls`.
async fn answered(tls: &mut TlsStream<TcpStream>) -> bool {
    if tls.write_all(&binding_request().1).await.is_err() || tls.flush().await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(REPLY_TIMEOUT, tls.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Whether the server closed the connection within `within` (end of stream or a reset).
async fn closed_by_server(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A TLS 1.3 KeyUpdate (RFC 8446 §4.6.3) asking for ours: both sides move to their next keys
/// and the connection carries on (rustls's key schedule is kept after the handoff).
#[tokio::test]
async fn key_updates_are_followed_and_the_connection_carries_on() {
    bounded(async {
        let server = TestServer::start();
        let mut tls = tls_client(&server).await;
        assert!(answered(&mut tls).await);
        for _ in 0..3 {
            tls.get_mut().1.refresh_traffic_keys().unwrap();
            assert!(answered(&mut tls).await, "answered under the next keys");
        }
    })
    .await;
}

#[tokio::test]
async fn forged_and_oversized_records_close_the_connection() {
    bounded(async {
        let server = TestServer::start();
        let forged: Vec<u8> = [&[23u8, 3, 3, 0, 40][..], &[0x5A; 40]].concat();
        let oversized = [23u8, 3, 3, 0xFF, 0xFF];
        let truncated_tag = [23u8, 3, 3, 0, 4, 1, 2, 3, 4];
        for garbage in [&forged[..], &oversized, &truncated_tag] {
            let mut tls = tls_client(&server).await;
            assert!(answered(&mut tls).await);
            let (tcp, _) = tls.get_mut();
            tcp.write_all(garbage).await.unwrap();
            assert!(
                closed_by_server(tcp, REPLY_TIMEOUT).await,
                "{garbage:?} left the connection open"
            );
        }
        let mut other = tls_client(&server).await;
        assert!(answered(&mut other).await, "other clients are served");
    })
    .await;
}

/// A client whose first request follows its Finished in the same segment, with that request's
/// record cut in two by the network: the handshake must stop reading at the Finished, and the
/// record layer must put the two halves together.
#[tokio::test]
async fn a_first_record_split_across_segments_right_after_the_handshake_is_served() {
    use std::io::{Read, Write};
    bounded(async {
        let server = TestServer::start();
        let config = std::sync::Arc::clone(server.tls_connector().config());
        let addr = server.tls();
        let reply = tokio::task::spawn_blocking(move || {
            let mut conn = rustls::ClientConnection::new(config, TestServer::tls_name()).unwrap();
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
            // Everything up to the client's Finished, which rustls then holds.
            while conn.is_handshaking() {
                let mut out = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut out).unwrap();
                }
                tcp.write_all(&out).unwrap();
                conn.read_tls(&mut tcp).unwrap();
                conn.process_new_packets().unwrap();
            }
            // The Finished and the request together, the request's record cut in two.
            let (_, request) = binding_request();
            conn.writer().write_all(&request).unwrap();
            let mut out = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut out).unwrap();
            }
            let cut = out.len() - 10;
            tcp.write_all(&out[..cut]).unwrap();
            #[allow(
                clippy::disallowed_methods,
                reason = "a blocking client thread, not a worker: the pause splits the segment"
            )]
            std::thread::sleep(Duration::from_millis(200));
            tcp.write_all(&out[cut..]).unwrap();
            let mut reply = [0u8; 512];
            loop {
                conn.read_tls(&mut tcp).unwrap();
                conn.process_new_packets().unwrap();
                match conn.reader().read(&mut reply) {
                    Ok(n) if n > 0 => return reply[..n].to_vec(),
                    _ => continue,
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(
            crate::client::parse(&reply).class(),
            turnstone::proto::Class::Success
        );
    })
    .await;
}
