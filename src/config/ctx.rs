//! The collector every validation step writes its problems into. It has its own module so
//! that `validate` and the per-section checks (`validate_ops`, `validate_policy`) all
//! depend on it, and none of them on another: the import graph inside `config` stays a tree.

use std::collections::BTreeSet;

use super::error::ConfigError;
use super::load::{covers, document_order};

/// Problems found so far, and the keys that already failed to load.
pub(super) struct Ctx {
    errors: Vec<ConfigError>,
    failed: BTreeSet<String>,
}

impl Ctx {
    /// Starts from what loading found: its problems, and the keys it could not read (so
    /// that validation does not report them a second time).
    pub fn new(errors: Vec<ConfigError>, failed: BTreeSet<String>) -> Self {
        Self { errors, failed }
    }

    /// Records a problem at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// Whether `path` (or a key below it) was already reported while loading.
    pub fn failed(&self, path: &str) -> bool {
        covers(&self.failed, path)
    }

    /// `value` if nothing was reported, else every problem in document order.
    pub fn finish<T>(mut self, value: T) -> Result<T, Vec<ConfigError>> {
        if self.errors.is_empty() {
            return Ok(value);
        }
        // Stable: within a section (or a [[listen]] entry), load problems come first.
        self.errors.sort_by_key(|e| document_order(&e.path));
        Err(self.errors)
    }
}
