//! A worker's UDP listening socket: recvmmsg in, the core in the middle, sendmmsg out.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::rc::Rc;

use tokio::io::Interest;

use crate::core::{FiveTuple, Handled, Transport};

use super::admission::is_stun_request;
use super::clock;
use super::mmsg::RecvBatch;
use super::worker::{BATCH, MAX_DATAGRAM, UdpOut, Worker};

/// Serves one UDP listening socket until the task is dropped.
pub(crate) async fn serve(worker: Rc<Worker>, out: Rc<UdpOut>, local: SocketAddr) {
    let socket = Rc::clone(&out.socket);
    let mut rx = RecvBatch::new(BATCH, MAX_DATAGRAM);
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        // A short batch means the queue is empty: report WouldBlock to tokio so it clears the
        // readiness now instead of after one more recvmmsg that would only see EAGAIN. A
        // datagram arriving later raises a new edge, so no wake-up is lost.
        let mut received = 0;
        let result = socket.try_io(Interest::READABLE, || {
            received = rx.recv(socket.as_fd())?;
            if received < BATCH {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && received > 0 => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(target: "turnstone::io", %local, error = %e, "udp receive error");
                continue;
            }
        }
        let n = received;
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
                if out.batch.borrow_mut().next_buf().is_none() {
                    out.flush();
                }
                let mut batch = out.batch.borrow_mut();
                let Some(buf) = batch.next_buf() else {
                    continue;
                };
                match server.handle_client(now, five_tuple, pkt, buf, &mut *relays) {
                    Handled::Reply(len) => batch.commit(len, from),
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
        out.flush();
        worker.drain_commands();
    }
}
