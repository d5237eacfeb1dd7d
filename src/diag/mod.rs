//! The diagnostic client behind `turnstone probe`: it walks a STUN/TURN server through resolve,
//! connect (and TLS), Binding, the 401 challenge, Allocate, a relay round trip through its own
//! echo socket, and Refresh, and says in plain words what failed and what to do.
//!
//! Verdicts are pure functions ([`verdict`], [`verdict_net`]); the network steps run on tokio.
//! Time for credential checks comes in as [`ProbeConfig::unix_now`]; round-trip times are
//! measured with `tokio::time`.

mod conn;
mod nat;
mod relay;
mod report;
mod run;
mod session;
mod tls;
mod turn;
mod uri;
pub mod verdict;
pub mod verdict_net;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

pub use nat::{Filtering, Mapping};
pub use report::{Report, Status, Step, StepReport};
pub use uri::{Target, Transport, UriError};

/// How long a REST credential minted by the probe stays valid.
pub const REST_TTL: Duration = Duration::from_secs(3600);

/// Credentials for the TURN steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// None: only the steps up to the 401 challenge can pass.
    None,
    /// A long-term credential (RFC 8489 §9.2), or a REST credential minted elsewhere.
    Static {
        /// USERNAME.
        username: String,
        /// The password.
        password: String,
    },
    /// A TURN REST API credential minted locally from the shared secret, valid for
    /// [`REST_TTL`]: username "<expiry>:<user>", password base64(HMAC-SHA1(secret, username)).
    Rest {
        /// The shared secret.
        secret: String,
        /// The user part of the username.
        user: String,
    },
}

impl Credentials {
    /// (username, password, minted here) at `unix_now`; `None` without credentials.
    fn resolve(&self, unix_now: u64) -> Option<(String, String, bool)> {
        match self {
            Self::None => None,
            Self::Static { username, password } => {
                Some((username.clone(), password.clone(), false))
            }
            Self::Rest { secret, user } => {
                let username =
                    crate::auth::rest_username(unix_now + REST_TTL.as_secs(), Some(user));
                let password = crate::auth::rest_password(secret.as_bytes(), &username);
                Some((username, password, true))
            }
        }
    }
}

/// What to probe and how.
#[derive(Clone, Debug)]
pub struct ProbeConfig {
    /// The server.
    pub target: Target,
    /// Credentials for Allocate.
    pub credentials: Credentials,
    /// Bound on each step's wait for an answer.
    pub timeout: Duration,
    /// Accept any TLS certificate (self-signed, expired, wrong name); problems are still reported.
    pub insecure: bool,
    /// Trust this PEM CA file instead of the system bundle.
    pub ca_file: Option<PathBuf>,
    /// Run RFC 5780 NAT behaviour discovery after the TURN steps.
    pub nat: bool,
    /// This machine's clock, Unix seconds (for REST credentials and their verdicts).
    pub unix_now: u64,
}

impl ProbeConfig {
    /// A probe of `target` without credentials, 3 s timeout, certificates verified.
    pub fn new(target: Target, unix_now: u64) -> Self {
        Self {
            target,
            credentials: Credentials::None,
            timeout: Duration::from_secs(3),
            insecure: false,
            ca_file: None,
            nat: false,
            unix_now,
        }
    }
}

/// Probes the server; never fails: every problem is a step of the report.
pub async fn probe(config: &ProbeConfig) -> Report {
    let mut report = Report {
        target: config.target.to_string(),
        steps: Vec::new(),
    };
    run::run(config, &mut report.steps).await;
    for step in expected_steps(config) {
        if report.step(step).is_none() {
            report
                .steps
                .push(StepReport::skipped(step, "not run: an earlier step failed"));
        }
    }
    report.steps.sort_by_key(|s| s.step);
    report
}

/// The steps a probe with `config` reports.
fn expected_steps(config: &ProbeConfig) -> Vec<Step> {
    let mut steps = vec![Step::Resolve, Step::Connect];
    if config.target.transport == Transport::Tls {
        steps.push(Step::Tls);
    }
    steps.push(Step::Binding);
    if config.target.turn {
        steps.extend([
            Step::Challenge,
            Step::Allocate,
            Step::Permission,
            Step::Relay,
            Step::Refresh,
        ]);
    }
    if config.nat {
        steps.push(Step::Nat);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_credentials_are_minted_from_the_secret_with_the_ttl() {
        let c = Credentials::Rest {
            secret: "secret".into(),
            user: "alice".into(),
        };
        let (u, p, minted) = c.resolve(1_700_000_000 - 3600).unwrap();
        assert_eq!(u, "1700000000:alice");
        assert_eq!(p, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        assert!(minted);
        assert_eq!(Credentials::None.resolve(0), None);
    }

    #[test]
    fn a_turns_probe_with_nat_lists_every_step() {
        let mut c = ProbeConfig::new("turns:example.com".parse().unwrap(), 0);
        c.nat = true;
        assert_eq!(expected_steps(&c).len(), 10);
        let c = ProbeConfig::new("stun:example.com".parse().unwrap(), 0);
        assert_eq!(
            expected_steps(&c),
            [Step::Resolve, Step::Connect, Step::Binding]
        );
    }
}
