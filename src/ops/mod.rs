//! Operations: the admin HTTP listener (`/healthz`, `/readyz`).

mod http;

pub use http::{AdminHandle, AdminState, spawn_admin};
