//! LiteLLM's duration strings: `30s`, `30m`, `30h`, `30d`, `7d`, `1mo` (calendar months).

use std::time::Duration;

use chrono::{DateTime, Months, Utc};

/// A span of time as LiteLLM writes it: a fixed length, or whole calendar months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Fixed(Duration),
    Months(u32),
}

impl Period {
    /// `start` moved forward by this period; `None` on overflow.
    pub fn after(self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Period::Fixed(d) => start.checked_add_signed(chrono::Duration::from_std(d).ok()?),
            Period::Months(m) => start.checked_add_months(Months::new(m)),
        }
    }
}

/// Parses `<n><unit>` with unit `s`, `m`, `h`, `d`, `w` or `mo`. The message of the error
/// says what is accepted.
pub fn parse_period(text: &str) -> Result<Period, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid duration {text:?}: use a whole number and a unit, e.g. 30s, 15m, 12h, 30d, 1mo");
    let n: u64 = num.parse().map_err(|_| bad())?;
    if n == 0 {
        return Err(format!("invalid duration {text:?}: must be greater than zero"));
    }
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "mo" => return u32::try_from(n).map(Period::Months).map_err(|_| bad()),
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(|s| Period::Fixed(Duration::from_secs(s))).ok_or_else(bad)
}

/// A fixed duration (no months).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match parse_period(text)? {
        Period::Fixed(d) => Ok(d),
        Period::Months(_) => Err(format!("invalid duration {text:?}: months are not allowed here")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_period("30s"), Ok(Period::Fixed(Duration::from_secs(30))));
        assert_eq!(parse_period("15m"), Ok(Period::Fixed(Duration::from_secs(900))));
        assert_eq!(parse_period("1h"), Ok(Period::Fixed(Duration::from_secs(3600))));
        assert_eq!(parse_period("7d"), Ok(Period::Fixed(Duration::from_secs(604_800))));
        assert_eq!(parse_period("1mo"), Ok(Period::Months(1)));
    }

    #[test]
    fn rejects_nonsense_with_a_message() {
        for bad in ["", "d", "10", "10x", "-1d", "1.5h", "0s"] {
            let err = parse_period(bad).unwrap_err();
            assert!(err.contains("invalid duration"), "{bad}: {err}");
        }
        assert!(parse_duration("1mo").is_err());
    }

    #[test]
    fn months_are_calendar_months() {
        let jan31 = DateTime::parse_from_rfc3339("2026-01-31T00:00:00Z").unwrap().with_timezone(&Utc);
        let next = Period::Months(1).after(jan31).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-02-28T00:00:00+00:00");
    }
}
