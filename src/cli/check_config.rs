//! `turnstone check-config FILE`.

use std::path::Path;

use anyhow::bail;

use crate::config::Config;

pub(super) fn run(file: &Path) -> anyhow::Result<()> {
    let config = match Config::from_file(file) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                println!("{}: {e}", file.display());
            }
            bail!("{} problem(s) in {}", errors.0.len(), file.display());
        }
    };
    // Certificates and keys must load too.
    let loaded = config
        .listener_specs()
        .map(drop)
        .and_then(|()| config.selftest_tls().map(drop));
    if let Err(e) = loaded {
        println!("{}: {e}", file.display());
        bail!("1 problem in {}", file.display());
    }
    println!("{}: ok", file.display());
    Ok(())
}
