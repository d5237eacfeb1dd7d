//! Allocate (RFC 8656 §7.2, RFC 6156 §4.2 for address families).

use std::net::SocketAddr;
use std::time::Duration;

use crate::proto::{Message, MessageWriter, WriteError, attr, error_code as ec};

use super::allocation::{Allocation, Relay};
use super::authn::Authenticated;
use super::quota::TokenBucket;
use super::relay::{RelayError, RelayProvider, RelayRequest};
use super::server::{AllocIdKey, RESERVATION_LIFETIME, Server, Timer};
use super::shared::QuotaFull;
use super::stats::{EndReason, Traffic};
use super::{FiveTuple, Now, Rejection};

const UDP: u8 = 17;
const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// Which relay families the client asked for.
struct Families {
    v4: bool,
    v6: bool,
    /// Dual-stack: the IPv6 relay is best effort (ADDRESS-ERROR-CODE when it fails).
    dual: bool,
}

/// `Ok(Err(_))` means the reply did not fit `out`.
pub(crate) type Answer = Result<Result<usize, WriteError>, Rejection>;

impl Server {
    pub(crate) fn allocate(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
        out: &mut [u8],
        relays: &mut impl RelayProvider,
    ) -> Answer {
        if self.draining {
            return match self.settings.alternate_server {
                Some(_) => Err(Rejection::new(
                    ec::TRY_ALTERNATE,
                    "server is draining; use the alternate server",
                )),
                None => Err(Rejection::new(
                    ec::INSUFFICIENT_CAPACITY,
                    "server is draining",
                )),
            };
        }
        if let Some(id) = self.table.id_by_five_tuple(&from)
            && self.table.get(id).is_some_and(|a| a.expires <= now.mono)
        {
            self.end_allocation(now, id, EndReason::Expired, relays);
        }
        if self.table.id_by_five_tuple(&from).is_some() {
            return Err(Rejection::new(
                ec::ALLOCATION_MISMATCH,
                "an allocation already exists on this 5-tuple",
            ));
        }
        match msg.requested_transport() {
            None => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "REQUESTED-TRANSPORT missing",
                ));
            }
            Some(Err(_)) => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "REQUESTED-TRANSPORT malformed",
                ));
            }
            Some(Ok(UDP)) => {}
            Some(Ok(_)) => {
                return Err(Rejection::new(
                    ec::UNSUPPORTED_TRANSPORT_PROTOCOL,
                    "only UDP relaying is offered",
                ));
            }
        }
        let families = self.requested_families(msg)?;
        let token = match msg.reservation_token() {
            Some(Ok(t)) => Some(t),
            Some(Err(_)) => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "RESERVATION-TOKEN malformed",
                ));
            }
            None => None,
        };
        let even = match msg.even_port() {
            Some(Ok(r)) => Some(r),
            Some(Err(_)) => return Err(Rejection::new(ec::BAD_REQUEST, "EVEN-PORT malformed")),
            None => None,
        };
        // RFC 8656 §7.2 steps 4–6.
        if token.is_some() && (even.is_some() || msg.has(attr::REQUESTED_ADDRESS_FAMILY)) {
            return Err(Rejection::new(
                ec::BAD_REQUEST,
                "RESERVATION-TOKEN cannot come with EVEN-PORT or REQUESTED-ADDRESS-FAMILY",
            ));
        }
        let lifetime = self.granted_lifetime(msg)?;
        let username: std::sync::Arc<str> =
            std::sync::Arc::from(String::from_utf8_lossy(auth.username).as_ref());
        // A claimed reservation brings the quota slot it held (RFC 8656 §7.2); otherwise
        // this allocation takes one, and a new reservation takes another.
        let claimed = match token {
            Some(t) => Some(
                self.shared
                    .claim_reservation(&t, &username, now.mono)
                    .ok_or(Rejection::new(
                        ec::INSUFFICIENT_CAPACITY,
                        "unknown or expired RESERVATION-TOKEN",
                    ))?,
            ),
            None => {
                self.acquire_slot(&username)?;
                None
            }
        };
        let reserving = even == Some(true);
        if reserving && let Err(rejection) = self.acquire_slot(&username) {
            self.shared.release(&username);
            return Err(rejection);
        }
        let slots = 1 + usize::from(reserving);

        let mut opened: [Option<Relay>; 2] = [None, None];
        let mut v6_error = None;
        let primary_v6 = families.v6 && !families.v4;
        let primary = match claimed {
            Some(rid) => self.open_relay(RelayRequest::Reserved(rid), relays),
            None => self.family_ip(primary_v6).and_then(|ip| {
                let request = match even {
                    Some(reserve_next) => RelayRequest::Even { ip, reserve_next },
                    None => RelayRequest::Any { ip },
                };
                self.open_relay(request, relays)
            }),
        };
        let reservation = match primary {
            Ok((relay, reserved)) => {
                opened[usize::from(relay.bound.is_ipv6())] = Some(relay);
                if reserving && reserved.is_none() {
                    self.shared.release(&username);
                }
                reserved
            }
            Err(rejection) => {
                for _ in 0..slots {
                    self.shared.release(&username);
                }
                return Err(rejection);
            }
        };
        if families.dual {
            match self
                .family_ip(true)
                .and_then(|ip| self.open_relay(RelayRequest::Any { ip }, relays))
            {
                Ok((relay, _)) => opened[1] = Some(relay),
                Err(rejection) => v6_error = Some(rejection),
            }
        }
        if msg.has(attr::DONT_FRAGMENT) {
            for relay in opened.iter().flatten() {
                relays.set_dont_fragment(relay.id);
            }
        }
        let reservation_token = reservation.map(|rid| {
            let token = self.tokens.next_token();
            let expires = now.mono + RESERVATION_LIFETIME;
            self.shared.add_reservation(token, rid, expires, &username);
            self.reservations.push(token);
            self.schedule(expires, Timer::Reservation(token));
            token
        });

        let expires = now.mono + lifetime;
        let allocation = Allocation {
            five_tuple: from,
            username,
            relays: opened,
            expires,
            started_unix: now.unix_secs,
            permissions: Vec::new(),
            channels: Vec::new(),
            peers_seen: 0,
            traffic: Traffic::default(),
            bucket: self
                .settings
                .allocation_bandwidth
                .map(|b| TokenBucket::new(b, now.mono)),
        };
        let id = self.table.insert(allocation);
        self.schedule(expires, Timer::Allocation(AllocIdKey(id)));
        self.counters.allocations_created += 1;
        tracing::debug!(target: "turnstone::relay", client = %from.client, relays = ?opened.iter().flatten().map(|r| r.advertised).collect::<Vec<_>>(), "allocation created");

        Ok(self.signed_success(out, msg, auth, |w| {
            for relay in opened.iter().flatten() {
                w.add_xor_address(attr::XOR_RELAYED_ADDRESS, relay.advertised)?;
            }
            w.add_u32(attr::LIFETIME, lifetime.as_secs() as u32)?;
            if let Some(token) = reservation_token {
                w.add(attr::RESERVATION_TOKEN, &token)?;
            }
            w.add_xor_address(attr::XOR_MAPPED_ADDRESS, from.client)?;
            if let Some(rejection) = v6_error {
                add_address_error(w, FAMILY_V6, rejection)?;
            }
            Ok(())
        }))
    }

    /// RFC 8656 §7.2 step 7 and RFC 6156: REQUESTED-ADDRESS-FAMILY or ADDITIONAL-ADDRESS-FAMILY.
    fn requested_families(&self, msg: &Message<'_>) -> Result<Families, Rejection> {
        let requested = msg.address_family(attr::REQUESTED_ADDRESS_FAMILY);
        let additional = msg.address_family(attr::ADDITIONAL_ADDRESS_FAMILY);
        let not_supported = |reason| Rejection::new(ec::ADDRESS_FAMILY_NOT_SUPPORTED, reason);
        let families = match (requested, additional) {
            (Some(_), Some(_)) => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "REQUESTED-ADDRESS-FAMILY and ADDITIONAL-ADDRESS-FAMILY together",
                ));
            }
            (Some(Ok(FAMILY_V4)), None) | (None, None) => Families {
                v4: true,
                v6: false,
                dual: false,
            },
            (Some(Ok(FAMILY_V6)), None) => Families {
                v4: false,
                v6: true,
                dual: false,
            },
            (Some(_), None) => return Err(not_supported("unknown REQUESTED-ADDRESS-FAMILY")),
            (None, Some(Ok(FAMILY_V6))) => Families {
                v4: true,
                v6: true,
                dual: true,
            },
            (None, Some(_)) => {
                return Err(Rejection::new(
                    ec::BAD_REQUEST,
                    "ADDITIONAL-ADDRESS-FAMILY must be IPv6",
                ));
            }
        };
        if families.v4 && self.settings.relay_v4.is_none() {
            return Err(not_supported("this server has no IPv4 relay address"));
        }
        if families.v6 && !families.dual && self.settings.relay_v6.is_none() {
            return Err(not_supported("this server has no IPv6 relay address"));
        }
        Ok(families)
    }

    /// RFC 8656 §7.2: max(default, min(requested, maximum)).
    pub(crate) fn granted_lifetime(&self, msg: &Message<'_>) -> Result<Duration, Rejection> {
        let l = &self.settings.lifetimes;
        match msg.u32_attr(attr::LIFETIME) {
            None => Ok(l.allocation_default),
            Some(Err(_)) => Err(Rejection::new(ec::BAD_REQUEST, "LIFETIME malformed")),
            Some(Ok(secs)) => Ok(Duration::from_secs(u64::from(secs))
                .min(l.allocation_max)
                .max(l.allocation_default)),
        }
    }

    /// Takes one allocation slot of `user` (a reserved port counts as one too).
    fn acquire_slot(&self, user: &str) -> Result<(), Rejection> {
        self.shared
            .try_acquire(
                user,
                self.settings.max_allocations_per_user,
                self.settings.max_allocations,
            )
            .map_err(|full| match full {
                QuotaFull::User => Rejection::new(
                    ec::ALLOCATION_QUOTA_REACHED,
                    "per-user allocation quota reached",
                ),
                QuotaFull::Total => {
                    Rejection::new(ec::INSUFFICIENT_CAPACITY, "server allocation quota reached")
                }
            })
    }

    fn family_ip(&self, v6: bool) -> Result<std::net::IpAddr, Rejection> {
        self.settings
            .relay_family(v6)
            .map(|f| f.bind)
            .ok_or(Rejection::new(
                ec::ADDRESS_FAMILY_NOT_SUPPORTED,
                "no relay address of this family",
            ))
    }

    fn open_relay(
        &self,
        request: RelayRequest,
        relays: &mut impl RelayProvider,
    ) -> Result<(Relay, Option<super::ReservationId>), Rejection> {
        let opened = relays.open(request).map_err(|e| match e {
            RelayError::Exhausted => {
                Rejection::new(ec::INSUFFICIENT_CAPACITY, "no free relay port")
            }
            RelayError::UnknownReservation => Rejection::new(
                ec::INSUFFICIENT_CAPACITY,
                "unknown or expired RESERVATION-TOKEN",
            ),
            RelayError::Failed => Rejection::new(
                ec::INSUFFICIENT_CAPACITY,
                "relay socket could not be opened",
            ),
        })?;
        let advertised_ip =
            self.settings
                .relay_family(opened.addr.is_ipv6())
                .map_or(opened.addr.ip(), |f| {
                    if f.bind == opened.addr.ip() {
                        f.advertised
                    } else {
                        opened.addr.ip()
                    }
                });
        let relay = Relay {
            id: opened.id,
            bound: opened.addr,
            advertised: SocketAddr::new(advertised_ip, opened.addr.port()),
        };
        Ok((relay, opened.reservation))
    }
}

/// RFC 8656 §18.11 ADDRESS-ERROR-CODE: family, reserved, class, number, reason.
fn add_address_error(
    w: &mut MessageWriter<'_>,
    family: u8,
    rejection: Rejection,
) -> Result<(), WriteError> {
    let mut v = [0u8; 4 + 128];
    let reason = rejection.reason.as_bytes();
    let n = reason.len().min(128);
    v[0] = family;
    v[2] = (rejection.code / 100) as u8;
    v[3] = (rejection.code % 100) as u8;
    v[4..4 + n].copy_from_slice(&reason[..n]);
    w.add(attr::ADDRESS_ERROR_CODE, &v[..4 + n])?;
    Ok(())
}
