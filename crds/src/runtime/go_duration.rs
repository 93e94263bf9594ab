//! Go's `time.ParseDuration`, which containerd (`dial_timeout`) and kubelet (`cacheDuration`,
//! `defaultCacheDuration`) use for their duration strings: `"300ms"`, `"1h30m"`, `"1.5s"`.
//! A [`Duration`] cannot be negative, so a negative value is refused, like an overflow.

use std::time::Duration;

/// Parses a Go duration string; the error says what is wrong with it.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {text:?}: {why}");
    let mut rest = text;
    let negative = match rest.as_bytes().first() {
        Some(b'-') => {
            rest = &rest[1..];
            true
        }
        Some(b'+') => {
            rest = &rest[1..];
            false
        }
        _ => false,
    };
    // Go accepts a bare "0" (of any sign) without a unit.
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("expected a number"));
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_nanos: u128 = match &rest[..unit_len] {
            "ns" => 1,
            // U+00B5 micro sign and U+03BC Greek mu, as Go accepts both.
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad("missing unit (ns, us, ms, s, m, h)")),
            other => return Err(bad(&format!("unknown unit {other:?}"))),
        };
        rest = &rest[unit_len..];
        // Digits beyond 30 would overflow u128 arithmetic long before they mattered.
        if int_part.len() > 30 {
            return Err(bad("overflow"));
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| bad("overflow"))?
        };
        let mut nanos = int.checked_mul(unit_nanos).ok_or_else(|| bad("overflow"))?;
        // The fraction, truncated to whole nanoseconds as Go does.
        let mut scale = unit_nanos;
        for d in frac_part.bytes().take(30) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(d - b'0') * scale;
        }
        total_nanos = total_nanos
            .checked_add(nanos)
            .ok_or_else(|| bad("overflow"))?;
        // Go's limit: an int64 of nanoseconds (about 292 years).
        if total_nanos > i64::MAX as u128 {
            return Err(bad("overflow"));
        }
    }
    if negative && total_nanos > 0 {
        return Err(bad("negative"));
    }
    let secs = (total_nanos / 1_000_000_000) as u64;
    let sub = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn go_duration_strings_parse_like_go() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("-0", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("500ms", ms(500)),
            ("3s", ms(3000)),
            ("+3s", ms(3000)),
            ("1.5s", ms(1500)),
            (".5s", ms(500)),
            ("2.s", ms(2000)),
            ("1h30m", Duration::from_secs(5400)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("1m0.25s", ms(60_250)),
            ("100us", Duration::from_micros(100)),
            ("100\u{b5}s", Duration::from_micros(100)),
            ("100\u{3bc}s", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("1.0000000009s", Duration::from_nanos(1_000_000_000)),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_duration_strings_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("+", "empty"),
            ("3", "missing unit"),
            ("1.5", "missing unit"),
            ("1d", "unknown unit \"d\""),
            ("5 s", "unknown unit \" s\""),
            ("s", "expected a number"),
            (".s", "expected a number"),
            ("-1s", "negative"),
            ("2562048h", "overflow"),
            ("99999999999999999999999999999999999h", "overflow"),
        ] {
            let err = parse_go_duration(text).expect_err(text);
            assert!(
                err.contains(why) && err.contains(&format!("{text:?}")),
                "{text}: {err}"
            );
        }
    }
}
