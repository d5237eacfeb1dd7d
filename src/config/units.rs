//! Bit rates and byte sizes written with a unit: `"2Mbps"`, `"1.5Mbps"`, `"64KiB"`, `"1500B"`.
//!
//! Rates take decimal prefixes (1 kbps = 1000 bit/s). Sizes take decimal (`KB` = 1000 B)
//! or binary (`KiB` = 1024 B) prefixes. A decimal fraction is allowed when the result is
//! whole (`"1.5KiB"` = 1536 B). A bare `"0"` is zero in any unit.

/// Why a bit rate string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BitrateError {
    /// Nothing but whitespace.
    #[error("empty bit rate; write a number and a unit, e.g. \"2Mbps\", or \"0\"")]
    Empty,
    /// The text does not start with a number.
    #[error("a bit rate is a number and a unit (bps, kbps, Mbps, Gbps), e.g. \"1.5Mbps\"")]
    BadNumber,
    /// A non-zero number without a unit, such as `"2000"`.
    #[error(
        "missing unit; add one of bps, kbps, Mbps, Gbps, e.g. \"2Mbps\" (only \"0\" needs none)"
    )]
    MissingUnit,
    /// A unit other than `bps`, `kbps`, `Mbps`, `Gbps`.
    #[error("unknown unit; use one of bps, kbps, Mbps, Gbps (bits per second), e.g. \"2Mbps\"")]
    UnknownUnit,
    /// A fraction that leaves part of a bit, such as `"1.5bps"`.
    #[error("not a whole number of bits per second; use a smaller unit")]
    NotWhole,
    /// The value does not fit in 64 bits.
    #[error("bit rate is too large")]
    Overflow,
}

/// Why a byte size string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ByteSizeError {
    /// Nothing but whitespace.
    #[error("empty size; write a number and a unit, e.g. \"64KiB\", or \"0\"")]
    Empty,
    /// The text does not start with a number.
    #[error("a size is a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. \"64KiB\"")]
    BadNumber,
    /// A non-zero number without a unit, such as `"1500"`.
    #[error(
        "missing unit; add one of B, KB, MB, GB, KiB, MiB, GiB, e.g. \"1500B\" (only \"0\" needs none)"
    )]
    MissingUnit,
    /// A unit other than `B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`.
    #[error("unknown unit; use one of B, KB, MB, GB, KiB, MiB, GiB (bytes), e.g. \"64KiB\"")]
    UnknownUnit,
    /// A fraction that leaves part of a byte, such as `"1.3KiB"`.
    #[error("not a whole number of bytes; use a smaller unit")]
    NotWhole,
    /// The value does not fit in 64 bits.
    #[error("size is too large")]
    Overflow,
}

/// What is wrong with a number and unit, before it is named for rates or sizes.
enum Problem {
    Empty,
    BadNumber,
    MissingUnit,
    UnknownUnit,
    NotWhole,
    Overflow,
}

/// Parses a bit rate into bits per second: a number and one of `bps`, `kbps`, `Mbps`,
/// `Gbps` (decimal prefixes; `K`, `m`, `g` are accepted for the prefix, but `bps` must be
/// lowercase so that `MBps`, megabytes, is refused rather than misread).
///
/// # Errors
/// [`BitrateError`] says what is wrong; its message suggests a fix.
pub fn parse_bitrate(s: &str) -> Result<u64, BitrateError> {
    let unit = |u: &str| match u {
        "bps" => Some(1),
        "kbps" | "Kbps" => Some(1_000),
        "Mbps" | "mbps" => Some(1_000_000),
        "Gbps" | "gbps" => Some(1_000_000_000),
        _ => None,
    };
    parse_quantity(s, unit).map_err(|p| match p {
        Problem::Empty => BitrateError::Empty,
        Problem::BadNumber => BitrateError::BadNumber,
        Problem::MissingUnit => BitrateError::MissingUnit,
        Problem::UnknownUnit => BitrateError::UnknownUnit,
        Problem::NotWhole => BitrateError::NotWhole,
        Problem::Overflow => BitrateError::Overflow,
    })
}

/// Parses a byte size into bytes: a number and one of `B`, `KB` (or `kB`), `MB`, `GB`
/// (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024).
///
/// # Errors
/// [`ByteSizeError`] says what is wrong; its message suggests a fix.
pub fn parse_byte_size(s: &str) -> Result<u64, ByteSizeError> {
    let unit = |u: &str| match u {
        "B" => Some(1),
        "KB" | "kB" => Some(1_000),
        "MB" => Some(1_000_000),
        "GB" => Some(1_000_000_000),
        "KiB" => Some(1 << 10),
        "MiB" => Some(1 << 20),
        "GiB" => Some(1 << 30),
        _ => None,
    };
    parse_quantity(s, unit).map_err(|p| match p {
        Problem::Empty => ByteSizeError::Empty,
        Problem::BadNumber => ByteSizeError::BadNumber,
        Problem::MissingUnit => ByteSizeError::MissingUnit,
        Problem::UnknownUnit => ByteSizeError::UnknownUnit,
        Problem::NotWhole => ByteSizeError::NotWhole,
        Problem::Overflow => ByteSizeError::Overflow,
    })
}

/// `digits[.digits] unit` → the whole quantity in the base unit; `unit` maps a unit name
/// to its multiplier. A unitless value is accepted only when it is zero.
fn parse_quantity(s: &str, unit: impl Fn(&str) -> Option<u64>) -> Result<u64, Problem> {
    let s = s.trim();
    if s.is_empty() {
        return Err(Problem::Empty);
    }
    let (int, rest) = split_digits(s);
    if int.is_empty() {
        return Err(Problem::BadNumber);
    }
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(after) => match split_digits(after) {
            ("", _) => return Err(Problem::BadNumber),
            parts => parts,
        },
        None => ("", rest),
    };
    let name = rest.trim_start();
    if name.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == ',') {
        return Err(Problem::BadNumber);
    }
    let multiplier = match unit(name) {
        Some(m) => m,
        None if name.is_empty() && is_zero(int) && is_zero(frac) => return Ok(0),
        None if name.is_empty() => return Err(Problem::MissingUnit),
        None => return Err(Problem::UnknownUnit),
    };
    scale(int, frac, multiplier)
}

/// Splits off the leading ASCII digits.
fn split_digits(s: &str) -> (&str, &str) {
    s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()))
}

fn is_zero(digits: &str) -> bool {
    digits.bytes().all(|b| b == b'0')
}

/// `int.frac × multiplier`, exactly, refusing a result with a fractional part.
fn scale(int: &str, frac: &str, multiplier: u64) -> Result<u64, Problem> {
    let frac = frac.trim_end_matches('0');
    // Multipliers are below 10^10, so more than 18 significant fraction digits can never
    // give a whole result; the limit also keeps 10^digits inside u128.
    if frac.len() > 18 {
        return Err(Problem::NotWhole);
    }
    let int: u128 = int.parse().map_err(|_| Problem::Overflow)?;
    let frac_value: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| Problem::NotWhole)?
    };
    let denominator = 10u128.pow(frac.len() as u32);
    let scaled = int
        .checked_mul(denominator)
        .and_then(|n| n.checked_add(frac_value))
        .and_then(|n| n.checked_mul(u128::from(multiplier)))
        .ok_or(Problem::Overflow)?;
    if scaled % denominator != 0 {
        return Err(Problem::NotWhole);
    }
    u64::try_from(scaled / denominator).map_err(|_| Problem::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bitrate_unit_parses_with_decimal_prefixes() {
        assert_eq!(parse_bitrate("8000bps"), Ok(8_000));
        assert_eq!(parse_bitrate("500kbps"), Ok(500_000));
        assert_eq!(parse_bitrate("500Kbps"), Ok(500_000));
        assert_eq!(parse_bitrate("2Mbps"), Ok(2_000_000));
        assert_eq!(parse_bitrate("1.5Mbps"), Ok(1_500_000));
        assert_eq!(parse_bitrate("1Gbps"), Ok(1_000_000_000));
        assert_eq!(parse_bitrate(" 10 mbps "), Ok(10_000_000));
        assert_eq!(parse_bitrate("0.25Gbps"), Ok(250_000_000));
    }

    #[test]
    fn zero_needs_no_unit() {
        assert_eq!(parse_bitrate("0"), Ok(0));
        assert_eq!(parse_bitrate("0.0"), Ok(0));
        assert_eq!(parse_bitrate("0Mbps"), Ok(0));
        assert_eq!(parse_byte_size("0"), Ok(0));
        assert_eq!(parse_byte_size("0KiB"), Ok(0));
    }

    #[test]
    fn every_byte_unit_parses_with_decimal_or_binary_prefixes() {
        assert_eq!(parse_byte_size("1500B"), Ok(1500));
        assert_eq!(parse_byte_size("32KB"), Ok(32_000));
        assert_eq!(parse_byte_size("32kB"), Ok(32_000));
        assert_eq!(parse_byte_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_byte_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_byte_size("64KiB"), Ok(65_536));
        assert_eq!(parse_byte_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_byte_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_byte_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_byte_size("1.500 KiB"), Ok(1536));
    }

    #[test]
    fn malformed_bitrates_are_refused_with_a_reason() {
        assert_eq!(parse_bitrate(""), Err(BitrateError::Empty));
        assert_eq!(parse_bitrate("2000"), Err(BitrateError::MissingUnit));
        assert_eq!(parse_bitrate("Mbps"), Err(BitrateError::BadNumber));
        assert_eq!(parse_bitrate("-2Mbps"), Err(BitrateError::BadNumber));
        assert_eq!(parse_bitrate(".5Mbps"), Err(BitrateError::BadNumber));
        assert_eq!(parse_bitrate("1.Mbps"), Err(BitrateError::BadNumber));
        assert_eq!(parse_bitrate("1.2.3Mbps"), Err(BitrateError::BadNumber));
        assert_eq!(parse_bitrate("1,5Mbps"), Err(BitrateError::BadNumber));
        assert_eq!(parse_bitrate("2MBps"), Err(BitrateError::UnknownUnit));
        assert_eq!(parse_bitrate("2MB/s"), Err(BitrateError::UnknownUnit));
        assert_eq!(parse_bitrate("1.5bps"), Err(BitrateError::NotWhole));
        assert_eq!(
            parse_bitrate("20000000000Gbps"),
            Err(BitrateError::Overflow)
        );
        assert_eq!(
            parse_bitrate("99999999999999999999999999999999999999999bps"),
            Err(BitrateError::Overflow)
        );
    }

    #[test]
    fn malformed_sizes_are_refused_with_a_reason() {
        assert_eq!(parse_byte_size("  "), Err(ByteSizeError::Empty));
        assert_eq!(parse_byte_size("1500"), Err(ByteSizeError::MissingUnit));
        assert_eq!(parse_byte_size("KiB"), Err(ByteSizeError::BadNumber));
        assert_eq!(parse_byte_size("64kb"), Err(ByteSizeError::UnknownUnit));
        assert_eq!(parse_byte_size("64 bytes"), Err(ByteSizeError::UnknownUnit));
        assert_eq!(parse_byte_size("1.3KiB"), Err(ByteSizeError::NotWhole));
        assert_eq!(parse_byte_size("0.5B"), Err(ByteSizeError::NotWhole));
        assert_eq!(
            parse_byte_size("1.0000000000000000000001KiB"),
            Err(ByteSizeError::NotWhole)
        );
        assert_eq!(
            parse_byte_size("17179869184GiB"),
            Err(ByteSizeError::Overflow)
        );
    }

    #[test]
    fn error_messages_suggest_a_fix() {
        assert!(BitrateError::UnknownUnit.to_string().contains("\"2Mbps\""));
        assert!(ByteSizeError::MissingUnit.to_string().contains("\"1500B\""));
    }
}
