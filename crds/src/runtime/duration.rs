//! Durations as the contract writes them on command lines (`30s`, `5m`, `1h`, sums such as
//! `1h30m`, also `1.5h`, `300ms`), read with jiff's friendly-duration parser, which also takes
//! spelled-out units (`5 minutes`). Go's own grammar (kubelet and containerd configs) is
//! [`super::go_duration`].

use std::time::Duration;

use jiff::fmt::friendly::SpanParser;

static PARSER: SpanParser = SpanParser::new();

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    Empty,
    Invalid { input: String, problem: String },
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Empty => write!(f, "empty duration; write it as 30s, 5m or 1h"),
            DurationError::Invalid { input, problem } => {
                write!(
                    f,
                    "duration {input:?}: {problem}; write it as 30s, 5m or 1h"
                )
            }
        }
    }
}

impl std::error::Error for DurationError {}

/// Parses a non-negative duration: `30s`, `5m`, `1h`, `1h30m`, `1.5h`, `300ms`, `5 minutes`.
/// A number needs its unit.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    PARSER
        .parse_unsigned_duration(text)
        .map_err(|error| DurationError::Invalid {
            input: input.to_string(),
            problem: error.to_string(),
        })
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
    fn parses_friendly_and_go_forms() {
        assert_eq!(parse_duration("5 minutes"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("  "), Err(DurationError::Empty));
        for bad in [
            "5",
            "m",
            "5x",
            "-5s",
            "s5",
            "99999999999999999999s",
            "1h-",
            "0",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        let message = parse_duration("5x").unwrap_err().to_string();
        assert!(
            message.contains("\"5x\"") && message.contains("30s, 5m or 1h"),
            "{message}"
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
