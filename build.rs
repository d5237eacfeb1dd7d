//! Compiles the kernel fast path (bpf/fastpath.bpf.c) with clang when clang is there. Without
//! clang the build still succeeds, without the fast path: `cfg(turnstone_bpf)` is unset and
//! `[relay] fast_path` reports it was built without. A program that clang rejects fails the
//! build (that is a bug to fix, not a machine to work around).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    const SOURCE: &str = "bpf/fastpath.bpf.c";
    println!("cargo:rustc-check-cfg=cfg(turnstone_bpf)");
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=TURNSTONE_CLANG");
    let clang = env::var("TURNSTONE_CLANG").unwrap_or_else(|_| "clang".into());
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let found = Command::new(&clang)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!(
            "cargo:warning=clang not found: building without the eBPF fast path (install clang and libbpf-dev to have it)"
        );
        return;
    }
    let out =
        PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("fastpath.bpf.o");
    // The multiarch include directory holds asm/types.h, which the UAPI headers need.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = format!("/usr/include/{arch}-linux-gnu");
    let output = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .args(["-c", SOURCE, "-o"])
        .arg(&out)
        .output()
        .expect("clang runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("file not found") {
        println!(
            "cargo:warning=kernel or libbpf headers missing: building without the eBPF fast path (install libbpf-dev and linux-libc-dev to have it)"
        );
        return;
    }
    assert!(
        output.status.success(),
        "clang failed to compile {SOURCE}:\n{stderr}"
    );
    println!("cargo:rustc-cfg=turnstone_bpf");
}
