//! `Retry-After` (RFC 9110 §10.2.3) as seconds to wait: delta-seconds, or
//! an HTTP-date in any of the three forms a recipient must accept, counted
//! from now. Dates are turned into days with H. Hinnant's civil-calendar
//! algorithms ([`days_from_civil`], [`civil_from_days`]), for dates from
//! 1970 on; nothing here needs a date library. `acme/` reads its CA's
//! `Retry-After` and its certificates' dates with them too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds in a day of Unix time, which counts no leap seconds.
const SECS_PER_DAY: u64 = 86_400;

/// Seconds to wait from a `Retry-After` value in either form of RFC 9110
/// §10.2.3: delta-seconds (`120`; an overlong number saturates), or an
/// HTTP-date, counted from `now` and rounded up (one already past is 0).
/// `None` for anything else. The caller clamps the result.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(value.parse().unwrap_or(u64::MAX));
    }
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?;
    let date = parse_http_date(value, now_secs.as_secs())?;
    let wait = Duration::from_secs(date).saturating_sub(now_secs);
    Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAY_NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// An HTTP-date (RFC 9110 §5.6.7) as seconds since the Unix epoch, in any
/// of the three forms a recipient must accept:
/// `Sun, 06 Nov 1994 08:49:37 GMT` (IMF-fixdate),
/// `Sunday, 06-Nov-94 08:49:37 GMT` (RFC 850) and
/// `Sun Nov  6 08:49:37 1994` (asctime). A two-digit year is the one
/// nearest below 50 years after `now_secs`'s year.
fn parse_http_date(text: &str, now_secs: u64) -> Option<u64> {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let (day, month, year, time) = match words.as_slice() {
        [name, day, month, year, time, "GMT"] if DAY_NAMES.contains(&name.strip_suffix(',')?) => {
            (*day, *month, year.parse::<u64>().ok()?, *time)
        }
        [name, date, time, "GMT"] if LONG_DAY_NAMES.contains(&name.strip_suffix(',')?) => {
            let mut parts = date.split('-');
            let (day, month, yy) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || yy.len() != 2 {
                return None;
            }
            let now_year = civil_from_days(now_secs / SECS_PER_DAY).0;
            let mut year = now_year / 100 * 100 + yy.parse::<u64>().ok()?;
            if year > now_year + 50 {
                year -= 100;
            }
            (day, month, year, *time)
        }
        [name, month, day, time, year] if DAY_NAMES.contains(name) => {
            (*day, *month, year.parse::<u64>().ok()?, *time)
        }
        _ => return None,
    };
    let all_digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
        len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    if !all_digits(day, 1..=2) || !(1970..=9999).contains(&year) {
        return None;
    }
    let day: u64 = day.parse().ok()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let mut hms = time.split(':');
    let (h, m, sec) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || ![h, m, sec].iter().all(|p| all_digits(p, 2..=2)) {
        return None;
    }
    let (h, m, sec): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * SECS_PER_DAY + h * 3600 + m * 60 + sec)
}

/// Days since 1970-01-01 of a date from 1970 on (H. Hinnant's algorithm).
pub(crate) fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06 08:49:37 UTC, RFC 9110's example date.
    const EXAMPLE_DATE_SECS: u64 = 784_111_777;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_in_delta_seconds() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("120", now), Some(120));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(u64::MAX)
        );
        for bad in ["", "-1", "1.5", "12s", "+3"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_as_an_http_date_in_each_of_the_three_forms() {
        let now = at(EXAMPLE_DATE_SECS - 90);
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_retry_after(date, now), Some(90), "{date}");
        }
    }

    #[test]
    fn retry_after_date_is_rounded_up_and_a_past_one_is_zero() {
        let now = at(EXAMPLE_DATE_SECS) - Duration::from_millis(1500);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(2)
        );
        let later = at(EXAMPLE_DATE_SECS + 3600);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(0)
        );
    }

    #[test]
    fn http_dates_across_months_leap_years_and_centuries() {
        let now = EXAMPLE_DATE_SECS;
        for (date, secs) in [
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Tue, 29 Feb 2000 12:00:00 GMT", 951_825_600),
            ("Fri, 31 Dec 2100 23:59:59 GMT", 4_133_980_799),
            ("Mon, 30 Nov 2026 15:00:00 GMT", 1_796_050_800),
        ] {
            assert_eq!(parse_http_date(date, now), Some(secs), "{date}");
            let (y, m, d) = civil_from_days(secs / 86_400);
            assert_eq!(days_from_civil(y, m, d), secs / 86_400, "{date}");
        }
        // RFC 850's two-digit year: the nearest one not over 50 years ahead.
        let in_2026 = 1_796_050_800;
        assert_eq!(
            parse_http_date("Monday, 30-Nov-26 15:00:00 GMT", in_2026),
            Some(in_2026)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", in_2026),
            Some(EXAMPLE_DATE_SECS)
        );
    }

    #[test]
    fn malformed_http_dates_are_refused() {
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun Nov  6 08:49:37",
            "tomorrow",
        ] {
            assert_eq!(parse_http_date(bad, EXAMPLE_DATE_SECS), None, "{bad}");
        }
    }
}
