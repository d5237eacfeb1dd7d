//! A worker's UDP listening socket: recvmmsg in, the core in the middle, sendmmsg out.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::core::{FiveTuple, Handled, Transport};

use super::admission::is_stun_request;
use super::clock;
use super::mmsg::{RecvBatch, SendBatch};
use super::worker::Worker;

const BATCH: usize = 32;
/// Largest client datagram handled; longer ones are truncated and dropped.
const MAX_DATAGRAM: usize = 4096;

/// Serves one UDP listening socket until the task is dropped.
pub(crate) async fn serve(worker: Rc<Worker>, socket: Rc<UdpSocket>, local: SocketAddr) {
    let mut rx = RecvBatch::new(BATCH, MAX_DATAGRAM);
    let mut tx = SendBatch::new(BATCH, MAX_DATAGRAM);
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        let n = match socket.try_io(Interest::READABLE, || rx.recv(socket.as_fd())) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(target: "turnstone::io", %local, error = %e, "udp receive error");
                continue;
            }
        };
        let now = clock::now();
        {
            let mut server = worker.server.borrow_mut();
            let mut relays = worker.relays.borrow_mut();
            for i in 0..n {
                let (pkt, from) = rx.datagram(i);
                if pkt.is_empty()
                    || (is_stun_request(pkt) && !worker.shared.admission.allow(from.ip()))
                {
                    continue;
                }
                let five_tuple = FiveTuple {
                    client: from,
                    server: local,
                    transport: Transport::Udp,
                };
                let Some(out) = tx.next_buf() else {
                    break;
                };
                match server.handle_client(now, five_tuple, pkt, out, &mut *relays) {
                    Handled::Reply(len) => tx.commit(len, from),
                    Handled::Forward {
                        relay,
                        peer,
                        payload,
                    } => {
                        relays.send(relay, &pkt[payload], peer);
                    }
                    Handled::Drop(_) => {}
                }
            }
        }
        flush(&socket, &mut tx).await;
        worker.drain_commands();
    }
}

async fn flush(socket: &UdpSocket, tx: &mut SendBatch) {
    for _ in 0..2 {
        if tx.is_empty() {
            return;
        }
        match socket.try_io(Interest::WRITABLE, || tx.flush(socket.as_fd())) {
            Ok(_) => return,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.writable().await.is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // Still blocked: UDP may drop; start the next batch empty.
    tx.clear();
}
