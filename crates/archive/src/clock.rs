//! Time for reproducible builds: `SOURCE_DATE_EPOCH`, read once.
//!
//! Entries berth makes itself carry [`Clock::made`]; entries copied from
//! images keep their own time, capped by [`Clock::cap`], so no build time and
//! no time later than the epoch leaks into an artifact
//! (<https://reproducible-builds.org/specs/source-date-epoch/>).

/// LinuxKit's fixed time for the entries it makes (2017-04-18), used when
/// `SOURCE_DATE_EPOCH` is unset, so berth's and LinuxKit's trees agree.
pub const DEFAULT_MTIME: u64 = 1_492_533_000;

#[derive(Debug, thiserror::Error)]
#[error("SOURCE_DATE_EPOCH {value:?} is not a number of seconds")]
pub struct ClockError {
    pub value: String,
}

/// The time policy of one build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Clock {
    epoch: Option<u64>,
}

impl Clock {
    /// Reads `SOURCE_DATE_EPOCH`; unset or empty means no epoch.
    pub fn from_env() -> Result<Clock, ClockError> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) if !value.is_empty() => Clock::parse(&value),
            _ => Ok(Clock::default()),
        }
    }

    pub fn parse(value: &str) -> Result<Clock, ClockError> {
        value.parse::<u64>().map(Clock::at).map_err(|_| ClockError {
            value: value.into(),
        })
    }

    pub fn at(epoch: u64) -> Clock {
        Clock { epoch: Some(epoch) }
    }

    /// The epoch, if one was given.
    pub fn epoch(self) -> Option<u64> {
        self.epoch
    }

    /// The time of every entry berth makes itself.
    pub fn made(self) -> u64 {
        self.epoch.unwrap_or(DEFAULT_MTIME)
    }

    /// The time a copied entry keeps: its own, but never past the epoch.
    pub fn cap(self, mtime: u64) -> u64 {
        self.epoch.map_or(mtime, |epoch| mtime.min(epoch))
    }
}

/// Year, month (1-12) and day (1-31) of a day count since 1970-01-01, by
/// the proleptic Gregorian calendar: the count is shifted to start on
/// 0000-03-01, so that each 400-year era of 146097 days ends with its leap
/// day.
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    (era * 400 + year_of_era + u64::from(month <= 2), month, day)
}

/// Seconds since the epoch as an RFC 3339 time in UTC
/// (`2023-11-14T22:13:20Z`), as OCI annotations write times.
pub fn rfc3339(seconds: u64) -> String {
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let time = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time / 60 % 60,
        time % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_epoch_entries_get_linuxkits_time_and_keep_their_own() {
        let clock = Clock::default();
        assert_eq!(clock.made(), DEFAULT_MTIME);
        assert_eq!(clock.cap(2_000_000_000), 2_000_000_000);
    }

    #[test]
    fn an_epoch_is_the_made_time_and_the_latest_time() {
        let clock = Clock::parse("1700000000").unwrap();
        assert_eq!(clock.made(), 1_700_000_000);
        assert_eq!(clock.cap(2_000_000_000), 1_700_000_000);
        assert_eq!(clock.cap(1_000), 1_000);
    }

    #[test]
    fn a_bad_epoch_is_named() {
        let error = Clock::parse("yesterday").unwrap_err();
        assert_eq!(
            error.to_string(),
            "SOURCE_DATE_EPOCH \"yesterday\" is not a number of seconds"
        );
    }

    #[test]
    fn times_are_written_as_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(DEFAULT_MTIME), "2017-04-18T16:30:00Z");
        // 2000-02-29, a leap day of a century divisible by 400.
        assert_eq!(rfc3339(951_782_400 + 3_661), "2000-02-29T01:01:01Z");
    }
}
