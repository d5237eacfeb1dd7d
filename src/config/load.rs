//! TOML text → [`RawConfig`], collecting every syntax, type and unknown-key problem.
//!
//! Serde stops at the first error of a table, so each section is deserialized on
//! its own; when one fails, each of its keys is tried alone to name every bad key
//! (unknown keys fail through `deny_unknown_fields`), and the section is rebuilt
//! from the good keys with defaults for the rest.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::error::{ConfigError, Location};
use super::raw::{RawConfig, RawUser};

/// The sections a configuration file may contain, in the order they are read.
const SECTIONS: [&str; 10] = [
    "server", "log", "listen", "admin", "relay", "auth", "peers", "limits", "usage", "selftest",
];

/// What the loader found: the raw config (bad keys replaced by defaults), the
/// problems, and the key paths that had one (so `validate` can skip checks
/// that would only echo them).
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub raw: RawConfig,
    pub errors: Vec<ConfigError>,
    pub failed: BTreeSet<String>,
}

impl Loaded {
    fn push(&mut self, path: String, message: impl Into<String>) {
        self.failed.insert(path.clone());
        self.errors.push(ConfigError::new(path, message));
    }
}

/// Sort key putting problems in section order, then array entry order; unknown
/// top-level keys first.
pub(super) fn document_order(path: &str) -> (usize, usize) {
    let end = path.find(['.', '[']).unwrap_or(path.len());
    let section = SECTIONS
        .iter()
        .position(|s| *s == &path[..end])
        .map_or(0, |i| i + 1);
    let index = path[end..]
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .and_then(|(i, _)| i.parse().ok())
        .unwrap_or(0);
    (section, index)
}

/// Whether `path`, or a key below it, is in `failed`.
pub(super) fn covers(failed: &BTreeSet<String>, path: &str) -> bool {
    failed.iter().any(|p| {
        p == path
            || p.strip_prefix(path)
                .is_some_and(|r| r.starts_with(['.', '[']))
    })
}

/// Parses `text`; a TOML syntax error is returned alone, with its line and column.
pub(super) fn load(text: &str) -> Result<Loaded, ConfigError> {
    let mut root: Table = text.parse().map_err(|e: toml::de::Error| {
        let offset = e.span().map_or(0, |s| s.start);
        ConfigError::at(Location::of_offset(text, offset), e.message().trim_end())
    })?;
    let mut out = Loaded::default();
    for key in root.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        let expected = SECTIONS.map(|s| format!("`{s}`")).join(", ");
        out.push(
            key_path("", key),
            format!("unknown key; expected one of {expected}"),
        );
    }
    if let Some(v) = root.remove("server") {
        out.raw.server = section(v, "server", &mut out);
    }
    if let Some(v) = root.remove("log") {
        out.raw.log = section(v, "log", &mut out);
    }
    if let Some(v) = root.remove("listen") {
        out.raw.listen = Some(array_of_tables(v, "listen", &mut out));
    }
    if let Some(v) = root.remove("admin") {
        out.raw.admin = section(v, "admin", &mut out);
    }
    if let Some(v) = root.remove("relay") {
        out.raw.relay = section(v, "relay", &mut out);
    }
    if let Some(mut v) = root.remove("auth") {
        let users = v.as_table_mut().and_then(|t| t.remove("users"));
        out.raw.auth = section(v, "auth", &mut out);
        if let Some(users) = users {
            out.raw.auth.users = array_of_tables::<RawUser>(users, "auth.users", &mut out);
        }
    }
    if let Some(v) = root.remove("peers") {
        out.raw.peers = section(v, "peers", &mut out);
    }
    if let Some(v) = root.remove("limits") {
        out.raw.limits = section(v, "limits", &mut out);
    }
    if let Some(v) = root.remove("usage") {
        out.raw.usage = section(v, "usage", &mut out);
    }
    if let Some(v) = root.remove("selftest") {
        out.raw.selftest = Some(section(v, "selftest", &mut out));
    }
    Ok(out)
}

/// Deserializes one table, naming every bad key; bad keys fall back to defaults.
fn section<T: DeserializeOwned + Default>(value: Value, path: &str, out: &mut Loaded) -> T {
    let table = match value {
        Value::Table(t) => t,
        other => {
            out.push(
                path.to_owned(),
                format!("expected a table, found {}", kind(&other)),
            );
            return T::default();
        }
    };
    if let Ok(t) = Value::Table(table.clone()).try_into() {
        return t;
    }
    let mut good = Table::new();
    for (key, v) in table {
        let alone = Table::from_iter([(key.clone(), v.clone())]);
        match Value::Table(alone).try_into::<T>() {
            Ok(_) => {
                good.insert(key, v);
            }
            Err(e) => out.push(key_path(path, &key), plain(e.message())),
        }
    }
    Value::Table(good).try_into().unwrap_or_default()
}

/// Deserializes a `[[name]]` array element by element (paths `name[i]`).
fn array_of_tables<T: DeserializeOwned + Default>(
    value: Value,
    path: &str,
    out: &mut Loaded,
) -> Vec<T> {
    let Value::Array(items) = value else {
        let found = kind(&value);
        out.push(
            path.to_owned(),
            format!("expected [[{path}]] tables, found {found}"),
        );
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| section(item, &format!("{path}[{i}]"), out))
        .collect()
}

/// Rewords serde's messages where they are not plain enough.
fn plain(message: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return match rest.split_once("`, ") {
            Some((_, expected)) => format!("unknown key; {expected}"),
            None => "unknown key".to_owned(),
        };
    }
    message
        .replace("expected usize", "expected a whole number, 0 or more")
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected path string", "expected a file path string")
}

/// `parent.key`, quoting `key` when it is not a bare TOML key.
pub(super) fn key_path(parent: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        load(text)
            .unwrap()
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_bad_key_of_a_section_is_reported_and_the_rest_kept() {
        let loaded =
            load("[server]\nrealm = \"r\"\nworkers = \"four\"\ncolour = 1\nsoftware = 2\n")
                .unwrap();
        let paths: Vec<_> = loaded.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["server.colour", "server.software", "server.workers"]
        );
        assert_eq!(loaded.raw.server.realm, "r");
        assert!(covers(&loaded.failed, "server") && covers(&loaded.failed, "server.workers"));
        assert!(!covers(&loaded.failed, "server.realm") && !covers(&loaded.failed, "serv"));
    }

    #[test]
    fn unknown_key_message_lists_the_known_keys() {
        assert_eq!(
            problems("[log]\nlevle = \"info\"\n"),
            ["log.levle: unknown key; expected `level`"]
        );
        let p = problems("relm = \"x\"\n");
        assert!(
            p[0].starts_with("relm: unknown key; expected one of `server`"),
            "{p:?}"
        );
    }

    #[test]
    fn wrong_shapes_are_named() {
        assert_eq!(
            problems("server = 5\n"),
            ["server: expected a table, found an integer"]
        );
        assert_eq!(
            problems("[listen]\nprotocol = \"udp\"\n"),
            ["listen: expected [[listen]] tables, found a table"]
        );
        assert_eq!(
            problems("[limits]\nmax_allocations = -1\n"),
            [
                "limits.max_allocations: invalid value: integer `-1`, expected a whole number, 0 or more"
            ]
        );
    }

    #[test]
    fn nested_user_tables_get_indexed_paths() {
        let p =
            problems("[[auth.users]]\nname = \"a\"\n[[auth.users]]\nname = \"b\"\npass = \"x\"\n");
        assert_eq!(
            p,
            ["auth.users[1].pass: unknown key; expected `name` or `password`"]
        );
    }

    #[test]
    fn document_order_sorts_by_section_then_entry() {
        let mut paths = [
            "limits.x",
            "listen[10].a",
            "server",
            "zzz",
            "listen[2]",
            "listen",
        ];
        paths.sort_by_key(|p| document_order(p));
        assert_eq!(
            paths,
            [
                "zzz",
                "server",
                "listen",
                "listen[2]",
                "listen[10].a",
                "limits.x"
            ]
        );
    }

    #[test]
    fn odd_keys_are_quoted_in_paths() {
        assert_eq!(key_path("server", "a.b"), "server.\"a.b\"");
        assert_eq!(key_path("", "log"), "log");
    }
}
