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
}
