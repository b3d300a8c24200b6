//! Parsers for command-line values: durations and port ranges.
//!
//! This module owns turning strings like `5s` or `40000-40009` into typed values with error
//! messages that say what was expected. It must never exit, print, or apply defaults: clap
//! reports its errors, the commands own their defaults.

use core::time::Duration;

use fourtuple_stack::ReusePolicy;

/// Parses a duration: a decimal number and a unit, `us` (or `µs`), `ms`, `s`, `m` or `h`,
/// e.g. `5s`, `100ms`, `250us`, `1.5s`. A bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("duration {s:?} has no unit: write e.g. 5s, 100ms or 250us"))?;
    let (number, unit) = s.split_at(split);
    let nanos_per_unit: u128 = match unit {
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => {
            return Err(format!(
                "duration {s:?} has unknown unit {unit:?}: expected us, ms, s, m or h"
            ))
        }
    };
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return Err(format!("duration {s:?} has no number: write e.g. 5s"));
    }
    let bad_number = || format!("duration {s:?}: {number:?} is not a number");
    if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad_number());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad_number())?
    };
    // Fractional digits beyond nanoseconds are ignored.
    let mut frac_nanos: u128 = 0;
    let mut scale = nanos_per_unit;
    for d in frac.chars().take(20) {
        scale /= 10;
        frac_nanos += u128::from(d.to_digit(10).unwrap_or(0)) * scale;
    }
    let nanos = int
        .checked_mul(nanos_per_unit)
        .and_then(|n| n.checked_add(frac_nanos))
        .filter(|n| *n <= u128::from(u64::MAX))
        .ok_or_else(|| format!("duration {s:?} is too large"))?;
    Ok(Duration::from_nanos(nanos as u64))
}

/// Parses a duration that must be greater than zero.
pub fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(d)
}

/// Parses an inclusive port range `LO-HI` with `1 <= LO <= HI <= 65535`.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .trim()
        .split_once('-')
        .ok_or_else(|| format!("port range {s:?} is not of the form LO-HI, e.g. 32768-60999"))?;
    let port = |p: &str| -> Result<u16, String> {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("port range {s:?}: {p:?} is not a port (1-65535)"))
    };
    let (lo, hi) = (port(lo)?, port(hi)?);
    if lo == 0 {
        return Err(format!("port range {s:?}: ports start at 1"));
    }
    if lo > hi {
        return Err(format!("port range {s:?}: LO is greater than HI"));
    }
    Ok((lo, hi))
}

/// Parses a port-reuse policy name: `exact-tuple`, `local-port` or `timestamp-reuse`.
pub fn parse_policy(s: &str) -> Result<ReusePolicy, String> {
    s.parse()
}

/// Parses a count that must be at least 1.
pub fn parse_nonzero_u64(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0us"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(".5ms"), Ok(Duration::from_micros(500)));
    }

    #[test]
    fn bad_durations_say_why() {
        let e = parse_duration("5").unwrap_err();
        assert!(e.contains("no unit"), "{e}");
        let e = parse_duration("5x").unwrap_err();
        assert!(e.contains("unknown unit"), "{e}");
        let e = parse_duration("s").unwrap_err();
        assert!(e.contains("no number"), "{e}");
        let e = parse_duration("1.2.3s").unwrap_err();
        assert!(e.contains("not a number"), "{e}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999h").is_err());
        let e = parse_positive_duration("0s").unwrap_err();
        assert!(e.contains("greater than zero"), "{e}");
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("40000-40009"), Ok((40000, 40009)));
        assert_eq!(parse_port_range("1-65535"), Ok((1, 65535)));
        assert_eq!(parse_port_range("7-7"), Ok((7, 7)));
    }

    #[test]
    fn bad_port_ranges_say_why() {
        let e = parse_port_range("40009-40000").unwrap_err();
        assert!(e.contains("greater than HI"), "{e}");
        let e = parse_port_range("0-10").unwrap_err();
        assert!(e.contains("start at 1"), "{e}");
        let e = parse_port_range("1-70000").unwrap_err();
        assert!(e.contains("not a port"), "{e}");
        let e = parse_port_range("40000").unwrap_err();
        assert!(e.contains("LO-HI"), "{e}");
        assert!(parse_port_range("a-b").is_err());
    }

    #[test]
    fn policies_and_counts() {
        assert_eq!(parse_policy("local-port"), Ok(ReusePolicy::LocalPort));
        assert!(parse_policy("lax").unwrap_err().contains("exact-tuple"));
        assert_eq!(parse_nonzero_u64("2000"), Ok(2000));
        assert!(parse_nonzero_u64("0").is_err());
        assert!(parse_nonzero_u64("ten").is_err());
    }
}
