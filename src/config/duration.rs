//! Durations written with a unit: `"500ms"`, `"30s"`, `"10m"`, `"1h"`, `"24h"`, `"7d"`.

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration; write a number and a unit, e.g. \"30s\"")]
    Empty,
    /// The text does not start with a whole number.
    #[error("a duration is a whole number and a unit (ms, s, m, h, d), e.g. \"30s\"")]
    BadNumber,
    /// A number without a unit, such as `"30"`.
    #[error("missing unit; add one of ms, s, m, h, d, e.g. \"30s\"")]
    MissingUnit,
    /// A unit other than `ms`, `s`, `m`, `h`, `d`.
    #[error("unknown unit; use one of ms, s, m, h, d, e.g. \"30s\"")]
    UnknownUnit,
    /// The value does not fit in a duration.
    #[error("duration is too large")]
    Overflow,
}

/// Parses a whole number followed by a unit: `ms`, `s`, `m` (minutes), `h` or `d`.
///
/// Whitespace around the value and between number and unit is ignored. Used for
/// every duration in the configuration and by the CLI (`--ttl 24h`).
///
/// # Errors
/// [`DurationError`] says what is wrong; its message suggests a fix.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(DurationError::BadNumber);
    }
    let n: u64 = number.parse().map_err(|_| DurationError::Overflow)?;
    let unit_secs = match unit.trim_start() {
        "" => return Err(DurationError::MissingUnit),
        u if u.starts_with(['.', ',']) => return Err(DurationError::BadNumber),
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(DurationError::UnknownUnit),
    };
    n.checked_mul(unit_secs)
        .map(Duration::from_secs)
        .ok_or(DurationError::Overflow)
}

/// Writes `d` in the largest unit that keeps it exact (`"10m"`, `"1h"`, `"500ms"`),
/// the inverse of [`parse_duration`] for whole milliseconds.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_parses() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration(" 5 m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn formatting_picks_the_largest_exact_unit_and_round_trips() {
        for (d, s) in [
            (600, "10m"),
            (3600, "1h"),
            (86_400, "1d"),
            (90, "90s"),
            (0, "0s"),
        ] {
            assert_eq!(format_duration(Duration::from_secs(d)), s);
            assert_eq!(parse_duration(s), Ok(Duration::from_secs(d)));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn malformed_durations_are_refused_with_a_reason() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("30"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration("s"), Err(DurationError::BadNumber));
        assert_eq!(parse_duration("-5s"), Err(DurationError::BadNumber));
        assert_eq!(parse_duration("1.5h"), Err(DurationError::BadNumber));
        assert_eq!(
            parse_duration("10 minutes"),
            Err(DurationError::UnknownUnit)
        );
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            parse_duration("999999999999999999d"),
            Err(DurationError::Overflow)
        );
    }
}
