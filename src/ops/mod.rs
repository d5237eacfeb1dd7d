//! Operations: the admin HTTP listener (`/healthz`, `/readyz`, `/metrics`, `/credentials`), the
//! public self-test page (`selftest`) and the Prometheus recorder.

mod http;
mod metrics;
pub mod selftest;

pub use http::{
    AdminHandle, AdminLimits, AdminState, CredentialIssuer, spawn_admin, spawn_admin_with,
};
pub use metrics::install_recorder;
