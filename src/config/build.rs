//! Turns a validated [`Config`] into the typed settings the core and the IO layer run with.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use crate::auth::CredentialStore;
use crate::core::policy::PeerRules;
use crate::core::{Bandwidth, Lifetimes, RelayFamily, SelftestLimits, Settings, Transport};
use crate::io::tls::{TlsConfigError, load_server_config};
use crate::io::{
    FastPathSpec, ListenerSpec, NatDiscoverySpec, RequestLimits, ServerSpec, StreamLimits,
    UsageSink,
};

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
    /// The self-test page's certificate or key did not load.
    #[error("selftest: {source}")]
    SelftestTls {
        /// What went wrong.
        source: TlsConfigError,
    },
    /// `relay.address` is not set and the host has no route to find its address. There is no
    /// fallback to loopback: a relay on 127.0.0.1 is a way into the host's local services.
    #[error(
        "relay.address: not set, and this host has no default route to find its address; \
         set relay.address to the IPv4 address relay sockets should use"
    )]
    NoRelayAddress,
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

    /// The self-test page's HTTPS configuration, when `[selftest]` gives a certificate (also
    /// used by `check-config`).
    pub fn selftest_tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, BuildError> {
        let Some(files) = self.selftest.as_ref().and_then(|t| t.tls.as_ref()) else {
            return Ok(None);
        };
        load_server_config(&files.certificate, &files.private_key)
            .map(Some)
            .map_err(|source| BuildError::SelftestTls { source })
    }

    /// The worker thread count: `server.workers`, or one per available core when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.server.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Core settings of each of `workers` workers (see [`Config::worker_count`]); each
    /// gets an equal share of `limits.max_total_bitrate`. The relay IPv4 address defaults
    /// to the host's primary address; without one, [`BuildError::NoRelayAddress`]. The peer
    /// rules are complete; `io::start` adds what it binds ([`Settings::complete`]).
    pub fn core_settings(&self, workers: usize) -> Result<Settings<PeerRules>, BuildError> {
        let relay = &self.relay;
        let v4_bind = match relay.address {
            Some(ip) => ip,
            None => primary_ipv4().ok_or(BuildError::NoRelayAddress)?,
        };
        let relay_v4 = Some(RelayFamily {
            bind: v4_bind,
            advertised: relay.external_address.unwrap_or(v4_bind),
        });
        let relay_v6 = relay.address_v6.map(|bind| RelayFamily {
            bind,
            advertised: relay.external_address_v6.unwrap_or(bind),
        });
        // Our own relay addresses, bound and advertised, are peers at live relay ports.
        let relay_ips = [relay_v4, relay_v6]
            .into_iter()
            .flatten()
            .flat_map(|f| [f.bind, f.advertised])
            .collect();
        let limits = &self.limits;
        Ok(Settings {
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
            policy: PeerRules::new(self.peers.allow.clone(), self.peers.deny.clone(), relay_ips),
            max_permissions: limits.max_permissions_per_allocation,
            max_channels: limits.max_channels_per_allocation,
            tcp_relay: self.relay.tcp,
            max_tcp_connections: limits.max_peer_connections_per_allocation,
            max_allocations_per_user: limits.max_allocations_per_user,
            max_allocations: u32::try_from(limits.max_allocations).unwrap_or(u32::MAX),
            allocation_bandwidth: bandwidth(
                limits.max_allocation_bitrate,
                limits.allocation_burst_bytes,
            ),
            worker_bandwidth: worker_share(limits.max_total_bitrate, workers),
            alternate_server: self.server.alternate_server,
            // The four discovery sockets are known once bound: io sets this at start.
            nat_discovery: None,
            selftest: self.selftest.as_ref().map(|t| SelftestLimits {
                max_lifetime: t.max_allocation_lifetime,
                max_allocations_per_ip: t.max_allocations_per_ip,
                max_allocations: t.max_allocations,
                ipv6_prefix_length: limits.ipv6_prefix_length,
                // Validation refuses a cap of 0; the floor keeps it a cap regardless.
                bandwidth: bandwidth(t.max_bitrate.max(8), 0).unwrap_or(Bandwidth {
                    bytes_per_sec: 1,
                    burst_bytes: MIN_AUTO_BURST_BYTES,
                }),
            }),
        })
    }

    /// Everything `io::start` needs.
    pub fn server_spec(
        &self,
        credentials: Arc<CredentialStore>,
        usage: UsageSink,
    ) -> Result<ServerSpec, BuildError> {
        let workers = self.worker_count();
        Ok(ServerSpec {
            workers,
            listeners: self.listener_specs()?,
            nat_discovery: self.server.nat_discovery.map(|n| NatDiscoverySpec {
                listener: n.listener,
                alternate_ip: n.address,
                alternate_port: n.port,
            }),
            relay_ports: self.relay.ports.clone(),
            settings: self.core_settings(workers)?,
            credentials,
            stream_limits: StreamLimits {
                handshake_timeout: self.limits.tcp_handshake_timeout,
                idle_timeout: self.limits.tcp_idle_timeout,
                max_connections: self.limits.max_tcp_connections,
                max_connections_per_ip: self.limits.max_tcp_connections_per_ip,
                auth_timeout: self.limits.tcp_auth_timeout,
                ipv6_prefix_length: self.limits.ipv6_prefix_length,
                connect_timeout: self.limits.tcp_connect_timeout,
            },
            request_limits: RequestLimits {
                per_second: self.limits.requests_per_second_per_ip,
                burst: self.limits.request_burst_per_ip,
                max_tracked_ips: self.limits.max_tracked_ips,
                ipv6_prefix_length: self.limits.ipv6_prefix_length,
            },
            usage,
            fast_path: FastPathSpec {
                mode: self.relay.fast_path,
                interfaces: self.relay.fast_path_interfaces.clone(),
                capped: self.limits.bandwidth_capped(),
            },
        })
    }
}

/// Smallest automatic bucket depth: one full-size packet, so a low cap still relays.
const MIN_AUTO_BURST_BYTES: u64 = 1500;

/// A token bucket for a cap in bits per second; `None` when the cap is 0 (unlimited).
/// A `burst_bytes` of 0 means one second at the rate, at least one full-size packet.
fn bandwidth(bits_per_sec: u64, burst_bytes: u64) -> Option<Bandwidth> {
    if bits_per_sec == 0 {
        return None;
    }
    // Validation refuses 1-7 bit/s; the floor keeps the bucket refilling regardless.
    let bytes_per_sec = (bits_per_sec / 8).max(1);
    let burst_bytes = match burst_bytes {
        0 => bytes_per_sec.max(MIN_AUTO_BURST_BYTES),
        b => b,
    };
    Some(Bandwidth {
        bytes_per_sec,
        burst_bytes,
    })
}

/// One worker's share of the whole server's cap: workers meter their own traffic
/// without sharing a bucket (no lock on the data plane), so each gets `total / workers`.
fn worker_share(total_bits_per_sec: u64, workers: usize) -> Option<Bandwidth> {
    if total_bits_per_sec == 0 {
        return None;
    }
    let workers = u64::try_from(workers.max(1)).unwrap_or(u64::MAX);
    let bytes_per_sec = (total_bits_per_sec / 8 / workers).max(1);
    Some(Bandwidth {
        bytes_per_sec,
        burst_bytes: bytes_per_sec.max(MIN_AUTO_BURST_BYTES),
    })
}

/// The source address the host would use to reach the Internet. A connected UDP socket sends
/// nothing; the kernel only picks a route. `None` on a host without one (never loopback).
fn primary_ipv4() -> Option<IpAddr> {
    let probe = || -> std::io::Result<IpAddr> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        sock.connect(SocketAddr::from(([192, 0, 2, 1], 3478)))?;
        Ok(sock.local_addr()?.ip())
    };
    probe()
        .ok()
        .filter(|ip| !ip.is_unspecified() && !ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A config with a fixed relay address, so no route lookup happens.
    fn config(extra: &str) -> Config {
        let text = format!("[relay]\naddress = \"127.0.0.1\"\n{extra}");
        Config::from_toml(&text, Path::new("")).unwrap()
    }

    #[test]
    fn no_caps_by_default() {
        let s = config("").core_settings(2).unwrap();
        assert_eq!(s.allocation_bandwidth, None);
        assert_eq!(s.worker_bandwidth, None);
        assert_eq!(s.alternate_server, None);
    }

    #[test]
    fn allocation_cap_converts_bits_to_bytes_and_keeps_an_explicit_burst() {
        let c =
            config("[limits]\nmax_allocation_bitrate = \"2Mbps\"\nallocation_burst = \"64KiB\"\n");
        assert_eq!(
            c.core_settings(1).unwrap().allocation_bandwidth,
            Some(Bandwidth {
                bytes_per_sec: 250_000,
                burst_bytes: 65_536
            })
        );
    }

    #[test]
    fn automatic_burst_is_one_second_but_at_least_one_packet() {
        let fast = config("[limits]\nmax_allocation_bitrate = \"2Mbps\"\n");
        let b = fast.core_settings(1).unwrap().allocation_bandwidth.unwrap();
        assert_eq!((b.bytes_per_sec, b.burst_bytes), (250_000, 250_000));
        let slow = config("[limits]\nmax_allocation_bitrate = \"8000bps\"\n");
        let b = slow.core_settings(1).unwrap().allocation_bandwidth.unwrap();
        assert_eq!((b.bytes_per_sec, b.burst_bytes), (1000, 1500));
    }

    #[test]
    fn each_worker_gets_an_equal_share_of_the_total_cap() {
        let c = config("[limits]\nmax_total_bitrate = \"1Gbps\"\n");
        assert_eq!(
            c.core_settings(4).unwrap().worker_bandwidth,
            Some(Bandwidth {
                bytes_per_sec: 31_250_000,
                burst_bytes: 31_250_000
            })
        );
        let tiny = config("[limits]\nmax_total_bitrate = \"8bps\"\n");
        let b = tiny.core_settings(16).unwrap().worker_bandwidth.unwrap();
        assert_eq!((b.bytes_per_sec, b.burst_bytes), (1, 1500));
        assert!(c.core_settings(0).unwrap().worker_bandwidth.is_some());
    }

    #[test]
    fn alternate_server_reaches_the_core() {
        let c = config("[server]\nalternate_server = \"203.0.113.8:3478\"\n");
        assert_eq!(
            c.core_settings(1).unwrap().alternate_server,
            Some("203.0.113.8:3478".parse().unwrap())
        );
    }

    #[test]
    fn the_tcp_connection_cap_counts_ipv6_sources_by_the_configured_prefix() {
        let c = config("[limits]\nipv6_prefix_length = 56\n");
        let noop: UsageSink = Arc::new(|_| {});
        let spec = c.server_spec(Arc::new(c.credential_store()), noop).unwrap();
        assert_eq!(spec.stream_limits.ipv6_prefix_length, 56);
        assert_eq!(spec.request_limits.ipv6_prefix_length, 56);
    }

    #[test]
    fn worker_count_is_the_configured_number_or_the_core_count() {
        assert_eq!(config("[server]\nworkers = 3\n").worker_count(), 3);
        assert!(config("").worker_count() >= 1);
    }

    #[test]
    fn peer_rules_are_complete_before_io_binds() {
        let c = config("[peers]\nallow = [\"10.0.0.0/8\"]\ndeny = [\"203.0.113.0/24\"]\n");
        let rules = c.core_settings(1).unwrap().policy;
        // The relay address (bind = advertised here) is in, with both lists.
        let expected = PeerRules::new(
            vec!["10.0.0.0/8".parse().unwrap()],
            vec!["203.0.113.0/24".parse().unwrap()],
            vec!["127.0.0.1".parse().unwrap()],
        );
        assert_eq!(rules, expected);
    }
}
