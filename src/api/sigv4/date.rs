//! The two date forms a signature carries: the basic format (`20150830T123600Z`) and an
//! IMF-fixdate `Date` header.

use std::time::{SystemTime, UNIX_EPOCH};

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range of the 16-character basic format.
const MIN_FORMATTABLE_SECS: i64 = -62_167_219_200;
const MAX_FORMATTABLE_SECS: i64 = 253_402_300_799;

pub(super) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// `YYYYMMDD'T'HHMMSS'Z'`, clamped to years 0000..=9999 so it always has that shape.
pub(super) fn format_basic(secs: i64) -> String {
    let secs = secs.clamp(MIN_FORMATTABLE_SECS, MAX_FORMATTABLE_SECS);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => "00000101T000000Z".to_owned(),
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn to_unix(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<i64> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let time = Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

/// `YYYYMMDD'T'HHMMSS'Z'` to seconds since the Unix epoch.
pub(super) fn parse_basic(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    to_unix(
        digits(s.get(0..4)?)?,
        digits(s.get(4..6)?)?,
        digits(s.get(6..8)?)?,
        digits(s.get(9..11)?)?,
        digits(s.get(11..13)?)?,
        digits(s.get(13..15)?)?,
    )
}

/// An IMF-fixdate `Date` header (`Sun, 06 Nov 1994 08:49:37 GMT`) to seconds since the epoch.
pub(super) fn parse_http_date(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    let [weekday, day, month, year, clock, "GMT"] = parts.as_slice() else {
        return None;
    };
    if !weekday.ends_with(',') || day.len() != 2 || year.len() != 4 || clock.len() != 8 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| m == month)? + 1;
    let mut hms = clock.split(':');
    let (Some(h), Some(m), Some(sec), None) = (hms.next(), hms.next(), hms.next(), hms.next())
    else {
        return None;
    };
    to_unix(
        digits(year)?,
        u32::try_from(month).ok()?,
        digits(day)?,
        digits(h)?,
        digits(m)?,
        digits(sec)?,
    )
}
