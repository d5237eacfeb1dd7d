//! Allocate (RFC 8656 §7.2, RFC 6156 §4.2 for address families).

use std::time::Duration;

use crate::proto::{Message, MessageWriter, WriteError, attr, error_code as ec};

use super::authn::{Authenticated, CredentialClass};
use super::pending::Pending;
use super::relay::{RelayRequest, RelayToken};
use super::server::{Command, Server};
use super::shared::QuotaFull;
use super::stats::EndReason;
use super::tcp::TCP;
use super::{FiveTuple, Now, Rejection};

const UDP: u8 = 17;
const FAMILY_V4: u8 = 0x01;
pub(crate) const FAMILY_V6: u8 = 0x02;

/// Which relay families the client asked for.
struct Families {
    v4: bool,
    v6: bool,
    /// Dual-stack: the IPv6 relay is best effort (ADDRESS-ERROR-CODE when it fails).
    dual: bool,
}

/// The answer to Refresh, CreatePermission or ChannelBind; `Ok(Err(_))` means the reply did
/// not fit `out`.
pub(crate) type Answer = Result<Result<usize, WriteError>, Rejection>;

impl Server {
    /// Checks an authenticated Allocate, takes its quota and requests its relay sockets; the
    /// answer is written by [`Server::relay_opened`] once IO confirmed them (DESIGN.md §3).
    pub(crate) fn allocate(
        &mut self,
        now: Now,
        from: FiveTuple,
        msg: &Message<'_>,
        auth: &Authenticated<'_>,
    ) -> Result<(), Rejection> {
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
            self.end_allocation(now, id, EndReason::Expired);
        }
        // RFC 8656 §7.2 step 2: one allocation per 5-tuple, also while its relay is being
        // opened (a retransmission of that same request never gets here, see `handle_request`).
        if self.table.id_by_five_tuple(&from).is_some() || self.pending.contains_key(&from) {
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
            Some(Ok(TCP)) if self.settings.tcp_relay => check_tcp_allocate(from, msg)?,
            Some(Ok(_)) => {
                return Err(Rejection::new(
                    ec::UNSUPPORTED_TRANSPORT_PROTOCOL,
                    if self.settings.tcp_relay {
                        "only UDP and TCP relaying are offered"
                    } else {
                        "only UDP relaying is offered"
                    },
                ));
            }
        }
        let tcp = msg.requested_transport() == Some(Ok(TCP));
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
        let selftest = auth.class == CredentialClass::SelfTest;
        // A reserved port outlives the allocation that asked for it and is claimed by a
        // second one; a self-test needs neither, so its credentials cannot hold ports that way.
        if selftest && (token.is_some() || even == Some(true)) {
            return Err(Rejection::new(
                ec::FORBIDDEN,
                "self-test credentials cannot reserve relay ports",
            ));
        }
        // A TCP relay (RFC 6062) reaches peers through Connect, which the self-test scope
        // (our own UDP relays only) does not cover: the page needs none.
        if selftest && tcp {
            return Err(Rejection::new(
                ec::FORBIDDEN,
                "self-test credentials cannot make TCP relays",
            ));
        }
        let lifetime = self.granted_lifetime(msg, selftest)?;
        let username: std::sync::Arc<str> =
            std::sync::Arc::from(String::from_utf8_lossy(auth.username).as_ref());
        // Quotas are taken now, while the relay is still being opened, so a flood of
        // Allocates cannot over-commit while binds are in flight. A claimed reservation
        // brings the quota slot it held (RFC 8656 §7.2); otherwise this allocation takes one,
        // and a new reservation takes another.
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
        let primary_v6 = families.v6 && !families.v4;
        let primary = match claimed {
            Some(rid) => Ok(RelayRequest::Reserved(rid)),
            None => self.family_ip(primary_v6).map(|ip| match even {
                Some(reserve_next) => RelayRequest::Even { ip, reserve_next },
                None => RelayRequest::Any { ip },
            }),
        };
        let primary = match primary {
            Ok(request) => request,
            Err(rejection) => {
                for _ in 0..slots {
                    self.shared.release(&username);
                }
                return Err(rejection);
            }
        };
        let selftest_slot = if selftest {
            match self.acquire_selftest(from.client.addr().ip()) {
                Ok(slot) => Some(slot),
                Err(rejection) => {
                    for _ in 0..slots {
                        self.shared.release(&username);
                    }
                    return Err(rejection);
                }
            }
        } else {
            None
        };
        let mut pending = Pending::new(msg.transaction_id(), username, auth, lifetime);
        pending.selftest = selftest_slot;
        pending.slots = slots;
        pending.reserving = reserving;
        pending.tcp = tcp;
        let dont_fragment = msg.has(attr::DONT_FRAGMENT);
        self.request_relay(from, &mut pending, false, open(tcp, primary, dont_fragment));
        // RFC 8656 §7.2 / RFC 6156: dual stack asks for both relays at once; the IPv6 one is
        // best effort (ADDRESS-ERROR-CODE when it fails).
        if families.dual {
            match self.family_ip(true) {
                Ok(ip) => {
                    let request = RelayRequest::Any { ip };
                    self.request_relay(from, &mut pending, true, open(tcp, request, dont_fragment));
                }
                Err(rejection) => pending.v6_error = Some(rejection),
            }
        }
        self.pending.insert(from, pending);
        Ok(())
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

    /// RFC 8656 §7.2: max(default, min(requested, maximum)); for a self-test allocation at
    /// most `Settings::selftest`'s lifetime.
    pub(crate) fn granted_lifetime(
        &self,
        msg: &Message<'_>,
        selftest: bool,
    ) -> Result<Duration, Rejection> {
        let l = &self.settings.lifetimes;
        let granted = match msg.u32_attr(attr::LIFETIME) {
            None => l.allocation_default,
            Some(Err(_)) => return Err(Rejection::new(ec::BAD_REQUEST, "LIFETIME malformed")),
            Some(Ok(secs)) => Duration::from_secs(u64::from(secs))
                .min(l.allocation_max)
                .max(l.allocation_default),
        };
        match self.settings.selftest {
            Some(limits) if selftest => Ok(granted.min(limits.max_lifetime)),
            _ => Ok(granted),
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
}

/// RFC 6062 §5.1: a TCP allocation is made over TCP or TLS only, and without the
/// attributes that mean nothing for a listening socket.
fn check_tcp_allocate(from: FiveTuple, msg: &Message<'_>) -> Result<(), Rejection> {
    if !from.transport.is_stream() {
        return Err(Rejection::new(
            ec::BAD_REQUEST,
            "a TCP allocation needs a TCP or TLS control connection",
        ));
    }
    if msg.has(attr::DONT_FRAGMENT) || msg.has(attr::EVEN_PORT) || msg.has(attr::RESERVATION_TOKEN)
    {
        return Err(Rejection::new(
            ec::BAD_REQUEST,
            "DONT-FRAGMENT, EVEN-PORT and RESERVATION-TOKEN do not apply to a TCP allocation",
        ));
    }
    Ok(())
}

/// The command opening one relay: a UDP socket as `request` says, or for a TCP allocation a
/// listening socket on the request's IP (`check_tcp_allocate` left only `Any` for those).
fn open(
    tcp: bool,
    request: RelayRequest,
    dont_fragment: bool,
) -> impl FnOnce(RelayToken) -> Command {
    move |token| match (tcp, request) {
        (true, RelayRequest::Any { ip } | RelayRequest::Even { ip, .. }) => {
            Command::OpenTcpRelay { token, ip }
        }
        _ => Command::OpenRelay {
            token,
            request,
            dont_fragment,
        },
    }
}

/// RFC 8656 §18.11 ADDRESS-ERROR-CODE: family, reserved, class, number, reason.
pub(crate) fn add_address_error(
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
