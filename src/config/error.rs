//! Configuration problems: each names its key path, all of them are collected.

use std::fmt;

/// Every problem found in a configuration file, grouped by section in schema order
/// (unknown top-level keys first).
///
/// `Display` prints one problem per line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// One problem: where it is and what is wrong, in plain words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", Prefix(path, location))]
pub struct ConfigError {
    /// Key path such as `listen[1].certificate` or `relay.ports`; empty for a
    /// problem with the whole file (syntax error, unreadable file).
    pub path: String,
    /// What is wrong and, where it helps, what is expected.
    pub message: String,
    /// Line and column in the file, for TOML syntax errors.
    pub location: Option<Location>,
}

/// A 1-based position in the configuration text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl ConfigError {
    /// A problem at a key path.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            location: None,
        }
    }

    /// A problem at a position in the text (no key path).
    pub fn at(location: Location, message: impl Into<String>) -> Self {
        Self {
            path: String::new(),
            message: message.into(),
            location: Some(location),
        }
    }
}

impl Location {
    /// The line and column of byte offset `offset` in `text` (clamped to its end).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Renders `path: ` or `line L, column C: ` (or nothing) before a message.
struct Prefix<'a>(&'a str, &'a Option<Location>);

impl fmt::Display for Prefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            ("", Some(loc)) => write!(f, "{loc}: "),
            ("", None) => Ok(()),
            (path, Some(loc)) => write!(f, "{path} ({loc}): "),
            (path, None) => write!(f, "{path}: "),
        }
    }
}

impl ConfigErrors {
    /// Whether `path` has at least one problem (handy in tests and tools).
    pub fn has(&self, path: &str) -> bool {
        self.0.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_display_one_problem_per_line_with_their_paths() {
        let errs = ConfigErrors(vec![
            ConfigError::new("relay.ports", "bad range"),
            ConfigError::at(Location { line: 3, column: 7 }, "unexpected `=`"),
            ConfigError::new("", "cannot read"),
        ]);
        assert_eq!(
            errs.to_string(),
            "relay.ports: bad range\nline 3, column 7: unexpected `=`\ncannot read"
        );
    }

    #[test]
    fn offsets_become_one_based_lines_and_character_columns() {
        let text = "a = 1\nbé = x\n";
        assert_eq!(
            Location::of_offset(text, 0),
            Location { line: 1, column: 1 }
        );
        let x = text.find('x').unwrap();
        assert_eq!(
            Location::of_offset(text, x),
            Location { line: 2, column: 6 }
        );
        assert_eq!(
            Location::of_offset(text, 999),
            Location { line: 3, column: 1 }
        );
    }
}
