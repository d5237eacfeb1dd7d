//! DESIGN.md §2: `proto`, `core` and `auth` are sans-IO. They use no sockets, threads, clocks,
//! locks or async runtimes: no tokio, socket2, parking_lot or libc, no `std::thread`, no
//! `std::sync::Mutex`, no `std::net` sockets, and they never import `io` or `config`.
//!
//! The sources are read as Rust tokens, not searched as text: comments and string literals
//! are skipped, `use` trees are expanded (`use std::sync::{Arc, Mutex}` is caught), and a
//! path that starts with an imported module (`use std::sync; sync::Mutex`) is resolved.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Paths the sans-IO layers must not use (a path is caught when it is one of these or
/// starts with one followed by `::`).
const FORBIDDEN: &[&str] = &[
    "tokio",
    "socket2",
    "parking_lot",
    "libc",
    "crate::io",
    "crate::config",
    "std::thread",
    "std::sync::Mutex",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::net::TcpListener",
];

/// Known exceptions, each to be removed: (file under src/, forbidden path).
const ALLOWED: &[(&str, &str)] = &[
    // The one exception, pre-existing: the per-user allocation counts shared by the workers'
    // cores sit behind a std Mutex. To remove (e.g. atomics, or counts owned by io).
    ("core/shared.rs", "std::sync::Mutex"),
];

#[test]
fn proto_core_and_auth_use_no_runtime_socket_thread_or_lock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offenders = Vec::new();
    let mut exceptions_used = Vec::new();
    for module in ["proto", "core", "auth"] {
        let mut files = Vec::new();
        rust_files(&root.join(module), &mut files);
        assert!(!files.is_empty(), "no sources found for {module}");
        for file in files {
            let relative = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&file).unwrap();
            for (path, forbidden) in forbidden_uses(&text) {
                if ALLOWED.contains(&(relative.as_str(), forbidden)) {
                    exceptions_used.push((relative.clone(), forbidden));
                } else {
                    offenders.push(format!("src/{relative} uses {path}"));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "sans-IO layering broken:\n{}",
        offenders.join("\n")
    );
    for (file, path) in ALLOWED {
        assert!(
            exceptions_used.iter().any(|(f, p)| f == file && p == path),
            "src/{file} no longer uses {path}: remove it from ALLOWED"
        );
    }
}

#[test]
fn the_guard_sees_through_use_trees_aliases_and_comments() {
    let caught = |text: &str| {
        forbidden_uses(text)
            .into_iter()
            .map(|(_, f)| f)
            .collect::<Vec<_>>()
    };
    assert_eq!(caught("use std::sync::{Arc, Mutex};"), ["std::sync::Mutex"]);
    assert_eq!(
        caught("use std::{net::{IpAddr, UdpSocket as U}, thread};"),
        ["std::net::UdpSocket", "std::thread"]
    );
    assert_eq!(
        caught("use std::sync; fn f() { let m = sync::Mutex::new(0); }"),
        ["std::sync::Mutex"]
    );
    assert_eq!(
        caught("fn f() { std::thread::spawn(|| ()); }"),
        ["std::thread"]
    );
    assert_eq!(caught("use std::net::*;"), ["std::net::UdpSocket"]);
    assert_eq!(
        caught("pub(crate) use parking_lot::Mutex;"),
        ["parking_lot"]
    );
    assert!(
        caught("// use tokio::net;\n/* libc::close */ const S: &str = \"std::thread\";").is_empty()
    );
    assert!(
        caught("use std::sync::{Arc, atomic::AtomicU64}; use std::net::SocketAddr;").is_empty()
    );
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (path, forbidden prefix) the source uses, in order of appearance.
fn forbidden_uses(text: &str) -> Vec<(String, &'static str)> {
    let tokens = tokens(&strip(text));
    let mut paths = Vec::new();
    // Imported names (last segment or alias) → the full path they stand for.
    let mut imports: HashMap<String, String> = HashMap::new();
    let mut i = 0;
    while i < tokens.len() {
        if tokens[i] == "use" {
            let end = (i..tokens.len())
                .find(|&j| tokens[j] == ";")
                .unwrap_or(tokens.len());
            for (path, name) in expand_use(&tokens[i + 1..end]) {
                if let Some(name) = name {
                    imports.insert(name, path.clone());
                }
                paths.push(path);
            }
            i = end + 1;
        } else if is_ident(&tokens[i]) && (i == 0 || tokens[i - 1] != "::") {
            let mut path = vec![tokens[i].clone()];
            let mut j = i + 1;
            while j + 1 < tokens.len() && tokens[j] == "::" && is_ident(&tokens[j + 1]) {
                path.push(tokens[j + 1].clone());
                j += 2;
            }
            if path.len() > 1 {
                if let Some(full) = imports.get(&path[0]) {
                    path[0] = full.clone();
                }
                paths.push(path.join("::"));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    paths
        .into_iter()
        .filter_map(|p| forbidden_prefix(&p).map(|f| (p, f)))
        .collect()
}

/// The forbidden entry `path` falls under; a glob (`std::net::*`) falls under every entry
/// below its module.
fn forbidden_prefix(path: &str) -> Option<&'static str> {
    let under = |p: &str, prefix: &str| p == prefix || p.starts_with(&format!("{prefix}::"));
    FORBIDDEN
        .iter()
        .copied()
        .find(|f| match path.strip_suffix("::*") {
            Some(module) => under(f, module) || under(module, f),
            None => under(path, f),
        })
}

/// Expands a `use` tree into (full path, name it is imported as); `self` names the module.
fn expand_use(tokens: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut at = 0;
    expand_into(tokens, &mut at, "", &mut out);
    out
}

fn expand_into(
    tokens: &[String],
    at: &mut usize,
    prefix: &str,
    out: &mut Vec<(String, Option<String>)>,
) {
    let mut path = prefix.to_owned();
    // The name the tree imports so far: its last segment (for `self`, the module's).
    let mut name = None;
    loop {
        match tokens.get(*at).map(String::as_str) {
            Some("::") => *at += 1,
            Some("{") => {
                *at += 1;
                loop {
                    match tokens.get(*at).map(String::as_str) {
                        None => return,
                        Some("}") => {
                            *at += 1;
                            return;
                        }
                        Some(",") => *at += 1,
                        Some(_) => expand_into(tokens, at, &path, out),
                    }
                }
            }
            Some("*") => {
                *at += 1;
                out.push((join(&path, "*"), None));
                return;
            }
            Some("as") => {
                let alias = tokens.get(*at + 1).cloned();
                *at += 2;
                out.push((path, alias));
                return;
            }
            Some("," | "}") | None => {
                if name.is_some() {
                    out.push((path, name));
                }
                return;
            }
            Some("self") => {
                *at += 1;
                name = path.rsplit("::").next().map(str::to_owned);
            }
            Some(segment) => {
                *at += 1;
                path = join(&path, segment);
                name = Some(segment.to_owned());
            }
        }
    }
}

fn join(prefix: &str, segment: &str) -> String {
    if prefix.is_empty() {
        segment.to_owned()
    } else {
        format!("{prefix}::{segment}")
    }
}

fn is_ident(token: &str) -> bool {
    token
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

/// The code without comments, string literals and char literals (lifetimes are kept).
fn strip(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1).copied()) {
            ('/', Some('/')) => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            ('r', Some('"' | '#')) if raw_string_end(&chars, i).is_some() => {
                i = raw_string_end(&chars, i).unwrap_or(chars.len());
                out.push(' ');
            }
            ('"', _) => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                out.push(' ');
            }
            ('\'', Some('\\')) => {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(' ');
            }
            ('\'', Some(_)) if chars.get(i + 2) == Some(&'\'') => {
                i += 3;
                out.push(' ');
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Where a raw string literal starting at `i` (`r"…"`, `r#"…"#`) ends, if one does start
/// there (and `r` is not the end of an identifier).
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
    let open = i + 1 + hashes;
    if chars.get(open) != Some(&'"') {
        return None;
    }
    let mut j = open + 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}
