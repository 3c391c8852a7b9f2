//! Parsing of Go duration strings (`time.ParseDuration`), used by the `delay` query parameter.

use std::time::Duration;

/// Nanoseconds in one unit, keyed by Go's unit spelling.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return None,
    })
}

/// The largest duration Go can represent (`1<<63 - 1` nanoseconds).
const MAX_NANOS: u128 = (1 << 63) - 1;

/// Parses a Go duration such as `1s`, `500ms`, `1.5s`, `2m` or `1h30m`.
///
/// Follows the grammar of Go's `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or a
/// bare `0`. A negative duration parses successfully and is returned as zero (sleeping for a
/// negative duration returns at once in Go too).
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {input:?}");
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid());
        }
        let unit_len = after_number
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(after_number.len());
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {input:?}"));
        }
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit = unit_nanos(unit)
            .ok_or_else(|| format!("time: unknown unit {unit:?} in duration {input:?}"))?;

        let whole: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| invalid())?
        };
        let mut nanos = whole.checked_mul(unit).ok_or_else(invalid)?;
        // Only the first 18 fractional digits matter for nanosecond precision.
        let frac_digits = &frac_digits[..frac_digits.len().min(18)];
        if !frac_digits.is_empty() {
            let frac: u128 = frac_digits.parse().map_err(|_| invalid())?;
            let scale = 10u128.pow(u32::try_from(frac_digits.len()).map_err(|_| invalid())?);
            nanos += frac * unit / scale;
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
        if total > MAX_NANOS + u128::from(negative) {
            return Err(invalid());
        }
        rest = after_unit;
    }
    if negative {
        return Ok(Duration::ZERO);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| invalid())?;
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| invalid())?;
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_examples() {
        let cases = [
            ("0", Duration::ZERO),
            ("1s", Duration::from_secs(1)),
            ("500ms", Duration::from_millis(500)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h30m", Duration::from_secs(5400)),
            ("+3s", Duration::from_secs(3)),
            ("10us", Duration::from_micros(10)),
            ("10\u{b5}s", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("1m0.25s", Duration::from_millis(60_250)),
            ("0.000000001s", Duration::from_nanos(1)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Ok(want), "parsing {text:?}");
        }
    }

    #[test]
    fn negative_is_zero() {
        assert_eq!(parse_go_duration("-1s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed() {
        for text in ["", "1", "s", ".s", "-", "1x", "1.2.3s", "1s2", "abc", "1 s"] {
            assert!(parse_go_duration(text).is_err(), "{text:?} should fail");
        }
    }

    #[test]
    fn rejects_overflow() {
        assert!(parse_go_duration("9999999999999999999h").is_err());
        assert!(parse_go_duration("3000000h").is_err());
    }
}
