//! A fake relay provider for the server checks: successive even ports, strict bookkeeping.

use std::collections::HashMap;
use std::net::SocketAddr;

use turnstone::core::{
    OpenedRelay, RelayError, RelayId, RelayProvider, RelayRequest, ReservationId,
};

/// Relay sockets on successive even ports; tracks what is open and reserved.
#[derive(Debug, Default)]
pub struct FakeRelays {
    /// Open relay sockets.
    pub open: HashMap<RelayId, SocketAddr>,
    /// Reservations held for port + 1.
    pub reserved: HashMap<ReservationId, SocketAddr>,
    next: u64,
}

impl RelayProvider for FakeRelays {
    fn open(&mut self, request: RelayRequest) -> Result<OpenedRelay, RelayError> {
        self.next += 1;
        if self.next > 64 {
            return Err(RelayError::Exhausted);
        }
        let port = 50000 + 2 * self.next as u16;
        let (addr, reservation) = match request {
            RelayRequest::Any { ip }
            | RelayRequest::Even {
                ip,
                reserve_next: false,
            } => (SocketAddr::new(ip, port), None),
            RelayRequest::Even {
                ip,
                reserve_next: true,
            } => {
                let rid = ReservationId(self.next);
                self.reserved.insert(rid, SocketAddr::new(ip, port + 1));
                (SocketAddr::new(ip, port), Some(rid))
            }
            RelayRequest::Reserved(rid) => (
                self.reserved
                    .remove(&rid)
                    .ok_or(RelayError::UnknownReservation)?,
                None,
            ),
        };
        let id = RelayId(self.next);
        self.open.insert(id, addr);
        Ok(OpenedRelay {
            id,
            addr,
            reservation,
        })
    }

    fn close(&mut self, id: RelayId) {
        assert!(
            self.open.remove(&id).is_some(),
            "closed {id:?} twice or never opened"
        );
    }

    fn release(&mut self, id: ReservationId) {
        assert!(
            self.reserved.remove(&id).is_some(),
            "released {id:?} twice or never made"
        );
    }
}
