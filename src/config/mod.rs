//! The TOML configuration: file → validated [`Config`], or every problem at once.
//!
//! Every table refuses unknown keys and every key has a default; durations, bit
//! rates and sizes are strings with a unit (`"10m"`, `"2Mbps"`, `"64KiB"`). Problems are collected, each with its key path
//! (`listen[1].certificate`) and a plain message; syntax errors carry line and
//! column. Relative file paths are resolved against the config file's directory.

mod build;
mod ctx;
mod duration;
mod error;
mod load;
mod raw;
mod types;
mod units;
mod validate;
mod validate_ops;
mod validate_policy;

use std::path::Path;

pub use build::BuildError;
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors, Location};
pub use types::{
    AdminConfig, AuthConfig, Config, LimitsConfig, ListenerConfig, LogConfig, LogLevel,
    LogLevelError, PeersConfig, Protocol, ProtocolError, RelayConfig, ServerConfig, TlsFiles,
    UsageConfig, UsageOutput, UserConfig,
};
pub use units::{BitrateError, ByteSizeError, parse_bitrate, parse_byte_size};

/// The text of `conf/default.toml`, built into the binary: what `turnstone serve`
/// runs with no flags.
pub const DEFAULT_TOML: &str = include_str!("../../conf/default.toml");

impl Config {
    /// Reads and validates the file at `path`; relative paths in it are resolved
    /// against its directory.
    ///
    /// # Errors
    /// An unreadable file, a TOML syntax error, or every problem in the content.
    pub fn from_file(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text, path.parent().unwrap_or(Path::new("")))
    }

    /// Parses and validates `text`; relative paths are resolved against `base_dir`.
    ///
    /// # Errors
    /// A TOML syntax error (alone, with line and column), or every unknown key,
    /// wrong type and invalid value, each with its key path.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let loaded = load::load(text)?;
        validate::validate(loaded, base_dir).map_err(ConfigErrors)
    }

    /// The built-in configuration ([`DEFAULT_TOML`]).
    pub fn embedded_default() -> Config {
        // Invariant: conf/default.toml ships with the binary and has no relative
        // paths; the test `embedded_default_parses` keeps it valid.
        Self::from_toml(DEFAULT_TOML, Path::new(""))
            .expect("conf/default.toml is valid (checked by a test)")
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::core::cidr::Cidr;

    const BASE: &str = "/etc/turnstone";

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml(text, Path::new(BASE))
    }

    /// The one problem `text` has, as displayed.
    fn only_error(text: &str) -> String {
        let errs = parse(text).unwrap_err();
        assert_eq!(errs.0.len(), 1, "expected one problem, got:\n{errs}");
        errs.0[0].to_string()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const SCHEMA: &str = r#"
[server]
realm = "turnstone.test"        # default "turnstone"
software = "turnstone"          # SOFTWARE attribute text; "" omits it; default "turnstone/<CARGO_PKG_VERSION>"
workers = 0                     # 0 = one per available core
drain_grace = "45s"             # SIGTERM: how long allocations keep relaying; default "30s"
alternate_server = "203.0.113.8:3478"   # optional; 300 Try Alternate while draining
[log]
level = "info"                  # error|warn|info|debug|trace
[[listen]]
protocol = "udp"                # udp | tcp | tls
address = "127.0.0.1:3478"      # ip:port; [::1]:3478 for v6
[[listen]]
protocol = "tls"
address = "127.0.0.1:5349"
certificate = "cert.pem"        # required for tls, refused for udp/tcp
private_key = "key.pem"
[admin]
address = "127.0.0.1:9641"      # HTTP admin listener; section absent => default 127.0.0.1:9641; `enabled = false` turns it off
api_key = "0123456789abcdef"    # optional; enables GET /credentials; at least 16 characters
credential_ttl = "12h"          # default "24h"
public_host = "turn.example.com"   # optional host for the iceServers URLs
[relay]
address = "127.0.0.1"           # IP relay sockets bind to; optional (absent => chosen at start by the server)
address_v6 = "::1"              # optional; enables IPv6 relays
ports = "49152-65535"           # "lo-hi", lo <= hi, lo >= 1
external_address = "203.0.113.7"   # optional, advertised instead of address (1:1 NAT); must be same family as address
external_address_v6 = "2001:db8::7" # optional
[auth]
secrets = ["change-me"]         # TURN REST API shared secrets; any verifies, the first mints; empty strings refused
nonce_lifetime = "10m"
[[auth.users]]
name = "alice"
password = "wonderland"         # non-empty; duplicate names refused
[peers]
allow = ["127.0.0.0/8"]         # CIDRs (or bare IPs); exceptions to the built-in deny list
deny = []
[limits]
allocation_lifetime = "10m"     # default lifetime (RFC 8656 default 600 s)
max_allocation_lifetime = "1h"
permission_lifetime = "5m"      # RFC 8656 fixes 300 s
channel_lifetime = "10m"        # RFC 8656 fixes 600 s
max_allocations_per_user = 0    # 0 = unlimited
max_allocations = 0             # total, 0 = unlimited
max_permissions_per_allocation = 64
max_channels_per_allocation = 64
tcp_handshake_timeout = "10s"
tcp_idle_timeout = "5m"
max_tcp_connections = 10000
max_tcp_connections_per_ip = 500  # per IPv4 address or IPv6 prefix
tcp_auth_timeout = "20s"        # to get an allocation, from connect
max_allocation_bitrate = "2Mbps"   # bps|kbps|Mbps|Gbps; "0" = unlimited
allocation_burst = "64KiB"      # B|KB|MB|GB|KiB|MiB|GiB; "0" = one second at the bitrate
max_total_bitrate = "1Gbps"     # "0" = unlimited
requests_per_second_per_ip = 20 # 0 = unlimited
request_burst_per_ip = 40       # >= 1 when the rate is set
max_tracked_ips = 5000          # >= 1
ipv6_prefix_length = 56         # 32..=128
[usage]
output = "usage.jsonl"          # "log" | "stdout" | file path (relative to the config file)
"#;

    #[test]
    fn the_documented_schema_parses_into_the_typed_config() {
        let c = parse(SCHEMA).unwrap();
        assert_eq!(c.server.realm, "turnstone.test");
        assert_eq!(c.server.software.as_deref(), Some("turnstone"));
        assert_eq!(c.server.workers, 0);
        assert_eq!(c.server.drain_grace, Duration::from_secs(45));
        assert_eq!(c.server.alternate_server, Some(addr("203.0.113.8:3478")));
        assert_eq!(c.log.level, LogLevel::Info);
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[0].protocol, Protocol::Udp);
        assert_eq!(c.listeners[0].address, addr("127.0.0.1:3478"));
        assert_eq!(c.listeners[0].tls, None);
        assert_eq!(c.listeners[1].protocol, Protocol::Tls);
        let tls = c.listeners[1].tls.as_ref().unwrap();
        assert_eq!(tls.certificate, PathBuf::from("/etc/turnstone/cert.pem"));
        assert_eq!(tls.private_key, PathBuf::from("/etc/turnstone/key.pem"));
        assert_eq!(
            c.admin,
            Some(AdminConfig {
                address: addr("127.0.0.1:9641"),
                api_key: Some("0123456789abcdef".into()),
                credential_ttl: Duration::from_secs(12 * 3600),
                public_host: Some("turn.example.com".into()),
            })
        );
        assert_eq!(c.relay.address, Some(ip("127.0.0.1")));
        assert_eq!(c.relay.address_v6, Some(ip("::1")));
        assert_eq!(c.relay.ports, 49152..=65535);
        assert_eq!(c.relay.external_address, Some(ip("203.0.113.7")));
        assert_eq!(c.relay.external_address_v6, Some(ip("2001:db8::7")));
        assert_eq!(c.auth.secrets, ["change-me"]);
        assert_eq!(c.auth.nonce_lifetime, Duration::from_secs(600));
        assert_eq!(c.auth.users[0].name, "alice");
        assert_eq!(c.auth.users[0].password, "wonderland");
        assert_eq!(c.peers.allow, ["127.0.0.0/8".parse::<Cidr>().unwrap()]);
        assert!(c.peers.deny.is_empty());
        let l = &c.limits;
        assert_eq!(l.allocation_lifetime, Duration::from_secs(600));
        assert_eq!(l.max_allocation_lifetime, Duration::from_secs(3600));
        assert_eq!(l.permission_lifetime, Duration::from_secs(300));
        assert_eq!(l.channel_lifetime, Duration::from_secs(600));
        assert_eq!((l.max_allocations_per_user, l.max_allocations), (0, 0));
        assert_eq!(l.max_permissions_per_allocation, 64);
        assert_eq!(l.max_channels_per_allocation, 64);
        assert_eq!(l.tcp_handshake_timeout, Duration::from_secs(10));
        assert_eq!(l.tcp_idle_timeout, Duration::from_secs(300));
        assert_eq!(l.max_tcp_connections, 10_000);
        assert_eq!(l.max_tcp_connections_per_ip, 500);
        assert_eq!(l.tcp_auth_timeout, Duration::from_secs(20));
        assert_eq!(l.max_allocation_bitrate, 2_000_000);
        assert_eq!(l.allocation_burst_bytes, 65_536);
        assert_eq!(l.max_total_bitrate, 1_000_000_000);
        assert_eq!(l.requests_per_second_per_ip, 20);
        assert_eq!(l.request_burst_per_ip, 40);
        assert_eq!((l.max_tracked_ips, l.ipv6_prefix_length), (5000, 56));
        assert_eq!(
            c.usage.output,
            UsageOutput::File(PathBuf::from("/etc/turnstone/usage.jsonl"))
        );
    }

    #[test]
    fn an_empty_file_gets_every_default() {
        let c = parse("").unwrap();
        assert_eq!(c.server.realm, "turnstone");
        assert_eq!(
            c.server.software,
            Some(format!("turnstone/{}", env!("CARGO_PKG_VERSION")))
        );
        let listeners: Vec<_> = c
            .listeners
            .iter()
            .map(|l| (l.protocol, l.address))
            .collect();
        assert_eq!(
            listeners,
            [
                (Protocol::Udp, addr("0.0.0.0:3478")),
                (Protocol::Tcp, addr("0.0.0.0:3478"))
            ]
        );
        assert_eq!(c.server.drain_grace, Duration::from_secs(30));
        assert_eq!(c.server.alternate_server, None);
        assert_eq!(
            c.admin,
            Some(AdminConfig {
                address: addr("127.0.0.1:9641"),
                api_key: None,
                credential_ttl: Duration::from_secs(86_400),
                public_host: None,
            })
        );
        assert_eq!(c.relay.address, None);
        assert!(c.auth.secrets.is_empty() && c.auth.users.is_empty());
        assert!(c.peers.allow.is_empty());
        let l = &c.limits;
        assert_eq!((l.max_allocation_bitrate, l.allocation_burst_bytes), (0, 0));
        assert_eq!(l.max_total_bitrate, 0);
        assert_eq!(
            (l.requests_per_second_per_ip, l.request_burst_per_ip),
            (50, 100)
        );
        assert_eq!((l.max_tracked_ips, l.ipv6_prefix_length), (100_000, 64));
        assert_eq!(c.usage.output, UsageOutput::Log);
    }

    #[test]
    fn embedded_default_parses_safely() {
        let c = Config::embedded_default();
        assert_eq!(c, parse("").unwrap());
        assert!(
            c.peers.allow.is_empty(),
            "the default must not open private peers"
        );
        assert!(c.auth.secrets.is_empty() && c.auth.users.is_empty());
    }

    #[test]
    fn every_conf_file_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                // TLS files need not exist: the config only records their paths.
                if let Err(e) = Config::from_file(&path) {
                    panic!("{}:\n{e}", path.display());
                }
                names.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        names.sort();
        for expected in [
            "behind-nat.toml",
            "default.toml",
            "full.toml",
            "loopback-test.toml",
            "rest-api.toml",
            "static-users.toml",
            "tls.toml",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "conf/{expected} missing"
            );
        }
    }

    #[test]
    fn relative_paths_resolve_against_the_config_files_directory() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/tls.toml");
        let c = Config::from_file(&path).unwrap();
        let tls = c.listeners.iter().find_map(|l| l.tls.as_ref()).unwrap();
        assert_eq!(
            tls.certificate,
            path.parent().unwrap().join("tls/fullchain.pem")
        );
        let abs =
            "[[listen]]\nprotocol = \"tls\"\ncertificate = \"/a/c.pem\"\nprivate_key = \"k.pem\"";
        let tls = parse(abs).unwrap().listeners.remove(0).tls.unwrap();
        assert_eq!(tls.certificate, PathBuf::from("/a/c.pem"));
        assert_eq!(tls.private_key, PathBuf::from("/etc/turnstone/k.pem"));
    }

    #[test]
    fn an_unreadable_file_is_one_problem_naming_it() {
        let e = Config::from_file(Path::new("/nonexistent/turnstone.toml")).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/turnstone.toml: "),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_fails_with_its_path() {
        assert_eq!(
            only_error("[relay]\nport = \"1-2\"\n"),
            "relay.port: unknown key; expected one of `address`, `address_v6`, `ports`, \
             `external_address`, `external_address_v6`, `fast_path`, `fast_path_interfaces`"
        );
    }

    #[test]
    fn every_unknown_key_is_reported() {
        let text = "[server]\nrealms = \"x\"\n[[listen]]\nprotocl = \"udp\"\n\
                    [[auth.users]]\nname = \"a\"\npassword = \"b\"\nadmin = true\n";
        let errs = parse(text).unwrap_err();
        let paths: Vec<_> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["server.realms", "listen[0].protocl", "auth.users[0].admin"]
        );
        assert!(
            errs.0.iter().all(|e| e.message.starts_with("unknown key")),
            "{errs}"
        );
    }

    #[test]
    fn problems_in_many_sections_are_all_reported() {
        let text = "[log]\nlevel = \"loud\"\n[relay]\nports = \"9-1\"\n\
                    [limits]\nchannel_lifetime = \"soon\"\nmax_tcp_connections = 0\n";
        let errs = parse(text).unwrap_err();
        let paths: Vec<_> = errs.0.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "log.level",
                "relay.ports",
                "limits.channel_lifetime",
                "limits.max_tcp_connections"
            ]
        );
        assert_eq!(errs.to_string().lines().count(), 4);
    }

    #[test]
    fn a_zero_per_ip_connection_cap_or_auth_timeout_is_refused() {
        assert_eq!(
            only_error("[limits]\nmax_tcp_connections_per_ip = 0\n"),
            "limits.max_tcp_connections_per_ip: must be at least 1; remove the tcp and tls \
             listeners to turn TCP off"
        );
        assert!(
            only_error("[limits]\ntcp_auth_timeout = \"0s\"\n")
                .starts_with("limits.tcp_auth_timeout:")
        );
    }

    #[test]
    fn a_tcp_timeout_longer_than_a_day_is_refused_with_its_key() {
        for key in [
            "tcp_auth_timeout",
            "tcp_idle_timeout",
            "tcp_handshake_timeout",
        ] {
            assert_eq!(
                only_error(&format!("[limits]\n{key} = \"213503982334601d\"\n")),
                format!("limits.{key}: must be at most 1d")
            );
        }
        let c = parse("[limits]\ntcp_idle_timeout = \"1d\"\n").unwrap();
        assert_eq!(c.limits.tcp_idle_timeout, Duration::from_secs(86_400));
    }

    #[test]
    fn bad_duration_is_refused() {
        assert_eq!(
            only_error("[auth]\nnonce_lifetime = \"10\"\n"),
            "auth.nonce_lifetime: missing unit; add one of ms, s, m, h, d, e.g. \"30s\""
        );
        assert_eq!(
            only_error("[limits]\ntcp_idle_timeout = 300\n"),
            "limits.tcp_idle_timeout: invalid type: integer `300`, expected a duration with \
             a unit, e.g. \"10m\""
        );
    }

    #[test]
    fn zero_lifetime_is_refused() {
        assert_eq!(
            only_error("[limits]\npermission_lifetime = \"0s\"\n"),
            "limits.permission_lifetime: must be at least 1s (lifetimes count whole seconds)"
        );
        assert_eq!(
            only_error("[auth]\nnonce_lifetime = \"0m\"\n"),
            "auth.nonce_lifetime: must be longer than 0"
        );
    }

    #[test]
    fn bad_port_range_is_refused() {
        assert_eq!(
            only_error("[relay]\nports = \"60000-50000\"\n"),
            "relay.ports: the low port is above the high port; write \"lo-hi\" with lo <= hi"
        );
        assert_eq!(
            only_error("[relay]\nports = \"0-100\"\n"),
            "relay.ports: the range must not include port 0; start at 1 or above"
        );
    }

    #[test]
    fn tls_listener_without_certificate_is_refused() {
        let errs = parse("[[listen]]\nprotocol = \"tls\"\n").unwrap_err();
        assert_eq!(
            errs.to_string(),
            "listen[0].certificate: required for a tls listener (path to a PEM file)\n\
             listen[0].private_key: required for a tls listener (path to a PEM file)"
        );
    }

    #[test]
    fn certificate_on_udp_listener_is_refused() {
        assert_eq!(
            only_error("[[listen]]\nprotocol = \"udp\"\ncertificate = \"c.pem\"\n"),
            "listen[0].certificate: only tls listeners take a certificate; this one is udp"
        );
    }

    #[test]
    fn duplicate_listener_is_refused() {
        let text = "[[listen]]\naddress = \"127.0.0.1:3478\"\n\
                    [[listen]]\nprotocol = \"tcp\"\naddress = \"127.0.0.1:3478\"\n\
                    [[listen]]\nprotocol = \"udp\"\naddress = \"127.0.0.1:3478\"\n";
        assert_eq!(
            only_error(text),
            "listen[2]: duplicate listener: listen[0] is already udp 127.0.0.1:3478"
        );
    }

    #[test]
    fn tcp_and_tls_cannot_share_an_address_but_port_zero_never_clashes() {
        let text = "[[listen]]\nprotocol = \"tcp\"\naddress = \"127.0.0.1:5349\"\n\
                    [[listen]]\nprotocol = \"tls\"\naddress = \"127.0.0.1:5349\"\n\
                    certificate = \"c\"\nprivate_key = \"k\"\n";
        assert_eq!(
            only_error(text),
            "listen[1].address: tcp (listen[0]) and tls cannot share 127.0.0.1:5349: \
             both are TCP sockets"
        );
        let text = "[[listen]]\naddress = \"127.0.0.1:0\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n";
        assert_eq!(parse(text).unwrap().listeners.len(), 2);
    }

    #[test]
    fn empty_listener_list_is_refused() {
        assert_eq!(
            only_error("listen = []\n"),
            "listen: at least one [[listen]] entry is required"
        );
    }

    #[test]
    fn bad_ip_port_names_the_key() {
        assert_eq!(
            only_error("[[listen]]\naddress = \"127.0.0.1\"\n"),
            "listen[0].address: not an ip:port address; write e.g. \"127.0.0.1:3478\" or \
             \"[::1]:3478\""
        );
        assert!(only_error("[admin]\naddress = \"::1:9641\"\n").starts_with("admin.address: "));
    }

    #[test]
    fn bad_cidr_is_refused_with_its_index() {
        assert_eq!(
            only_error("[peers]\ndeny = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n"),
            "peers.deny[1]: \"10.0.0.0/33\" is not a CIDR prefix or IP address (prefix length \
             is not a number within the address width); e.g. \"10.0.0.0/8\""
        );
    }

    #[test]
    fn lifetime_above_maximum_is_refused() {
        assert_eq!(
            only_error("[limits]\nallocation_lifetime = \"2h\"\n"),
            "limits.allocation_lifetime: 2h is longer than limits.max_allocation_lifetime (1h); \
             the default lifetime cannot exceed the maximum"
        );
    }

    #[test]
    fn duplicate_user_is_refused() {
        let text = "[[auth.users]]\nname = \"alice\"\npassword = \"a\"\n\
                    [[auth.users]]\nname = \"bob\"\npassword = \"b\"\n\
                    [[auth.users]]\nname = \"alice\"\npassword = \"c\"\n";
        assert_eq!(
            only_error(text),
            "auth.users[2].name: duplicate user name \"alice\" (first at auth.users[0])"
        );
    }

    #[test]
    fn user_without_password_is_refused() {
        assert_eq!(
            only_error("[[auth.users]]\nname = \"alice\"\n"),
            "auth.users[0].password: missing or empty; every user needs a password"
        );
    }

    #[test]
    fn empty_secret_is_refused() {
        assert_eq!(
            only_error("[auth]\nsecrets = [\"s1\", \"\"]\n"),
            "auth.secrets[1]: empty secret; remove it or give a value"
        );
    }

    #[test]
    fn bad_log_level_is_refused() {
        assert_eq!(
            only_error("[log]\nlevel = \"verbose\"\n"),
            "log.level: unknown log level; use one of error, warn, info, debug, trace"
        );
    }

    #[test]
    fn relay_addresses_keep_their_families() {
        assert_eq!(
            only_error("[relay]\naddress = \"127.0.0.1\"\nexternal_address = \"2001:db8::7\"\n"),
            "relay.external_address: must be an IPv4 address (the same family as \
             relay.address); put IPv6 in relay.external_address_v6"
        );
        assert_eq!(
            only_error("[relay]\nexternal_address_v6 = \"2001:db8::7\"\n"),
            "relay.external_address_v6: needs relay.address_v6: IPv6 relays are off without it"
        );
        assert!(only_error("[relay]\naddress = \"0.0.0.0\"\n").starts_with("relay.address: "));
    }

    #[test]
    fn wildcard_relay_bind_is_refused_even_with_an_external_address() {
        // It used to be accepted, and hairpinning to the external address then sent to
        // 0.0.0.0:port, which Linux delivers to 127.0.0.1.
        assert!(
            only_error("[relay]\naddress = \"0.0.0.0\"\nexternal_address = \"203.0.113.7\"\n")
                .starts_with("relay.address: 0.0.0.0 is not allowed")
        );
        assert!(
            only_error(
                "[relay]\naddress = \"192.0.2.1\"\naddress_v6 = \"::\"\n\
                 external_address_v6 = \"2001:db8::7\"\n"
            )
            .starts_with("relay.address_v6: :: is not allowed")
        );
    }

    #[test]
    fn admin_can_be_turned_off_and_must_not_clash_with_a_listener() {
        assert_eq!(parse("[admin]\nenabled = false\n").unwrap().admin, None);
        assert_eq!(
            only_error("[[listen]]\nprotocol = \"tcp\"\naddress = \"127.0.0.1:9641\"\n"),
            "admin.address: 127.0.0.1:9641 is already used by listen[0] (tcp)"
        );
    }

    #[test]
    fn empty_software_omits_the_attribute() {
        assert_eq!(
            parse("[server]\nsoftware = \"\"\n")
                .unwrap()
                .server
                .software,
            None
        );
    }

    #[test]
    fn toml_syntax_error_gives_line_and_column() {
        let errs = parse("[server]\nrealm = \"x\"\nworkers = = 2\n").unwrap_err();
        assert_eq!(errs.0.len(), 1);
        let e = &errs.0[0];
        assert_eq!(
            e.location,
            Some(Location {
                line: 3,
                column: 11
            })
        );
        assert!(e.to_string().starts_with("line 3, column 11: "), "{e}");
    }

    #[test]
    fn duplicate_key_is_a_syntax_error_with_a_location() {
        let errs = parse("[log]\nlevel = \"info\"\nlevel = \"debug\"\n").unwrap_err();
        assert_eq!(errs.0[0].location.map(|l| l.line), Some(3), "{errs}");
    }

    #[test]
    fn bad_bitrate_is_refused() {
        assert_eq!(
            only_error("[limits]\nmax_allocation_bitrate = \"2MBps\"\n"),
            "limits.max_allocation_bitrate: unknown unit; use one of bps, kbps, Mbps, Gbps \
             (bits per second), e.g. \"2Mbps\""
        );
        assert_eq!(
            only_error("[limits]\nmax_total_bitrate = \"2000\"\n"),
            "limits.max_total_bitrate: missing unit; add one of bps, kbps, Mbps, Gbps, e.g. \
             \"2Mbps\" (only \"0\" needs none)"
        );
        assert_eq!(
            only_error("[limits]\nmax_total_bitrate = 0\n"),
            "limits.max_total_bitrate: invalid type: integer `0`, expected a bit rate with a \
             unit, e.g. \"2Mbps\", or \"0\""
        );
    }

    #[test]
    fn bitrate_below_one_byte_per_second_is_refused() {
        assert_eq!(
            only_error("[limits]\nmax_allocation_bitrate = \"7bps\"\n"),
            "limits.max_allocation_bitrate: must be \"0\" (unlimited) or at least 8bps (one \
             byte per second)"
        );
        assert!(
            only_error("[limits]\nmax_total_bitrate = \"1bps\"\n")
                .starts_with("limits.max_total_bitrate: must be \"0\"")
        );
    }

    #[test]
    fn bad_byte_size_is_refused() {
        assert_eq!(
            only_error(
                "[limits]\nmax_allocation_bitrate = \"1Mbps\"\nallocation_burst = \"64kb\"\n"
            ),
            "limits.allocation_burst: unknown unit; use one of B, KB, MB, GB, KiB, MiB, GiB \
             (bytes), e.g. \"64KiB\""
        );
        assert_eq!(
            only_error(
                "[limits]\nmax_allocation_bitrate = \"1Mbps\"\nallocation_burst = \"1.3KiB\"\n"
            ),
            "limits.allocation_burst: not a whole number of bytes; use a smaller unit"
        );
    }

    #[test]
    fn burst_smaller_than_a_packet_is_refused() {
        assert_eq!(
            only_error(
                "[limits]\nmax_allocation_bitrate = \"1Mbps\"\nallocation_burst = \"1KB\"\n"
            ),
            "limits.allocation_burst: must be \"0\" (one second at the bitrate) or at least \
             1500B: a smaller bucket never passes a full-size packet"
        );
    }

    #[test]
    fn burst_without_a_bitrate_is_refused() {
        assert_eq!(
            only_error("[limits]\nallocation_burst = \"1MiB\"\n"),
            "limits.allocation_burst: has no effect while limits.max_allocation_bitrate is \
             \"0\" (unlimited); set a bitrate or remove this key"
        );
        // A bitrate that failed to load is reported alone.
        let text = "[limits]\nmax_allocation_bitrate = \"fast\"\nallocation_burst = \"1MiB\"\n";
        assert!(only_error(text).starts_with("limits.max_allocation_bitrate: "));
    }

    #[test]
    fn zero_request_burst_is_refused_only_while_the_rate_is_set() {
        assert_eq!(
            only_error("[limits]\nrequest_burst_per_ip = 0\n"),
            "limits.request_burst_per_ip: must be at least 1 while \
             limits.requests_per_second_per_ip is set; 0 would refuse every request"
        );
        let off = "[limits]\nrequests_per_second_per_ip = 0\nrequest_burst_per_ip = 0\n";
        assert_eq!(parse(off).unwrap().limits.requests_per_second_per_ip, 0);
    }

    #[test]
    fn zero_tracked_ips_is_refused() {
        assert_eq!(
            only_error("[limits]\nmax_tracked_ips = 0\n"),
            "limits.max_tracked_ips: must be at least 1; set limits.requests_per_second_per_ip \
             = 0 to turn the limiter off"
        );
    }

    #[test]
    fn ipv6_prefix_shorter_than_32_or_longer_than_128_is_refused() {
        for bad in [0, 31, 129] {
            assert_eq!(
                only_error(&format!("[limits]\nipv6_prefix_length = {bad}\n")),
                "limits.ipv6_prefix_length: must be 32 to 128; 64 counts each IPv6 subnet \
                 (usually one host or home) as one source, 128 each address"
            );
        }
    }

    #[test]
    fn allocations_per_user_are_bounded_by_default_and_zero_still_means_unlimited() {
        assert_eq!(parse("").unwrap().limits.max_allocations_per_user, 100);
        let zero = "[limits]\nmax_allocations_per_user = 0\n";
        assert_eq!(parse(zero).unwrap().limits.max_allocations_per_user, 0);
    }

    #[test]
    fn unreachable_alternate_server_is_refused() {
        assert_eq!(
            only_error("[server]\nalternate_server = \"0.0.0.0:3478\"\n"),
            "server.alternate_server: must be a unicast ip:port clients can reach (not \
             0.0.0.0, ::, or port 0)"
        );
        assert!(
            only_error("[server]\nalternate_server = \"203.0.113.8:0\"\n")
                .starts_with("server.alternate_server: must be a unicast")
        );
        assert!(
            only_error("[server]\nalternate_server = \"203.0.113.8\"\n")
                .starts_with("server.alternate_server: not an ip:port address")
        );
    }

    #[test]
    fn alternate_server_that_is_this_server_is_refused() {
        let text = "[server]\nalternate_server = \"127.0.0.1:3478\"\n\
                    [[listen]]\naddress = \"127.0.0.1:3478\"\n";
        assert_eq!(
            only_error(text),
            "server.alternate_server: 127.0.0.1:3478 is this server's own listen[0]; while \
             draining, clients would be sent straight back"
        );
    }

    #[test]
    fn zero_drain_grace_exits_at_once() {
        let c = parse("[server]\ndrain_grace = \"0s\"\n").unwrap();
        assert_eq!(c.server.drain_grace, Duration::ZERO);
        assert!(
            only_error("[server]\ndrain_grace = \"soon\"\n").starts_with("server.drain_grace: ")
        );
    }

    #[test]
    fn empty_api_key_is_refused() {
        assert_eq!(
            only_error("[admin]\napi_key = \"\"\n"),
            "admin.api_key: empty; give at least 16 characters, or remove the key to turn \
             /credentials off"
        );
    }

    #[test]
    fn short_api_key_is_refused() {
        assert_eq!(
            only_error("[admin]\napi_key = \"0123456789abcde\"\n"),
            "admin.api_key: too short; use at least 16 characters (a long random string)"
        );
    }

    #[test]
    fn sub_second_credential_ttl_is_refused() {
        assert_eq!(
            only_error("[admin]\ncredential_ttl = \"500ms\"\n"),
            "admin.credential_ttl: must be at least 1s (credentials expire on whole seconds)"
        );
    }

    #[test]
    fn bad_public_host_is_refused() {
        assert_eq!(
            only_error("[admin]\npublic_host = \"turn://turn.example.com:3478\"\n"),
            "admin.public_host: \"turn://turn.example.com:3478\" is not a host name or IP \
             address; write e.g. \"turn.example.com\" (no scheme, port or brackets)"
        );
        assert_eq!(
            only_error("[admin]\npublic_host = \" \"\n"),
            "admin.public_host: empty; give a host name or IP address, or remove the key to \
             use the relay address"
        );
        assert_eq!(
            only_error("[admin]\npublic_host = \"0.0.0.0\"\n"),
            "admin.public_host: must be an address clients can reach"
        );
        for good in [
            "turn.example.com",
            "203.0.113.7",
            "2001:db8::7",
            "localhost",
        ] {
            let c = parse(&format!("[admin]\npublic_host = {good:?}\n")).unwrap();
            assert_eq!(c.admin.unwrap().public_host.as_deref(), Some(good));
        }
    }

    #[test]
    fn usage_output_names_log_stdout_or_a_file() {
        let out = |text: &str| parse(text).unwrap().usage.output;
        assert_eq!(out("[usage]\noutput = \"stdout\"\n"), UsageOutput::Stdout);
        assert_eq!(
            out("[usage]\noutput = \"/var/log/turnstone/usage.jsonl\"\n"),
            UsageOutput::File(PathBuf::from("/var/log/turnstone/usage.jsonl"))
        );
        assert_eq!(
            out("[usage]\noutput = \"./log\"\n"),
            UsageOutput::File(PathBuf::from("/etc/turnstone/./log"))
        );
    }

    #[test]
    fn empty_usage_output_is_refused() {
        assert_eq!(
            only_error("[usage]\noutput = \"\"\n"),
            "usage.output: empty; use \"log\", \"stdout\" or a file path"
        );
    }

    #[test]
    fn capitalised_usage_keyword_is_refused() {
        assert_eq!(
            only_error("[usage]\noutput = \"Stdout\"\n"),
            "usage.output: write \"stdout\" in lowercase, or \"./Stdout\" for a file of that name"
        );
    }

    #[test]
    fn usage_output_naming_a_directory_is_refused() {
        assert_eq!(
            only_error("[usage]\noutput = \"/var/log/\"\n"),
            "usage.output: names a directory; give a file to append to"
        );
    }

    #[test]
    fn unknown_usage_key_fails_with_its_path() {
        assert_eq!(
            only_error("[usage]\nfile = \"u.jsonl\"\n"),
            "usage.file: unknown key; expected `output`"
        );
    }
}
