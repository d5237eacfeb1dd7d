//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) through the fuzz targets' own
//! checks, so `cargo test` catches a regression on any input the fuzzers were seeded with (or
//! that a past finding was minimised to) without needing cargo-fuzz or a nightly toolchain.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

/// The seed files of one target, sorted; panics if there are none (a missing directory is a
/// packaging mistake, not a pass).
fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

/// Runs `check` on every seed of `target`, naming the seed that fails.
fn replay(target: &str, check: fn(&[u8])) {
    for path in seeds(target) {
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{target}: seed {} failed", path.display());
    }
}

#[test]
fn codec_seeds_round_trip() {
    replay("codec_round_trip", checks::codec::check);
}

#[test]
fn stream_framing_seeds_frame_the_same_whatever_the_split() {
    replay("stream_framing", checks::framing::check);
}

#[test]
fn server_unauthed_seeds_produce_only_well_formed_output() {
    replay("server_unauthed", checks::server::check_unauthed);
}

#[test]
fn server_authed_seeds_produce_only_well_formed_output() {
    replay("server_authed", checks::server::check_authed);
}

#[test]
fn every_seed_is_valid_input_for_every_target() {
    // The checks accept any bytes, so crossing the seed sets is free extra coverage.
    let targets = [
        "codec_round_trip",
        "stream_framing",
        "server_unauthed",
        "server_authed",
    ];
    let checks: [fn(&[u8]); 4] = [
        checks::codec::check,
        checks::framing::check,
        checks::server::check_unauthed,
        checks::server::check_authed,
    ];
    for target in targets {
        for check in checks {
            replay(target, check);
        }
    }
}
