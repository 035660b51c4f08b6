//! Limits against abuse and runaway cost: a per-sender rate limit and a daily token budget.
//!
//! The rate limit counts the texts a sender had handled within the last minute *by the
//! texts' own dates*, so a backlog read at once after a restart is not mistaken for a flood;
//! texts over the limit are not handled, and the sender is told once per minute. The token
//! budget counts the tokens the agent used today (local date) — input, output and cache
//! writes; cache reads cost a tenth and are not counted — in `budget.json` in the data
//! directory, so a restart does not reset it; once it is used up, texts go to Inbox
//! unprocessed and the user is told once per day.
//!
//! Invariants: the budget file is written atomically ([`persist::write_atomic`]) and a file
//! that does not parse is moved aside and reported, never silently replaced; both limits are
//! behind `std::sync::Mutex`es held only for a few steps, never across an `.await`; the
//! budget's writes block (fsync): call them from `spawn_blocking`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::anthropic::Usage;
use crate::persist::{self, Loaded};

/// The rate limit's window.
pub const WINDOW: TimeDelta = TimeDelta::minutes(1);

/// The budget file's name inside the data directory.
pub const BUDGET_FILE: &str = "budget.json";

/// Why the budget could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// Writing the budget file failed; the in-memory count is still right.
    #[error("could not save the token budget to {path}: {source}")]
    Write {
        /// The budget file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// What the rate limit says about one text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// Handle it.
    Allowed,
    /// Do not handle it; `notify` is true for the first such text of a window (tell the
    /// sender once, not once per text).
    Limited {
        /// Whether to tell the sender now.
        notify: bool,
    },
}

/// Per-sender sliding-window rate limit.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: usize,
    senders: Mutex<HashMap<String, Window>>,
}

#[derive(Debug, Default)]
struct Window {
    /// Dates of the texts allowed within the window, oldest first.
    allowed: VecDeque<DateTime<Utc>>,
    /// No further notice before this date.
    quiet_until: Option<DateTime<Utc>>,
}

impl RateLimiter {
    /// At most `per_minute` texts per sender within any minute (at least 1).
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            per_minute: usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX),
            senders: Mutex::default(),
        }
    }

    /// The limit.
    pub fn per_minute(&self) -> usize {
        self.per_minute
    }

    /// Decides about a text from `sender` dated `date`, and counts it if allowed.
    pub fn check(&self, sender: &str, date: DateTime<Utc>) -> Rate {
        let mut senders = lock(&self.senders);
        // Windows of senders quiet for longer than the window carry nothing: forget them.
        senders.retain(|_, w| {
            w.allowed.back().is_some_and(|last| date - *last < WINDOW)
                || w.quiet_until.is_some_and(|until| date < until)
        });
        let window = senders.entry(sender.to_string()).or_default();
        while window
            .allowed
            .front()
            .is_some_and(|first| date - *first >= WINDOW)
        {
            window.allowed.pop_front();
        }
        if window.allowed.len() < self.per_minute {
            // Dates are not strictly ordered (clock skew between devices): keep them sorted.
            let at = window.allowed.partition_point(|d| *d <= date);
            window.allowed.insert(at, date);
            return Rate::Allowed;
        }
        let notify = window.quiet_until.is_none_or(|until| date >= until);
        if notify {
            window.quiet_until = Some(date + WINDOW);
        }
        Rate::Limited { notify }
    }
}

/// What the budget says before a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spend {
    /// Tokens are left today.
    Allowed,
    /// Today's budget is used up; `notify` is true once per day.
    Exhausted {
        /// Whether to tell the user now.
        notify: bool,
    },
}

/// The daily token budget, persisted with its date.
#[derive(Debug)]
pub struct Budget {
    path: PathBuf,
    limit: u64,
    day: Mutex<Day>,
}

/// One day's count, as stored in `budget.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Day {
    date: NaiveDate,
    used: u64,
    /// Whether the user was told today that the budget is used up.
    notified: bool,
}

impl Day {
    fn new(date: NaiveDate) -> Day {
        Day {
            date,
            used: 0,
            notified: false,
        }
    }
}

impl Budget {
    /// Opens the budget saved in `path` (it need not exist) with `limit` tokens a day. A
    /// file that does not parse is moved aside and reported as `(where it went, why)`; the
    /// count then starts from zero.
    pub fn open(
        path: PathBuf,
        limit: u64,
        today: NaiveDate,
    ) -> io::Result<(Budget, Option<(PathBuf, String)>)> {
        let (day, moved) = match persist::load_json::<Day>(&path)? {
            Loaded::Missing => (Day::new(today), None),
            Loaded::Ok(day) => (day, None),
            Loaded::MovedAside { moved_to, reason } => (Day::new(today), Some((moved_to, reason))),
        };
        let budget = Budget {
            path,
            limit: limit.max(1),
            day: Mutex::new(day),
        };
        Ok((budget, moved))
    }

    /// The file the budget is saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tokens counted on `today`.
    pub fn used(&self, today: NaiveDate) -> u64 {
        let day = lock(&self.day);
        if day.date == today { day.used } else { 0 }
    }

    /// Whether a run may start on `today`; when not, whether to tell the user (once a day,
    /// remembered across restarts).
    pub fn check(&self, today: NaiveDate) -> Result<Spend, LimitsError> {
        let mut day = lock(&self.day);
        if day.date != today {
            *day = Day::new(today);
        }
        if day.used < self.limit {
            return Ok(Spend::Allowed);
        }
        if day.notified {
            return Ok(Spend::Exhausted { notify: false });
        }
        day.notified = true;
        self.save(&day)?;
        Ok(Spend::Exhausted { notify: true })
    }

    /// Counts what a run used on `today`; returns today's total.
    pub fn spend(&self, today: NaiveDate, usage: &Usage) -> Result<u64, LimitsError> {
        let tokens = counted(usage);
        let mut day = lock(&self.day);
        if day.date != today {
            *day = Day::new(today);
        }
        if tokens == 0 {
            return Ok(day.used);
        }
        day.used = day.used.saturating_add(tokens);
        self.save(&day)?;
        Ok(day.used)
    }

    fn save(&self, day: &Day) -> Result<(), LimitsError> {
        // A `Day` is plain data; serialising it cannot fail.
        let bytes = serde_json::to_vec(day).unwrap_or_default();
        persist::write_atomic(&self.path, &bytes).map_err(|source| LimitsError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

/// The tokens of `usage` that count against the budget.
pub fn counted(usage: &Usage) -> u64 {
    usage
        .input_tokens
        .saturating_add(usage.output_tokens)
        .saturating_add(usage.cache_creation_input_tokens)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent at each step.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + seconds, 0).unwrap()
    }

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, n).unwrap()
    }

    fn usage(input: u64, output: u64, cache_write: u64, cache_read: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: cache_write,
            cache_read_input_tokens: cache_read,
        }
    }

    /// Issue 4: a flood from one sender is cut off at the limit, the sender is told once
    /// per window, other senders are unaffected, and capacity returns as texts age.
    #[test]
    fn rate_limit_by_the_texts_own_dates() {
        let limiter = RateLimiter::new(3);
        let verdicts: Vec<Rate> = (0..6).map(|i| limiter.check("+1555", at(i))).collect();
        assert_eq!(
            verdicts,
            [
                Rate::Allowed,
                Rate::Allowed,
                Rate::Allowed,
                Rate::Limited { notify: true },
                Rate::Limited { notify: false },
                Rate::Limited { notify: false },
            ]
        );
        assert_eq!(limiter.check("me@icloud.com", at(5)), Rate::Allowed);
        // The first allowed text (at 0 s) leaves the window at 60 s.
        assert_eq!(
            limiter.check("+1555", at(59)),
            Rate::Limited { notify: false }
        );
        assert_eq!(limiter.check("+1555", at(60)), Rate::Allowed);
        assert_eq!(
            limiter.check("+1555", at(61)),
            Rate::Allowed,
            "the text at 1 s left too"
        );
        assert_eq!(
            limiter.check("+1555", at(62)),
            Rate::Allowed,
            "and the one at 2 s"
        );
        // The next notice comes one window after the last one (at 3 s).
        assert_eq!(
            limiter.check("+1555", at(63)),
            Rate::Limited { notify: true }
        );
    }

    #[test]
    fn a_backlog_spread_over_time_is_not_a_flood() {
        let limiter = RateLimiter::new(2);
        // Forty texts written a minute apart, read in one go after a restart.
        for i in 0..40 {
            assert_eq!(
                limiter.check("+1555", at(i * 60)),
                Rate::Allowed,
                "text {i}"
            );
        }
        // Out-of-order dates (clock skew) still count within their window.
        let limiter = RateLimiter::new(2);
        assert_eq!(limiter.check("+1555", at(10)), Rate::Allowed);
        assert_eq!(limiter.check("+1555", at(5)), Rate::Allowed);
        assert_eq!(
            limiter.check("+1555", at(20)),
            Rate::Limited { notify: true }
        );
        assert_eq!(limiter.check("+1555", at(65)), Rate::Allowed);
    }

    #[test]
    fn budget_counts_tokens_per_day_and_persists_the_notice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BUDGET_FILE);
        let (budget, moved) = Budget::open(path.clone(), 1_000, day(1)).unwrap();
        assert!(moved.is_none());
        assert_eq!(budget.check(day(1)).unwrap(), Spend::Allowed);
        // Cache reads are not counted.
        assert_eq!(
            budget.spend(day(1), &usage(600, 300, 50, 9_999)).unwrap(),
            950
        );
        assert_eq!(budget.check(day(1)).unwrap(), Spend::Allowed);
        assert_eq!(budget.spend(day(1), &usage(40, 10, 0, 0)).unwrap(), 1_000);
        assert_eq!(
            budget.check(day(1)).unwrap(),
            Spend::Exhausted { notify: true }
        );
        assert_eq!(
            budget.check(day(1)).unwrap(),
            Spend::Exhausted { notify: false }
        );
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            on_disk,
            serde_json::json!({"date": "2026-03-01", "used": 1000, "notified": true})
        );
        drop(budget);

        // A restart the same day remembers both the count and the notice.
        let (budget, _) = Budget::open(path.clone(), 1_000, day(1)).unwrap();
        assert_eq!(budget.used(day(1)), 1_000);
        assert_eq!(
            budget.check(day(1)).unwrap(),
            Spend::Exhausted { notify: false }
        );
        // The next day starts afresh.
        assert_eq!(budget.used(day(2)), 0);
        assert_eq!(budget.check(day(2)).unwrap(), Spend::Allowed);
        assert_eq!(budget.spend(day(2), &usage(1, 1, 0, 0)).unwrap(), 2);
    }

    #[test]
    fn an_unreadable_budget_file_is_moved_aside() {
        let cases: &[&[u8]] = &[
            b"",
            b"{\"date\":\"2026-03-01\",\"used\":",
            b"{\"date\":\"yesterday\",\"used\":1,\"notified\":false}",
            b"{\"date\":\"2026-03-01\",\"used\":-5,\"notified\":false}",
            b"\xff\xfe\x00",
        ];
        for bytes in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(BUDGET_FILE);
            std::fs::write(&path, bytes).unwrap();
            let (budget, moved) = Budget::open(path.clone(), 10, day(1)).unwrap();
            let (moved_to, _reason) = moved.expect("moved aside");
            assert_eq!(std::fs::read(&moved_to).unwrap(), *bytes);
            assert_eq!(budget.used(day(1)), 0);
            budget.spend(day(1), &usage(3, 0, 0, 0)).unwrap();
            assert_eq!(budget.used(day(1)), 3);
        }
    }

    #[test]
    fn a_failed_save_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (budget, _) = Budget::open(data.join(BUDGET_FILE), 10, day(1)).unwrap();
        std::fs::write(&data, b"not a directory").unwrap();
        let err = budget.spend(day(1), &usage(5, 0, 0, 0)).unwrap_err();
        assert!(err.to_string().contains(BUDGET_FILE), "{err}");
        assert_eq!(budget.used(day(1)), 5, "the count in memory stays right");
    }
}
