//! Turns a validated [`Config`] into the typed settings the core and the IO layer run with.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use crate::auth::CredentialStore;
use crate::core::policy::PeerPolicy;
use crate::core::{Lifetimes, RelayFamily, Settings, Transport};
use crate::io::tls::{TlsConfigError, load_server_config};
use crate::io::{ListenerSpec, ServerSpec, StreamLimits, UsageSink};

use super::{Config, Protocol};

/// Why a valid configuration still cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A TLS listener's certificate or key did not load.
    #[error("listen[{index}]: {source}")]
    Tls {
        /// The listener's index in the file.
        index: usize,
        /// What went wrong.
        source: TlsConfigError,
    },
}

impl Config {
    /// The credential store of `[auth]`.
    pub fn credential_store(&self) -> CredentialStore {
        let users = self
            .auth
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()));
        let secrets = self
            .auth
            .secrets
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        CredentialStore::new(&self.server.realm, users, secrets)
    }

    /// Loads every TLS listener's certificate and key (also used by `check-config`).
    pub fn listener_specs(&self) -> Result<Vec<ListenerSpec>, BuildError> {
        self.listeners
            .iter()
            .enumerate()
            .map(|(index, l)| {
                let tls = match &l.tls {
                    Some(files) => Some(
                        load_server_config(&files.certificate, &files.private_key)
                            .map_err(|source| BuildError::Tls { index, source })?,
                    ),
                    None => None,
                };
                let transport = match l.protocol {
                    Protocol::Udp => Transport::Udp,
                    Protocol::Tcp => Transport::Tcp,
                    Protocol::Tls => Transport::Tls,
                };
                Ok(ListenerSpec {
                    transport,
                    address: l.address,
                    tls,
                })
            })
            .collect()
    }

    /// Core settings. The relay IPv4 address defaults to the host's primary address.
    pub fn core_settings(&self) -> Settings {
        let relay = &self.relay;
        let v4_bind = relay.address.unwrap_or_else(primary_ipv4);
        let relay_v4 = Some(RelayFamily {
            bind: v4_bind,
            advertised: relay.external_address.unwrap_or(v4_bind),
        });
        let relay_v6 = relay.address_v6.map(|bind| RelayFamily {
            bind,
            advertised: relay.external_address_v6.unwrap_or(bind),
        });
        let limits = &self.limits;
        Settings {
            realm: self.server.realm.clone(),
            software: self.server.software.clone(),
            relay_v4,
            relay_v6,
            lifetimes: Lifetimes {
                allocation_default: limits.allocation_lifetime,
                allocation_max: limits.max_allocation_lifetime,
                permission: limits.permission_lifetime,
                channel: limits.channel_lifetime,
                nonce: self.auth.nonce_lifetime,
            },
            // Rebuilt by `io::start` once the listeners are bound.
            policy: PeerPolicy::new(Vec::new(), Vec::new(), Vec::new(), Vec::new()),
            max_permissions: limits.max_permissions_per_allocation,
            max_channels: limits.max_channels_per_allocation,
            max_allocations_per_user: limits.max_allocations_per_user,
            max_allocations: u32::try_from(limits.max_allocations).unwrap_or(u32::MAX),
            listeners: self.listeners.iter().map(|l| l.address).collect(),
        }
    }

    /// Everything `io::start` needs.
    pub fn server_spec(
        &self,
        credentials: Arc<CredentialStore>,
        usage: UsageSink,
    ) -> Result<ServerSpec, BuildError> {
        let workers = match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(ServerSpec {
            workers,
            listeners: self.listener_specs()?,
            relay_ports: self.relay.ports.clone(),
            settings: self.core_settings(),
            allow: self.peers.allow.clone(),
            deny: self.peers.deny.clone(),
            credentials,
            stream_limits: StreamLimits {
                handshake_timeout: self.limits.tcp_handshake_timeout,
                idle_timeout: self.limits.tcp_idle_timeout,
                max_connections: self.limits.max_tcp_connections,
            },
            usage,
        })
    }
}

/// The source address the host would use to reach the Internet. A connected UDP socket sends
/// nothing; the kernel only picks a route. Falls back to loopback on a host without one.
fn primary_ipv4() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect(SocketAddr::from(([192, 0, 2, 1], 3478)))?;
        Ok(sock.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => {
            tracing::warn!(target: "turnstone::io", "no default route: relaying on 127.0.0.1; set relay.address");
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    }
}
