//! Units both people and commands use: sizes, durations and percentages, parsed
//! from the command line and configuration, and sizes printed for people. Pure
//! functions; each caller words its own error around the one-line reason given here.

/// `1234`, `10K`, `20M`, `3G`, `1T` (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.char_indices().last() {
        Some((i, c @ ('K' | 'M' | 'G' | 'T' | 'k' | 'm' | 'g' | 't'))) => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => 40,
            };
            (&s[..i], 1u64 << shift)
        }
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("{s:?} is not a size (e.g. 500M, 20G)"))
}

/// `0`, or a number with `s`, `m`, `h` or `d` → seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    let (num, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let mul = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// `5%`, `5` or `0.5%` → 0.05, 0.05, 0.005; more than 0% and at most 100%.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .strip_suffix('%')
        .unwrap_or(s.trim())
        .parse()
        .map_err(|_| "expected a percentage like 5%".to_string())?;
    if !(v > 0.0 && v <= 100.0) {
        return Err("must be more than 0% and at most 100%".into());
    }
    Ok(v / 100.0)
}

/// `12.3 MiB` style sizes.
/// `3d 4h`, `2h 5m`, `40s`: the two largest units of a span.
pub fn human_age(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m {s}s"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(human_age(0), "0s");
        assert_eq!(human_age(59), "59s");
        assert_eq!(human_age(61), "1m 1s");
        assert_eq!(human_age(7260), "2h 1m");
        assert_eq!(human_age(3 * 86_400 + 3600), "3d 1h");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("10K"), Ok(10240));
        assert_eq!(parse_bytes("7"), Ok(7));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("24h"), Some(86_400));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("5s"), Some(5));
        for bad in ["", "h", "5", "5w", "-1h", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn percentages() {
        assert_eq!(parse_percent("5%").unwrap(), 0.05);
        assert_eq!(parse_percent("100").unwrap(), 1.0);
        assert!(parse_percent("0%").is_err());
        assert!(parse_percent("101%").is_err());
        assert!(parse_percent("x").is_err());
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }
}
