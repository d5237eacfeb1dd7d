//! [`Harness`] steps for RFC 6062 TCP relays: a TCP allocation, Connect confirmed by the
//! scripted IO side, peers connecting in, ConnectionBind on a new client connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::client::{Attr, Client, Resp, transport};
use super::harness::Harness;
use crate::core::{
    Arrived, ConnectError, ConnectionId, DropReason, FiveTuple, PeerAddr, Transport,
};
use crate::proto::{Method, attr};

/// REQUESTED-TRANSPORT TCP (RFC 6062 §6.1).
pub fn tcp() -> Attr {
    transport(6)
}

/// CONNECTION-ID (RFC 6062 §6.2.1).
pub fn connection_id(id: ConnectionId) -> Attr {
    Attr::Raw(attr::CONNECTION_ID, id.0.to_be_bytes().to_vec())
}

impl Harness {
    /// A client of a static user on a fresh TCP connection from 127.0.0.1.
    pub fn tcp_client(&mut self, user: &str) -> Client {
        let ft = self.five_tuple(IpAddr::V4(Ipv4Addr::LOCALHOST), Transport::Tcp);
        Self::user_on(ft, user)
    }

    /// A TCP Allocate (RFC 6062 §5.1) that must succeed; returns the relayed address.
    #[track_caller]
    pub fn allocate_tcp(&mut self, c: &mut Client) -> SocketAddr {
        self.request(c, Method::ALLOCATE, &[tcp()]).ok().relayed()
    }

    /// A Connect to `peer`, challenged as needed; `None` when it waits for IO (the usual
    /// case: then [`Harness::confirm_connect`] answers it), else the immediate error.
    #[track_caller]
    pub fn connect(&mut self, c: &mut Client, peer: SocketAddr) -> Option<Resp> {
        let attrs = [super::client::peer(peer)];
        let pkt = c.build(Method::CONNECT, &attrs);
        let (handled, out) = self.input(c.ft, &pkt);
        match handled {
            crate::core::Handled::Drop(DropReason::Pending) => None,
            crate::core::Handled::Reply(n) => {
                let resp = Resp(out[..n].to_vec());
                if c.learn(&resp) {
                    self.connect(c, peer)
                } else {
                    Some(resp)
                }
            }
            other => panic!("unexpected outcome of a Connect: {other:?}"),
        }
    }

    /// Confirms the oldest connect IO was asked for; returns the client it answers and the
    /// answer (the CONNECTION-ID, or 447).
    #[track_caller]
    pub fn confirm_connect(
        &mut self,
        result: Result<(), ConnectError>,
    ) -> (ConnectionId, FiveTuple, Resp) {
        assert!(!self.relays.connects.is_empty(), "no connect to confirm");
        let (connection, _, _) = self.relays.connects.remove(0);
        let now = self.now();
        let mut out = vec![0u8; 2048];
        let answer = self
            .server
            .peer_connected(now, connection, result, &mut out)
            .expect("the Connect is answered");
        if result.is_ok() {
            self.relays.connections.push(connection);
        }
        self.pump();
        (connection, answer.to, Resp(out[..answer.len].to_vec()))
    }

    /// A peer connects in to the TCP relay at `relayed` from `from` (RFC 6062 §5.3): the
    /// connection and the ConnectionAttempt indication to the control connection, or why
    /// the core refused it.
    pub fn peer_connects(
        &mut self,
        relayed: SocketAddr,
        from: SocketAddr,
    ) -> Result<(ConnectionId, FiveTuple, Resp), DropReason> {
        let relay = self.relays.id_of(relayed).expect("a relay at that address");
        let now = self.now();
        let mut out = vec![0u8; 2048];
        let Arrived {
            connection,
            indication,
        } = self
            .server
            .peer_connection_arrived(now, relay, PeerAddr(from), &mut out)?;
        self.relays.connections.push(connection);
        self.pump();
        Ok((
            connection,
            indication.to,
            Resp(out[..indication.len].to_vec()),
        ))
    }

    /// A ConnectionBind for `connection` from `c` (a new client connection), challenged as
    /// needed.
    #[track_caller]
    pub fn connection_bind(&mut self, c: &mut Client, connection: ConnectionId) -> Resp {
        self.request(c, Method::CONNECTION_BIND, &[connection_id(connection)])
    }
}
