//! DESIGN.md §2 as a test: which module may import which, what the sans-IO layers may not
//! touch, and no import cycles. It parses the sources with `syn` and resolves every path
//! (`use` trees, expressions, types, macro paths and macro arguments) to an absolute one
//! through `self`/`super`/`crate`, aliases, renames, globs and re-exports (see `scan.rs`), so a
//! grouped, multi-line, relative, renamed, re-exported or fully qualified path is caught the
//! same way as a plain `use`. `guard_catches_*` below shows each of those being caught.
//!
//! Limits: resolution is by name, without types, so method calls (`t.elapsed()`) and trait
//! dispatch are not seen (clippy.toml's disallowed-methods checks by type), and `#[macro_use]`
//! textual macro scope is not followed. `sans_io_modules_import_only_sans_io_modules` is what
//! keeps type aliases and wrappers from hiding a lock: they would have to live in a module
//! the same rules check.

mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scan::{Crate, Ref, Segs};

/// DESIGN §2, "A → B: A may import B", for the top-level modules of `src/`. A module may
/// always use itself; anything not listed is refused. `ops` is imported by `cli` only.
const MAY_IMPORT: &[(&str, &[&str])] = &[
    ("proto", &[]),
    ("auth", &["proto"]),
    ("core", &["proto", "auth"]),
    ("sys", &[]),
    ("io", &["core", "proto", "auth", "sys"]),
    ("config", &["core", "io", "auth"]),
    // What it reports on, never the reverse: counters reach it through the `metrics` facade.
    ("ops", &["core", "proto", "auth", "io", "config", "sys"]),
    ("diag", &["proto", "auth"]),
    ("loadgen", &["proto", "auth", "sys"]),
    (
        "cli",
        &[
            "proto", "auth", "core", "sys", "io", "config", "ops", "diag", "loadgen",
        ],
    ),
];

/// External crates the pure layers may use in shipped code (std's `core`/`alloc` included);
/// any other crate, including one added to Cargo.toml later, is refused there.
const EXTERNS: &[(&str, &[&str])] = &[
    (
        "proto",
        &[
            "std",
            "core",
            "alloc",
            "thiserror",
            "hmac",
            "sha1",
            "sha2",
            "md5",
            "crc32fast",
        ],
    ),
    (
        "auth",
        &[
            "std",
            "core",
            "alloc",
            "thiserror",
            "hmac",
            "sha1",
            "sha2",
            "md5",
            "base64",
            "getrandom",
        ],
    ),
    (
        "core",
        &[
            "std",
            "core",
            "alloc",
            "thiserror",
            "tracing",
            "foldhash",
            "hmac",
            "sha1",
            "sha2",
            "md5",
        ],
    ),
    // socket2: the socket options std lacks (SO_REUSEPORT, IPV6_V6ONLY before bind).
    ("sys", &["std", "core", "alloc", "libc", "socket2"]),
];

/// The sans-IO layers: no sockets, threads, clocks, locks or async runtimes (DESIGN §2, §3).
/// Test code (`#[cfg(test)]`, `#[test]`) is exempt: it never ships, and a virtual clock
/// needs one real origin.
const SANS_IO: &[&str] = &["core", "proto", "auth"];
const NO_IO: &[(&str, &str)] = &[
    ("tokio", "async runtime"),
    ("socket2", "sockets"),
    ("governor", "rate limiter (it reads a clock)"),
    ("mio", "event loop"),
    ("libc", "system calls"),
    ("parking_lot", "locks"),
    ("std::thread", "threads"),
    (
        "std::thread_local",
        "thread-local state (one worker owns a core)",
    ),
    ("std::sync::Mutex", "locks"),
    ("std::sync::RwLock", "locks"),
    ("std::sync::Condvar", "blocking waits"),
    ("std::sync::Barrier", "blocking waits"),
    ("std::sync::mpsc", "channels between threads"),
    ("std::net::UdpSocket", "sockets"),
    ("std::net::TcpStream", "sockets"),
    ("std::net::TcpListener", "sockets"),
    ("std::os::unix::net", "sockets"),
    (
        "std::time::Instant::now",
        "clock reads (`Now` is passed in)",
    ),
    (
        "std::time::SystemTime::now",
        "clock reads (`Now` is passed in)",
    ),
    ("std::fs", "files"),
    ("std::process", "processes"),
    ("std::include", "included source (the guard cannot see it)"),
];

/// Known departures from the rules above, each with why and what removes it. The test fails
/// when one is no longer needed, so the list cannot rot. (module prefix, path prefix, why)
/// None is left (issue 14 item 6 moved the last, the core's `std::sync::Mutex` around the
/// shared quota counts, to io); the list stays so a departure can be named while it is being
/// removed, and `guard_catches_evasions_in_the_real_crate` proves the mechanism still works.
type Exception = (&'static str, &'static str, &'static str);
const EXCEPTIONS: &[Exception] = &[];

/// Import cycles among the children of one module, as they stand today: (module, the
/// members of one strongly connected component). None is left (issue 14 item 4: "no import
/// cycle inside any module"); the list stays so a known cycle can be named while it is
/// being removed. Any new cycle fails.
const KNOWN_CYCLES: &[(&str, &[&str])] = &[];

/// One broken rule: where, in which module, and which path broke it.
struct Violation {
    module: Segs,
    path: Segs,
    message: String,
}

#[test]
fn sources_follow_the_layering_of_design_section_2() {
    let failures = audit(&real_sources());
    assert!(
        failures.is_empty(),
        "DESIGN §2 layering broken:\n{}",
        failures.join("\n")
    );
}

#[test]
fn guard_catches_evasions_in_the_real_crate() {
    // The real module tree, with an evasion added to a real core file.
    let mut sources = real_sources();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let file = root.join("core/allocate.rs");
    let evasion = "\nuse super::super::{\n    io::clock as tick,\n};\n\
                   fn leak() { tick::now(); ::std::thread::spawn(|| ()); }\n";
    sources.entry(file).or_default().push_str(evasion);
    let found = audit(&sources);
    for what in [
        "`crate::io::clock`",
        "`crate::io::clock::now`",
        "`std::thread::spawn`",
    ] {
        let hit = |f: &String| f.contains("crate::core::allocate uses") && f.contains(what);
        assert!(found.iter().any(hit), "{what} not caught: {found:#?}");
    }
    // An exception excuses what it names, and only that: a lock added to a real core file
    // passes with an exception for it, and fails without one.
    let lock = ("crate::core::shared", "std::sync::Mutex", "synthetic");
    let mut sources = real_sources();
    let shared = sources.entry(root.join("core/shared.rs")).or_default();
    shared.push_str("\nstatic LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());\n");
    let hit = |f: &String| f.contains("crate::core::shared uses `std::sync::Mutex`");
    assert!(audit_with(&sources, &[]).iter().any(hit), "lock not caught");
    let excused = audit_with(&sources, &[lock]);
    assert!(excused.is_empty(), "{excused:#?}");
    // An exception nobody needs any more fails too, so the list cannot rot.
    let found = audit_with(&real_sources(), &[lock]);
    assert!(
        found.iter().any(|f| f
            .contains("exception 0 (crate::core::shared → std::sync::Mutex) is no longer needed")),
        "{found:#?}"
    );
}

fn real_sources() -> BTreeMap<PathBuf, String> {
    let mut sources = BTreeMap::new();
    read_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut sources,
    );
    sources
}

/// Every failure of the real crate's layering, with `sources` standing for `src/`.
fn audit(sources: &BTreeMap<PathBuf, String>) -> Vec<String> {
    audit_with(sources, EXCEPTIONS)
}

/// [`audit`] with `exceptions` in place of [`EXCEPTIONS`].
fn audit_with(sources: &BTreeMap<PathBuf, String>, exceptions: &[Exception]) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let krate = parse(&root, sources);
    let mut failures = Vec::new();

    // Every file under src/ is part of the crate (binaries are their own crates, `cli`-like).
    let reached: BTreeSet<&str> = krate.files().collect();
    for file in sources.keys().map(|f| f.display().to_string()) {
        let binary = file.ends_with("src/main.rs") || file.contains("src/bin/");
        if !binary && !reached.contains(file.as_str()) {
            failures.push(format!("{file} is not reached from lib.rs"));
        }
    }

    let refs = krate.refs();
    let mut used = vec![false; exceptions.len()];
    for v in violations(&krate, &refs) {
        match exceptions
            .iter()
            .position(|&(m, p, _)| starts(&v.module, m) && starts(&v.path, p))
        {
            Some(i) => used[i] = true,
            None => failures.push(v.message),
        }
    }
    for (i, (m, p, _)) in exceptions.iter().enumerate().filter(|(i, _)| !used[*i]) {
        failures.push(format!(
            "exception {i} ({m} → {p}) is no longer needed: remove it"
        ));
    }

    let found = cycles(&krate, &refs);
    let known: BTreeSet<(String, Vec<String>)> = KNOWN_CYCLES
        .iter()
        .map(|(m, c)| (m.to_string(), c.iter().map(|s| s.to_string()).collect()))
        .collect();
    for (key, edges) in &found {
        if !known.contains(key) {
            failures.push(format!(
                "import cycle in {}: {{{}}}\n{edges}",
                key.0,
                key.1.join(", ")
            ));
        }
    }
    for key in known.iter().filter(|k| !found.contains_key(*k)) {
        failures.push(format!(
            "known cycle in {} {{{}}} changed: update KNOWN_CYCLES",
            key.0,
            key.1.join(", ")
        ));
    }
    failures
}

/// Every rule broken by `refs`, exceptions not yet applied.
fn violations(krate: &Crate, refs: &[Ref]) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in refs {
        let Some(from) = r.module.get(1).map(String::as_str) else {
            continue;
        };
        let allowed = MAY_IMPORT.iter().find(|(m, _)| *m == from).map(|(_, a)| *a);
        let Some(allowed) = allowed else {
            let message = format!("{}: module `{from}` is not in MAY_IMPORT", r.at);
            out.push(Violation {
                module: r.module.clone(),
                path: r.target().clone(),
                message,
            });
            continue;
        };
        let mut broke = |path: &Segs, why: String| {
            let message = format!(
                "{}: {} uses `{}`: {why}",
                r.at,
                r.module.join("::"),
                path.join("::")
            );
            out.push(Violation {
                module: r.module.clone(),
                path: path.clone(),
                message,
            });
        };
        // Every hop counts: reaching `io` through another module's re-export is reaching `io`.
        for hop in &r.hops {
            if hop.len() < 2 || hop[0] != "crate" || hop[1] == from || !krate.is_module(&hop[..2]) {
                continue;
            }
            if !allowed.contains(&hop[1].as_str()) {
                broke(
                    hop,
                    format!("`{from}` may not import `{}` (DESIGN §2)", hop[1]),
                );
                break; // one message per path is enough
            }
        }
        let target = r.target();
        if r.test_only || target[0] == "crate" {
            continue;
        }
        if SANS_IO.contains(&from) {
            for (pattern, what) in NO_IO {
                let pat: Segs = pattern.split("::").map(String::from).collect();
                // A glob of a prefix (`std::sync::*`) may bring in the forbidden item.
                let hit = target.starts_with(&pat) || r.glob && pat.starts_with(target);
                if hit {
                    broke(target, format!("`{from}` is sans-IO: no {what}"));
                }
            }
        }
        if let Some((_, ok)) = EXTERNS.iter().find(|(m, _)| *m == from) {
            if !ok.contains(&target[0].as_str()) {
                broke(
                    target,
                    format!("`{from}` may not use the `{}` crate", target[0]),
                );
            }
        }
    }
    out
}

/// Import cycles among the children of each module, from the paths shipped code uses. Not
/// counted: `pub use` re-exports (a facade is not a dependency), test code (a unit test may
/// drive its siblings), and the parent's own file (`mod.rs` declares, re-exports and
/// dispatches to its children, and they use the types it defines: that is its job).
/// Key: (module, members); value: the edges inside, one example location each.
fn cycles(krate: &Crate, refs: &[Ref]) -> BTreeMap<(String, Vec<String>), String> {
    // parent → (from child, to child) → example location; "self" is the parent's own file.
    let mut graphs: BTreeMap<Segs, BTreeMap<(String, String), String>> = BTreeMap::new();
    for r in refs.iter().filter(|r| !r.reexport && !r.test_only) {
        let target = r.target();
        let Some(len) = (1..=target.len())
            .rev()
            .find(|&k| krate.is_module(&target[..k]))
        else {
            continue;
        };
        let to = &target[..len];
        let common = r.module.iter().zip(to).take_while(|(a, b)| a == b).count();
        let node = |m: &[String]| m.get(common).cloned().unwrap_or_else(|| "self".into());
        let (a, b) = (node(&r.module), node(to));
        if a != b && a != "self" && b != "self" {
            let edges = graphs.entry(r.module[..common].to_vec()).or_default();
            edges.entry((a, b)).or_insert_with(|| r.at.clone());
        }
    }
    let mut out = BTreeMap::new();
    for (parent, edges) in &graphs {
        let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
        let reach = |from: &String| {
            let mut seen: BTreeSet<String> = BTreeSet::from([from.clone()]);
            let mut todo = vec![from];
            while let Some(n) = todo.pop() {
                for (_, b) in edges.keys().filter(|(a, _)| a == n) {
                    if seen.insert(b.clone()) {
                        todo.push(b);
                    }
                }
            }
            seen
        };
        let reach: BTreeMap<&String, BTreeSet<String>> =
            nodes.iter().map(|n| (*n, reach(n))).collect();
        for n in &nodes {
            let scc: Vec<String> = nodes
                .iter()
                .filter(|m| reach[*n].contains(**m) && reach[*m].contains(*n as &String))
                .map(|m| m.to_string())
                .collect();
            if scc.len() > 1 {
                let inside = edges
                    .iter()
                    .filter(|((a, b), _)| scc.contains(a) && scc.contains(b));
                let detail: Vec<String> = inside
                    .map(|((a, b), at)| format!("  {a} → {b} ({at})"))
                    .collect();
                out.insert((parent.join("::"), scc), detail.join("\n"));
            }
        }
    }
    out
}

fn starts(path: &[String], prefix: &str) -> bool {
    let prefix: Vec<&str> = prefix.split("::").collect();
    path.len() >= prefix.len() && path.iter().zip(&prefix).all(|(a, b)| a == b)
}

fn read_dir(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("src/ entries are readable").path();
        if path.is_dir() {
            read_dir(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("sources are UTF-8");
            out.insert(path, text);
        }
    }
}

/// The crate, with the external crate names Cargo.toml puts in scope.
fn parse(root: &Path, sources: &BTreeMap<PathBuf, String>) -> Crate {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let text = std::fs::read_to_string(manifest).expect("Cargo.toml is readable");
    let manifest: toml::Table = toml::from_str(&text).expect("Cargo.toml parses");
    let mut externs: BTreeSet<String> = ["std", "core", "alloc"].map(String::from).into();
    for section in ["dependencies", "dev-dependencies"] {
        let deps = manifest
            .get(section)
            .and_then(|d| d.as_table())
            .into_iter()
            .flatten();
        // md-5's library is called `md5`; every other dependency is its name with `_`.
        externs.extend(deps.map(|(name, _)| {
            if name == "md-5" {
                "md5".into()
            } else {
                name.replace('-', "_")
            }
        }));
    }
    Crate::parse(root, sources, externs).unwrap_or_else(|e| panic!("cannot parse the crate: {e}"))
}

/// Violations in a small crate made of `files` (relative to a virtual `src/`) on top of a
/// minimal skeleton with the real module names.
fn check_snippet(files: &[(&str, &str)]) -> Vec<String> {
    let root = PathBuf::from("/virtual/src");
    let mut sources: BTreeMap<PathBuf, String> = [
        (
            "lib.rs",
            "pub mod core; pub mod io; pub mod ops; pub mod proto;",
        ),
        ("core/mod.rs", ""),
        ("io/mod.rs", "pub mod clock;"),
        ("io/clock.rs", "pub fn now() {}"),
        ("ops/mod.rs", "pub use crate::io::clock;"),
        ("proto/mod.rs", "pub struct Message;"),
    ]
    .into_iter()
    .map(|(f, t)| (root.join(f), t.to_owned()))
    .collect();
    sources.extend(files.iter().map(|(f, t)| (root.join(f), t.to_string())));
    let krate = parse(&root, &sources);
    let refs = krate.refs();
    let mut out: Vec<String> = violations(&krate, &refs)
        .into_iter()
        .map(|v| v.message)
        .collect();
    out.extend(
        cycles(&krate, &refs)
            .into_keys()
            .map(|(m, c)| format!("cycle in {m}: {c:?}")),
    );
    out
}

/// Asserts that `core_src`, as src/core/mod.rs, is refused with a message containing `what`.
#[track_caller]
fn assert_caught(core_src: &str, what: &str) {
    let found = check_snippet(&[("core/mod.rs", core_src)]);
    assert!(
        found.iter().any(|v| v.contains(what)),
        "not caught ({what}):\n{core_src}\nfound: {found:#?}"
    );
}

#[test]
fn guard_catches_grouped_multi_line_and_relative_imports() {
    assert_caught("use crate::{io::clock};", "`crate::io::clock`");
    assert_caught(
        "use crate::{\n    proto::Message,\n    io::{\n        clock,\n    },\n};",
        "`crate::io::clock`",
    );
    assert_caught("use super::io::clock;", "`crate::io::clock`");
    let deep = [
        ("core/mod.rs", "mod a;"),
        ("core/a.rs", "mod b;"),
        ("core/a/b.rs", "use super::super::super::io::clock;"),
    ];
    assert!(
        check_snippet(&deep)
            .iter()
            .any(|v| v.contains("crate::core::a::b uses `crate::io::clock`"))
    );
    assert_caught("mod inner { use self::super::super::io; }", "`crate::io`");
}

#[test]
fn guard_catches_re_exports_aliases_and_globs() {
    // Through a module core may not import, and through one that launders it.
    assert_caught("pub use crate::io as x;", "`crate::io`");
    assert_caught("use crate::ops::clock;", "`core` may not import `ops`");
    let glob = [
        ("proto/mod.rs", "pub use crate::io::clock as ticks;"),
        (
            "core/mod.rs",
            "use crate::proto::*; fn f() { ticks::now(); }",
        ),
    ];
    let found = check_snippet(&glob);
    assert!(
        found
            .iter()
            .any(|v| v.contains("crate::core uses `crate::io::clock::now`")),
        "{found:#?}"
    );
    let laundered = [
        ("proto/mod.rs", "pub use crate::io::clock as ticks;"),
        ("core/mod.rs", "fn f() { crate::proto::ticks::now(); }"),
    ];
    assert!(
        check_snippet(&laundered)
            .iter()
            .any(|v| v.contains("crate::core uses `crate::io::clock::now`"))
    );
    assert_caught("use crate::io::*;", "`crate::io`");
    assert_caught("use std::sync::*;", "no locks");
    assert_caught(
        "use std::thread as t; fn f() { t::spawn(|| ()); }",
        "`std::thread::spawn`",
    );
    assert_caught(
        "use std::sync as s; static M: s::Mutex<u8> = s::Mutex::new(0);",
        "`std::sync::Mutex`",
    );
    assert_caught(
        "use std::sync as s; fn s() {} static M: s::Mutex<u8> = s::Mutex::new(0);",
        "`std::sync::Mutex`",
    );
    assert_caught(
        "use std::{time::{self as clock}}; fn f() { clock::Instant::now(); }",
        "no clock reads",
    );
}

#[test]
fn guard_catches_fully_qualified_paths_extern_crate_and_macros() {
    assert_caught("fn f() { std::thread::spawn(|| ()); }", "no threads");
    assert_caught(
        "fn f() { ::std::net::UdpSocket::bind(\"0.0.0.0:0\"); }",
        "no sockets",
    );
    assert_caught(
        "fn f() -> i32 { unsafe { libc::getpid() } }",
        "no system calls",
    );
    assert_caught("fn f(m: &parking_lot::Mutex<u8>) {}", "no locks");
    assert_caught("fn f() { std::time::SystemTime::now(); }", "no clock reads");
    assert_caught(
        "use std::time::Instant; fn f() { <Instant>::now(); }",
        "`std::time::Instant::now`",
    );
    assert_caught("extern crate libc;", "`libc`");
    assert_caught(
        "extern crate socket2 as s2; fn f() { s2::Socket::new(); }",
        "`socket2::Socket::new`",
    );
    assert_caught(
        "fn f() { println!(\"{:?}\", std::thread::current().id()); }",
        "no threads",
    );
    assert_caught("thread_local! { static X: u8 = 0; }", "thread-local");
    assert_caught("#[tokio::main] async fn main() {}", "no async runtime");
    assert_caught(
        "fn f() { let _ = tokio::spawn(async {}); }",
        "may not use the `tokio` crate",
    );
    assert_caught("fn f() { std::fs::read(\"x\"); }", "no files");
    // Only the test kit's gate counts as test code; any other feature may ship.
    assert_caught(
        "#[cfg(feature = \"fast\")] fn f() { std::thread::spawn(|| ()); }",
        "no threads",
    );
    assert_caught(
        "#[cfg(any(test, feature = \"fast\"))] fn f() { std::thread::spawn(|| ()); }",
        "no threads",
    );
    // `#[path]` pulls io's file into core: it is checked as core's.
    let io_clock = "pub fn now() -> std::time::Instant { std::time::Instant::now() }";
    let moved = [
        ("io/clock.rs", io_clock),
        ("core/mod.rs", "#[path = \"../io/clock.rs\"] mod clock;"),
    ];
    let found = check_snippet(&moved);
    assert!(
        found
            .iter()
            .any(|v| v.contains("crate::core::clock uses `std::time::Instant::now`")),
        "{found:#?}"
    );
}

#[test]
fn guard_catches_exported_macros() {
    let io =
        "pub mod clock; #[macro_export] macro_rules! leak { () => { $crate::io::clock::now() } }";
    for call in ["fn f() { crate::leak!(); }", "fn f() { leak!(); }"] {
        let found = check_snippet(&[("io/mod.rs", io), ("core/mod.rs", call)]);
        let hit = |v: &String| v.contains("crate::core uses `crate::io::leak`");
        assert!(found.iter().any(hit), "{call}: {found:#?}");
    }
}

/// The sans-IO rules see no types, so they hold only if a sans-IO module can import nothing
/// but other sans-IO modules: a type alias or wrapper elsewhere would otherwise hide a lock.
#[test]
fn sans_io_modules_import_only_sans_io_modules() {
    for (module, imports) in MAY_IMPORT.iter().filter(|(m, _)| SANS_IO.contains(m)) {
        for import in *imports {
            assert!(
                SANS_IO.contains(import),
                "{module} may import {import}, which is not sans-IO"
            );
        }
    }
}

#[test]
fn guard_catches_cycles_and_accepts_clean_code() {
    let cycle = [
        ("core/mod.rs", "mod a; mod b;"),
        ("core/a.rs", "use super::b::B; pub struct A;"),
        ("core/b.rs", "use super::a::A; pub struct B;"),
    ];
    assert!(
        check_snippet(&cycle)
            .iter()
            .any(|v| v.contains("cycle in crate::core: [\"a\", \"b\"]"))
    );
    let up = [
        ("lib.rs", "pub mod core; pub mod io; pub mod proto;"),
        ("proto/mod.rs", "use crate::core::X;"),
        ("core/mod.rs", "pub struct X; use crate::proto::Message;"),
    ];
    let found = check_snippet(&up);
    assert!(
        found
            .iter()
            .any(|v| v.contains("cycle in crate: [\"core\", \"proto\"]")),
        "{found:#?}"
    );

    let fine = "use std::sync::Arc;\nuse std::sync::atomic::{AtomicU64, Ordering};\nuse std::time::{Duration, Instant};\n\
                use crate::proto::{self as wire, Message};\nfn f(t: Instant, m: wire::Message) -> Arc<Message> {\n\
                let _ = (t + Duration::from_secs(1), AtomicU64::new(0).load(Ordering::Relaxed));\n\
                thiserror_like(); Arc::new(m) }\nfn thiserror_like() {}\n\
                #[cfg(test)] mod tests { #[test] fn t() { std::thread::spawn(|| std::time::Instant::now()); } }\n\
                #[cfg(any(test, feature = \"testkit\"))] pub mod kit { pub fn origin() -> std::time::Instant { std::time::Instant::now() } }";
    let found = check_snippet(&[("core/mod.rs", fine)]);
    assert!(found.is_empty(), "clean code refused: {found:#?}");
}
