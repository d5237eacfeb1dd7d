//! Reload and drain through the `RunningServer` API, as SIGHUP and SIGTERM use them: secrets
//! change for new allocations only, draining refuses new ones (508, or 300 to the alternate
//! server), existing allocations keep relaying, and shutdown ends them with a usage record.

use std::time::Duration;

use turnstone::core::{EndReason, Transport};
use turnstone::proto::{Class, attr, error_code};

use crate::client::{Conn, error_of, parse};
use crate::common::{EchoPeer, Options, SECRET, TestServer, bounded, rest_credentials_signed};
use crate::ops_limits::{allocate_error, channel_client, echo_once, try_allocate};

/// The secret the server is reloaded with.
const NEW_SECRET: &str = "it-rotated-secret";

#[tokio::test]
async fn a_reload_with_a_new_secret_keeps_old_allocations_and_authenticates_new_ones_with_it() {
    bounded(async {
        let server = TestServer::start();
        let peer = EchoPeer::start();
        let (old_user, old_password) = rest_credentials_signed(SECRET, "before");
        let mut old = channel_client(&server, &old_user, &old_password, peer.addr).await;
        echo_once(&mut old, 100).await;

        server.reload(&Options {
            secrets: vec![NEW_SECRET.to_string()],
            ..Options::default()
        });
        // Workers apply the reload asynchronously: wait until the new secret is accepted.
        let (new_user, new_password) = rest_credentials_signed(NEW_SECRET, "after");
        let mut accepted = false;
        for _ in 0..40 {
            let mut conn = Conn::connect(&server, Transport::Udp).await;
            let reply = try_allocate(&mut conn, &new_user, &new_password, None).await;
            let msg = parse(&reply);
            if msg.class() == Class::Success {
                accepted = true;
                break;
            }
            assert_eq!(error_of(&msg), error_code::UNAUTHENTICATED);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            accepted,
            "a credential from the new secret was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A full client as well: Allocate, ChannelBind, relay.
        let mut new = channel_client(&server, &new_user, &new_password, peer.addr).await;
        echo_once(&mut new, 100).await;

        let (user, password) = rest_credentials_signed(SECRET, "late");
        for _ in 0..4 {
            assert_eq!(
                allocate_error(&server, &user, &password).await,
                error_code::UNAUTHENTICATED,
                "old secret after the reload"
            );
        }
        for _ in 0..5 {
            echo_once(&mut old, 100).await;
        }
        assert_eq!(server.allocations(), 3);
    })
    .await;
}

#[tokio::test]
async fn draining_refuses_new_allocations_with_508_while_existing_ones_relay_until_shutdown() {
    bounded(async {
        let mut server = TestServer::start();
        let peer = EchoPeer::start();
        let (user, password) = rest_credentials_signed(SECRET, "drained");
        let mut client = channel_client(&server, &user, &password, peer.addr).await;
        let local = client.conn.local_addr();
        for _ in 0..3 {
            echo_once(&mut client, 100).await;
        }

        server.drain();
        let mut refused = None;
        for _ in 0..40 {
            let code = allocate_error_or_success(&server).await;
            if code != Some(200) {
                refused = code;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(refused, Some(error_code::INSUFFICIENT_CAPACITY));
        for _ in 0..4 {
            assert_eq!(
                allocate_error_or_success(&server).await,
                Some(error_code::INSUFFICIENT_CAPACITY)
            );
        }
        for _ in 0..7 {
            echo_once(&mut client, 200).await;
        }
        let alive = server.allocations();

        server.shutdown();
        let record = server
            .wait_usage(|r| r.five_tuple.client.addr() == local)
            .await;
        assert_eq!(record.reason, EndReason::Shutdown);
        assert_eq!(record.reason.name(), "shutdown");
        assert_eq!(record.user, user);
        let t = record.traffic;
        let bytes = 3 * 100 + 7 * 200;
        assert_eq!((t.packets_to_peer, t.bytes_to_peer), (10, bytes), "{t:?}");
        assert_eq!(
            (t.packets_to_client, t.bytes_to_client),
            (10, bytes),
            "{t:?}"
        );
        // Allocations made before the drain took effect count too.
        assert!(alive >= 1, "allocations() = {alive} while draining");
    })
    .await;
}

/// The code of a static-user Allocate on a new 5-tuple: `Some(200)` on success.
async fn allocate_error_or_success(server: &TestServer) -> Option<u16> {
    let mut conn = Conn::connect(server, Transport::Udp).await;
    let reply = try_allocate(
        &mut conn,
        crate::common::USER,
        crate::common::PASSWORD,
        None,
    )
    .await;
    let msg = parse(&reply);
    match msg.class() {
        Class::Success => Some(200),
        _ => msg.error_code().map(|e| e.unwrap().code),
    }
}

#[tokio::test]
async fn draining_with_an_alternate_server_answers_300_with_alternate_server() {
    bounded(async {
        let alternate: std::net::SocketAddr = "203.0.113.8:3478".parse().unwrap();
        let server = TestServer::start_with(&Options {
            server: format!("alternate_server = \"{alternate}\""),
            ..Options::default()
        });
        let peer = EchoPeer::start();
        let mut client = channel_client(
            &server,
            crate::common::USER,
            crate::common::PASSWORD,
            peer.addr,
        )
        .await;
        server.drain();
        let mut answer = None;
        for _ in 0..40 {
            let mut conn = Conn::connect(&server, Transport::Udp).await;
            let (user, password) = rest_credentials_signed(SECRET, "moved");
            let reply = try_allocate(&mut conn, &user, &password, None).await;
            let msg = parse(&reply);
            if msg.class() == Class::Error {
                answer = Some((
                    error_of(&msg),
                    msg.address(attr::ALTERNATE_SERVER).map(|a| a.unwrap()),
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            answer,
            Some((error_code::TRY_ALTERNATE, Some(alternate))),
            "RFC 8489 §10: 300 Try Alternate with ALTERNATE-SERVER"
        );
        echo_once(&mut client, 100).await;
    })
    .await;
}
