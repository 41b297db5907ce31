//! Exact decimal money: parsing decimal text into scaled integers and formatting nano-USD.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An amount in nano-USD (1e-9 USD).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Nanos(pub i64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);

    /// From a decimal USD text such as `"100"`, `"0.000002"` or `"2.5e-6"`.
    pub fn parse_usd(text: &str) -> Option<Nanos> {
        parse_decimal_scaled(text, 9).and_then(|n| i64::try_from(n).ok()).map(Nanos)
    }

    /// From a float USD amount as written in JSON or YAML, through its shortest decimal text
    /// (so `0.1` is exactly 100,000,000 nano-USD, not the binary float's expansion).
    pub fn from_usd_f64(value: f64) -> Option<Nanos> {
        if !value.is_finite() {
            return None;
        }
        Self::parse_usd(&format!("{value}"))
    }

    /// As a float USD amount, for display in LiteLLM-compatible JSON only.
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }

    pub fn saturating_add(self, other: Nanos) -> Nanos {
        Nanos(self.0.saturating_add(other.0))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_usd(*self))
    }
}

/// Formats nano-USD as a plain decimal USD string with no trailing zeros: `0.000123`, `12.5`,
/// `0`.
pub fn format_usd(amount: Nanos) -> String {
    let negative = amount.0 < 0;
    let abs = amount.0.unsigned_abs();
    let units = abs / 1_000_000_000;
    let frac = abs % 1_000_000_000;
    let mut out = String::with_capacity(24);
    if negative {
        out.push('-');
    }
    out.push_str(&units.to_string());
    if frac != 0 {
        let digits = format!("{frac:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}

/// Parses a non-negative decimal number (`"12"`, `"0.5"`, `"2.5e-6"`, `"1E3"`) into an
/// integer scaled by `10^scale`. Returns `None` for negative, malformed, overflowing values,
/// or values finer than the scale allows.
pub fn parse_decimal_scaled(text: &str, scale: u32) -> Option<i128> {
    let text = text.trim();
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int_part, frac_part) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    // value = digits × 10^(exponent - len(frac)) × 10^scale
    let shift = exponent.checked_sub(i32::try_from(frac_part.len()).ok()?)? + i32::try_from(scale).ok()?;
    if digits.is_empty() {
        return Some(0);
    }
    let mut value: i128 = digits.parse().ok()?;
    if shift >= 0 {
        for _ in 0..shift {
            value = value.checked_mul(10)?;
        }
    } else {
        for _ in 0..(-shift) {
            if value % 10 != 0 {
                return None;
            }
            value /= 10;
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_text_exactly() {
        assert_eq!(parse_decimal_scaled("100", 9), Some(100_000_000_000));
        assert_eq!(parse_decimal_scaled("0.000002", 15), Some(2_000_000_000));
        assert_eq!(parse_decimal_scaled("2.5e-6", 15), Some(2_500_000_000));
        assert_eq!(parse_decimal_scaled("1E3", 0), Some(1000));
        assert_eq!(parse_decimal_scaled(".5", 1), Some(5));
        assert_eq!(parse_decimal_scaled("0", 9), Some(0));
        assert_eq!(parse_decimal_scaled("-1", 9), None);
        assert_eq!(parse_decimal_scaled("1.2.3", 9), None);
        assert_eq!(parse_decimal_scaled("abc", 9), None);
        assert_eq!(parse_decimal_scaled("0.0000000001", 9), None, "finer than a nano");
    }

    #[test]
    fn float_config_values_become_their_decimal_text() {
        assert_eq!(Nanos::from_usd_f64(0.1), Some(Nanos(100_000_000)));
        assert_eq!(Nanos::from_usd_f64(100.0), Some(Nanos(100_000_000_000)));
        assert_eq!(Nanos::from_usd_f64(f64::NAN), None);
    }

    #[test]
    fn formats_usd_without_trailing_zeros() {
        assert_eq!(format_usd(Nanos(0)), "0");
        assert_eq!(format_usd(Nanos(123)), "0.000000123");
        assert_eq!(format_usd(Nanos(12_500_000_000)), "12.5");
        assert_eq!(format_usd(Nanos(7_500_000)), "0.0075");
        assert_eq!(format_usd(Nanos(-5)), "-0.000000005");
    }
}
