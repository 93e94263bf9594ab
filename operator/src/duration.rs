//! Durations as the contract writes them on command lines: `30s`, `5m`, `1h`, and sums such as `1h30m`.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write it as 30s, 5m or 1h")]
    Empty,
    #[error("duration {input:?}: {problem}; write it as 30s, 5m or 1h")]
    Invalid {
        input: String,
        problem: &'static str,
    },
}

/// Parses `<number><unit>` groups (units `s`, `m`, `h`), e.g. `30s`, `5m`, `1h`, `1h30m`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = |problem| DurationError::Invalid {
        input: input.to_string(),
        problem,
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit_seconds = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(invalid("unknown unit (use s, m or h)")),
        };
        if digits.is_empty() {
            return Err(invalid("a unit without a number"));
        }
        let n: u64 = digits.parse().map_err(|_| invalid("number too large"))?;
        total = n
            .checked_mul(unit_seconds)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| invalid("number too large"))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(invalid("a number without a unit"));
    }
    Ok(Duration::from_secs(total))
}

/// The inverse of [`parse_duration`] for messages: whole seconds as `1h30m`, `5m`, `45s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0s".to_string();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_contract_examples() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
    }

    #[test]
    fn parses_sums_and_zero() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2m5s"), Ok(Duration::from_secs(125)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 3s "), Ok(Duration::from_secs(3)));
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for bad in [
            "5",
            "m",
            "5x",
            "5 m",
            "-5s",
            "1.5h",
            "s5",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(
            parse_duration("5d")
                .unwrap_err()
                .to_string()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("5")
                .unwrap_err()
                .to_string()
                .contains("without a unit")
        );
    }

    #[test]
    fn formats_round_trip() {
        for s in ["30s", "5m", "1h", "1h30m", "2m5s", "0s", "1h1m1s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
        }
    }
}
