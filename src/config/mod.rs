//! The TOML configuration: file → validated [`Config`], or every problem at once.
//!
//! Every table refuses unknown keys and every key has a default; durations are
//! strings with a unit (`"10m"`). Problems are collected, each with its key path
//! (`listen[1].certificate`) and a plain message; syntax errors carry line and
//! column. Relative file paths are resolved against the config file's directory.

mod build;
mod duration;
mod error;
mod load;
mod raw;
mod types;
mod validate;
mod validate_policy;

use std::path::Path;

pub use build::BuildError;
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors, Location};
pub use types::{
    AdminConfig, AuthConfig, Config, LimitsConfig, ListenerConfig, LogConfig, LogLevel,
    LogLevelError, PeersConfig, Protocol, ProtocolError, RelayConfig, ServerConfig, TlsFiles,
    UserConfig,
};

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
"#;

    #[test]
    fn the_documented_schema_parses_into_the_typed_config() {
        let c = parse(SCHEMA).unwrap();
        assert_eq!(c.server.realm, "turnstone.test");
        assert_eq!(c.server.software.as_deref(), Some("turnstone"));
        assert_eq!(c.server.workers, 0);
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
                address: addr("127.0.0.1:9641")
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
        assert_eq!(
            c.admin,
            Some(AdminConfig {
                address: addr("127.0.0.1:9641")
            })
        );
        assert_eq!(c.relay.address, None);
        assert!(c.auth.secrets.is_empty() && c.auth.users.is_empty());
        assert!(c.peers.allow.is_empty());
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
             `external_address`, `external_address_v6`"
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
        let c = parse("[relay]\naddress = \"0.0.0.0\"\nexternal_address = \"203.0.113.7\"\n");
        assert!(c.is_ok());
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
}
