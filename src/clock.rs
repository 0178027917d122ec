//! Time as the service stores and shows it: unix milliseconds in every table, RFC 3339
//! UTC in the API, and UTC calendar days, which usage is counted by (`YYYY-MM-DD`, as
//! stored and as the API shows it) and monthly quotas reset on. No time-zone database:
//! every day here is a UTC day. A leaf module, on the `time` crate.

use std::fmt;

use time::macros::format_description;
use time::{Date, Month, OffsetDateTime};

/// Milliseconds since the Unix epoch: the one time format stored in every table.
pub fn now_ms() -> i64 {
    ms_of(OffsetDateTime::now_utc())
}

/// RFC 3339 UTC time from unix milliseconds, to the millisecond
/// (`2026-11-23T11:42:03.456Z`).
pub fn rfc3339(ms: i64) -> String {
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    datetime(ms)
        .format(format)
        .expect("every datetime formats as RFC 3339")
}

/// The UTC datetime of unix milliseconds, clamped to what `time` holds (years ±9999).
fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(if ms < 0 {
        Date::MIN.midnight().assume_utc()
    } else {
        Date::MAX.midnight().assume_utc()
    })
}

fn ms_of(time: OffsetDateTime) -> i64 {
    (time.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A UTC calendar day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(Date);

impl Day {
    /// The day a time (unix milliseconds) falls on.
    pub fn from_ms(ms: i64) -> Self {
        Self(datetime(ms).date())
    }

    /// Today, in UTC.
    pub fn today() -> Self {
        Self(OffsetDateTime::now_utc().date())
    }

    /// Strictly `YYYY-MM-DD` (years 0000-9999, ASCII digits) naming a real day.
    pub fn parse(text: &str) -> Option<Self> {
        let ascii_digits = text
            .bytes()
            .enumerate()
            .all(|(i, byte)| matches!(i, 4 | 7) || byte.is_ascii_digit());
        if text.len() != 10 || !ascii_digits {
            return None;
        }
        Date::parse(text, format_description!("[year]-[month]-[day]"))
            .ok()
            .map(Self)
    }

    /// The first day of this day's month.
    pub fn first_of_month(self) -> Self {
        Self(self.0.replace_day(1).expect("every month has a first day"))
    }

    /// The first day of the next month.
    pub fn first_of_next_month(self) -> Self {
        let (year, month) = match self.0.month() {
            Month::December => (self.0.year() + 1, Month::January),
            month => (self.0.year(), month.next()),
        };
        Self(Date::from_calendar_date(year, month, 1).expect("every month has a first day"))
    }

    /// Midnight UTC at the start of the day, in unix milliseconds.
    pub fn start_ms(self) -> i64 {
        ms_of(self.0.midnight().assume_utc())
    }

    /// Days from `earlier` to this day (0 for the same day).
    pub fn days_since(self, earlier: Day) -> i64 {
        (self.0 - earlier.0).whole_days()
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self
            .0
            .format(format_description!("[year]-[month]-[day]"))
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::{rfc3339, Day};

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_434_123_456), "2026-11-23T11:42:03.456Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn days_round_trip_and_invalid_ones_are_refused() {
        assert_eq!(Day::from_ms(0).to_string(), "1970-01-01");
        assert_eq!(Day::from_ms(-1).to_string(), "1969-12-31");
        for text in [
            "2000-02-29",
            "2024-12-31",
            "0000-01-01",
            "9999-12-31",
            "2026-03-01",
        ] {
            assert_eq!(Day::parse(text).unwrap().to_string(), text);
        }
        for bad in [
            "2023-02-29",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "2024-1-01",
            "2024/01/01",
            "+024-01-01",
            "2024-01-01T",
            "",
            "２０２４-01-01",
        ] {
            assert_eq!(Day::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn months_start_and_end_in_utc() {
        let day = Day::parse("2024-12-17").unwrap();
        assert_eq!(day.first_of_month().to_string(), "2024-12-01");
        assert_eq!(day.first_of_next_month().to_string(), "2025-01-01");
        let leap = Day::parse("2024-02-29").unwrap();
        assert_eq!(leap.first_of_next_month().to_string(), "2024-03-01");
        assert_eq!(
            Day::parse("2025-01-01").unwrap().start_ms(),
            1_735_689_600_000
        );
        assert_eq!(
            Day::parse("2024-12-31")
                .unwrap()
                .days_since(Day::parse("2024-01-01").unwrap()),
            365
        );
    }
}
