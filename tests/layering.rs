//! DESIGN.md §2: `proto` and `core` are sans-IO; they never import tokio, socket2 or governor.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn proto_and_core_import_no_runtime_socket_or_limiter_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    for module in ["proto", "core", "auth"] {
        let mut files = Vec::new();
        rust_files(&root.join(module), &mut files);
        assert!(!files.is_empty(), "no sources found for {module}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for forbidden in ["tokio", "socket2", "governor", "crate::io", "crate::config"] {
                let used = text.lines().any(|l| {
                    let l = l.trim_start();
                    !l.starts_with("//")
                        && (l.contains(&format!("{forbidden}::"))
                            || l.contains(&format!("use {forbidden}")))
                });
                if used {
                    offenders.push(format!("{} uses {forbidden}", file.display()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "sans-IO layering broken:\n{}",
        offenders.join("\n")
    );
}
