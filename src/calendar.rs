//! UTC calendar days: what usage is counted by (`YYYY-MM-DD`, as stored and as the API
//! shows it) and what monthly quotas reset on. No time-zone database: every day here
//! is a UTC day.

use std::fmt;

const MS_PER_DAY: i64 = 86_400_000;

/// A UTC calendar day, held as days since 1970-01-01, so that ranges are arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    /// The day a time (unix milliseconds) falls on.
    pub fn from_ms(ms: i64) -> Self {
        Self(ms.div_euclid(MS_PER_DAY))
    }

    /// Today, in UTC.
    pub fn today() -> Self {
        Self::from_ms(crate::db::now_ms())
    }

    /// A day from its year, month (1-12) and day of month; `None` when there is no
    /// such day (February 30th).
    pub fn from_civil(year: i64, month: u32, day: u32) -> Option<Self> {
        if !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        // Days from civil (Howard Hinnant's algorithm), with March as the first month.
        let (month, day) = (i64::from(month), i64::from(day));
        let y = if month <= 2 { year - 1 } else { year };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let found = Self(era * 146_097 + doe - 719_468);
        // Day 31 of a 30-day month lands on the next month's first: not this day.
        (found.civil() == (year, month as u32, day as u32)).then_some(found)
    }

    /// Year, month (1-12) and day of month.
    pub fn civil(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        (year, month, day)
    }

    /// Strictly `YYYY-MM-DD` (years 0000-9999) naming a real day.
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = &bytes[range];
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
        };
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        Self::from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
    }

    /// The first day of this day's month.
    pub fn first_of_month(self) -> Self {
        let (year, month, _) = self.civil();
        Self::from_civil(year, month, 1).expect("every month has a first day")
    }

    /// The first day of the next month.
    pub fn first_of_next_month(self) -> Self {
        let (year, month, _) = self.civil();
        let (year, month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        Self::from_civil(year, month, 1).expect("every month has a first day")
    }

    /// Midnight UTC at the start of the day, in unix milliseconds.
    pub fn start_ms(self) -> i64 {
        self.0 * MS_PER_DAY
    }

    /// Days from `earlier` to this day (0 for the same day).
    pub fn days_since(self, earlier: Day) -> i64 {
        self.0 - earlier.0
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.civil();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::Day;

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
