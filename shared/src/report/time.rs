//! Report times: CollectionTime / ReportTimestamp values, the HTTP `Date`
//! fallback, and the "CPE has no clock" rule.
//!
//! The data model defines Unix-Epoch as milliseconds, but every implementation
//! seen sends seconds, so a number is read as seconds unless it is above 1e11
//! (year 5138 in seconds, 1973 in ms). Times before 2000-01-01 come from CPEs
//! whose clock is not set (uptime counted from 1970 or from `0001-01-01`) and are
//! not trusted: the `Date` header, then the time of receipt, stand in for them.

use super::TimeSource;
use chrono::{DateTime, NaiveDateTime};

/// 2000-01-01T00:00:00Z in ms: anything earlier is an unset CPE clock.
pub const MIN_TRUSTED_MS: i64 = 946_684_800_000;

/// Numbers above this are milliseconds, below it seconds.
const MS_THRESHOLD: f64 = 1e11;

/// The time a report falls back to when it carries no usable time of its own.
#[derive(Debug, Clone, Copy)]
pub struct Fallback {
    pub time_ms: i64,
    pub source: TimeSource,
}

impl Fallback {
    /// The `Date` header when it parses and is trusted, else the receipt time.
    pub fn new(date_header: Option<&str>, received_at_ms: i64) -> Fallback {
        match date_header
            .and_then(parse_http_date)
            .filter(|&t| trusted(t))
        {
            Some(time_ms) => Fallback {
                time_ms,
                source: TimeSource::Date,
            },
            None => Fallback {
                time_ms: received_at_ms,
                source: TimeSource::Received,
            },
        }
    }

    /// Resolves a report's own time (if any) against this fallback.
    pub fn resolve(&self, own: Option<i64>) -> (i64, TimeSource) {
        match own.filter(|&t| trusted(t)) {
            Some(t) => (t, TimeSource::Report),
            None => (self.time_ms, self.source),
        }
    }
}

fn trusted(ms: i64) -> bool {
    ms >= MIN_TRUSTED_MS
}

/// A report time given as a JSON number (seconds, or ms above 1e11).
pub fn from_number(n: f64) -> Option<i64> {
    if !n.is_finite() {
        return None;
    }
    let ms = if n.abs() > MS_THRESHOLD {
        n
    } else {
        n * 1000.0
    };
    // Beyond ±2^53 ms (year 287,000) a float cannot be a real time.
    (ms.abs() < 9.0e15).then(|| ms.round() as i64)
}

/// A report time given as an integer (seconds, or ms above 1e11), exact.
pub fn from_integer(n: i128) -> Option<i64> {
    let ms = if n.unsigned_abs() > 100_000_000_000 {
        n
    } else {
        n * 1000
    };
    i64::try_from(ms).ok()
}

/// A report time given as text: a decimal number (as for [`from_number`]) or an
/// ISO-8601 date-time with `Z` or an offset. A date-time without an offset is
/// taken as UTC (CPEs without a zone setting report UTC).
pub fn from_text(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<i128>() {
        return from_integer(n);
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return s.parse::<f64>().ok().and_then(from_number);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    // Offsets without a colon (`+0000`), and the space separator some stacks use.
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.timestamp_millis());
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

/// Parses an HTTP `Date` header: IMF-fixdate as the standard says, but also a
/// one-digit day (`Tue, 3 Dec 2024 ...`) as real CPEs send, and the obsolete
/// asctime form.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc2822(s) {
        return Some(t.timestamp_millis());
    }
    // RFC 850 (`Tuesday, 03-Dec-24 17:20:05 GMT`) and asctime (`Tue Dec  3 17:20:05 2024`).
    for fmt in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_733_246_400_000; // 2024-12-03T17:20:00Z

    #[test]
    fn numbers_are_seconds_unless_above_1e11() {
        assert_eq!(from_integer(1_733_246_400), Some(T));
        assert_eq!(from_integer(1_733_246_400_123), Some(T + 123));
        assert_eq!(from_number(1_733_246_400.5), Some(T + 500));
        assert_eq!(from_number(f64::NAN), None);
        assert_eq!(from_number(1e300), None);
    }

    #[test]
    fn text_times() {
        assert_eq!(from_text("1733246400"), Some(T));
        assert_eq!(from_text(" 1733246400123 "), Some(T + 123));
        assert_eq!(from_text("1733246400.25"), Some(T + 250));
        assert_eq!(from_text("2024-12-03T17:20:00Z"), Some(T));
        assert_eq!(from_text("2024-12-03T14:20:00-03:00"), Some(T));
        assert_eq!(from_text("2024-12-03T18:20:00.5+0100"), Some(T + 500));
        assert_eq!(from_text("2024-12-03 17:20:00Z"), Some(T));
        assert_eq!(from_text("2024-12-03T17:20:00"), Some(T));
        assert_eq!(from_text("yesterday"), None);
        assert_eq!(from_text(""), None);
    }

    #[test]
    fn http_dates_with_and_without_leading_zero() {
        assert_eq!(parse_http_date("Tue, 03 Dec 2024 17:20:00 GMT"), Some(T));
        assert_eq!(parse_http_date("Tue, 3 Dec 2024 17:20:00 GMT"), Some(T));
        assert_eq!(parse_http_date("Tuesday, 03-Dec-24 17:20:00 GMT"), Some(T));
        assert_eq!(parse_http_date("Tue Dec  3 17:20:00 2024"), Some(T));
        assert_eq!(parse_http_date("not a date"), None);
    }

    #[test]
    fn untrusted_times_fall_back_to_date_then_receipt() {
        let received = T + 60_000;
        let with_date = Fallback::new(Some("Tue, 03 Dec 2024 17:20:05 GMT"), received);
        // An uptime-based TR-069 dateTime (2 days after year 1) is not wall-clock.
        let boot_relative = from_text("0001-01-03T03:00:00Z");
        assert!(boot_relative.is_some());
        assert_eq!(
            with_date.resolve(boot_relative),
            (T + 5_000, TimeSource::Date)
        );
        assert_eq!(
            with_date.resolve(Some(86_213_000)),
            (T + 5_000, TimeSource::Date)
        );
        assert_eq!(with_date.resolve(Some(T)), (T, TimeSource::Report));
        // A Date header from a CPE without a clock is no better.
        let bad_date = Fallback::new(Some("Thu, 01 Jan 1970 00:10:00 GMT"), received);
        assert_eq!(bad_date.resolve(None), (received, TimeSource::Received));
        let no_date = Fallback::new(None, received);
        assert_eq!(no_date.resolve(None), (received, TimeSource::Received));
    }
}
