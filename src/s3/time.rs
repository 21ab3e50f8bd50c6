//! The two date forms S3 answers with, to unix seconds, without a date crate:
//! ISO 8601 in listings (`2009-10-12T17:50:30.000Z`) and the HTTP date of
//! `Last-Modified` headers (`Wed, 12 Oct 2009 17:50:30 GMT`). Both are UTC;
//! fractions of a second are dropped. Anything else, a date before 1970 or a
//! field out of range, is `None`: a store's dates feed prune's idle times, so a
//! bad one is an error for the caller, never a guess.

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01: (year, month, day).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn unix(y: u32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<u64> {
    let y = i64::from(y);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || d == 0
        || d > days_in_month(y, mo)
        || h > 23
        || mi > 59
        || s > 60
    {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    u64::try_from(days * 86_400 + i64::from(h * 3600 + mi * 60 + s)).ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z` to unix seconds.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut date = date.split('-');
    let (y, mo, d) = (date.next()?, date.next()?, date.next()?);
    if date.next().is_some() || y.len() != 4 || mo.len() != 2 || d.len() != 2 {
        return None;
    }
    let (time, frac) = match time.split_once('.') {
        Some((t, f)) => (t, Some(f)),
        None => (time, None),
    };
    if let Some(f) = frac {
        if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let mut time = time.split(':');
    let (h, mi, sec) = (time.next()?, time.next()?, time.next()?);
    if time.next().is_some() || h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
        return None;
    }
    unix(
        digits(y)?,
        digits(mo)?,
        digits(d)?,
        digits(h)?,
        digits(mi)?,
        digits(sec)?,
    )
}

/// An HTTP date (RFC 7231's IMF-fixdate, `Wed, 12 Oct 2009 17:50:30 GMT`) to
/// unix seconds.
pub fn parse_http_date(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = s.split_once(", ")?;
    let mut f = rest.split(' ');
    let (d, mo, y, time, zone) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
    if f.next().is_some() || zone != "GMT" || d.len() != 2 || y.len() != 4 {
        return None;
    }
    let mo = MONTHS.iter().position(|m| *m == mo)? as u32 + 1;
    let mut t = time.split(':');
    let (h, mi, sec) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() || h.len() != 2 || mi.len() != 2 || sec.len() != 2 {
        return None;
    }
    unix(
        digits(y)?,
        mo,
        digits(d)?,
        digits(h)?,
        digits(mi)?,
        digits(sec)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_from_listings() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601("2009-10-12T17:50:30.000Z"),
            Some(1_255_369_830)
        );
        assert_eq!(parse_iso8601("2024-02-29T23:59:59Z"), Some(1_709_251_199));
        assert_eq!(
            parse_iso8601("2026-12-01T20:35:21.123456789Z"),
            Some(1_796_157_321)
        );
        for bad in [
            "",
            "2009-10-12T17:50:30",
            "2009-10-12 17:50:30Z",
            "2009-10-12T17:50:30.Z",
            "2023-02-29T00:00:00Z",
            "2009-13-12T17:50:30Z",
            "2009-10-12T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2009-10-12T17:50:30+01:00",
            "+009-10-12T17:50:30Z",
            "2009-1-12T17:50:30Z",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn http_dates_from_headers() {
        assert_eq!(
            parse_http_date("Mon, 12 Oct 2009 17:50:30 GMT"),
            Some(1_255_369_830)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        for bad in [
            "Mon, 12 Oct 2009 17:50:30 UTC",
            "Mon, 12 Foo 2009 17:50:30 GMT",
            "Monday, 12-Oct-09 17:50:30 GMT",
            "Mon, 31 Sep 2009 17:50:30 GMT",
            "2009-10-12T17:50:30Z",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_round_trips() {
        for days in [-1, 0, 59, 365, 11_016, 19_782, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
