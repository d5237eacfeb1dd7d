//! Operations: the admin HTTP listener (`/healthz`, `/readyz`, `/metrics`, `/credentials`) and
//! the Prometheus recorder.

mod http;
mod metrics;

pub use http::{AdminHandle, AdminState, CredentialIssuer, spawn_admin};
pub use metrics::install_recorder;
