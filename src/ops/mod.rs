//! Operations: the admin HTTP listener (`/healthz`, `/readyz`, `/metrics`, `/credentials`) and
//! the Prometheus recorder.

mod http;
mod metrics;

pub use http::{
    AdminHandle, AdminLimits, AdminState, CredentialIssuer, spawn_admin, spawn_admin_with,
};
pub use metrics::install_recorder;
