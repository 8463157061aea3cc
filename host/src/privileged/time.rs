//! Instants as privileged commands write them: RFC 3339 in UTC to the
//! second, `2026-11-24T12:00:00Z`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch of `text`, an RFC 3339 UTC instant
/// (`YYYY-MM-DDTHH:MM:SSZ`, optional fraction of a second, which is
/// dropped); `None` when it is not one.
pub fn parse_instant(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| -> Option<u64> {
        let part = bytes.get(range)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let rest = &bytes[19..];
    let rest = match rest.first() {
        Some(b'.') => {
            let fraction = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if fraction == 0 {
                return None;
            }
            &rest[1 + fraction..]
        }
        _ => rest,
    };
    if !matches!(rest, b"Z" | b"z") {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second.min(59))
}

/// `seconds` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_instant(seconds: u64) -> String {
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

/// Seconds since the Unix epoch of `time` (0 before it).
pub fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn is_leap(year: u64) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date on or after it (Howard Hinnant's
/// `days_from_civil`, for the unsigned range).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` after 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_instant("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_instant("2000-02-29T12:34:56Z"), Some(951_827_696));
        assert_eq!(parse_instant("2026-11-24T12:00:00Z"), Some(1_795_521_600));
        assert_eq!(
            parse_instant("2026-11-24T12:00:00.250Z"),
            Some(1_795_521_600)
        );
        assert_eq!(format_instant(1_795_521_600), "2026-11-24T12:00:00Z");
        assert_eq!(format_instant(951_827_696), "2000-02-29T12:34:56Z");
    }

    #[test]
    fn round_trips_every_day_for_centuries() {
        for day in (0..150_000u64).step_by(7) {
            let seconds = day * 86_400 + 3_723;
            assert_eq!(parse_instant(&format_instant(seconds)), Some(seconds));
        }
    }

    #[test]
    fn refuses_what_is_not_an_utc_instant() {
        for bad in [
            "",
            "2026-11-24",
            "2026-11-24T12:00:00",
            "2026-11-24T12:00:00+01:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T12:00:00.Z",
            "1969-12-31T23:59:59Z",
            "２026-11-24T12:00:00Z",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}
