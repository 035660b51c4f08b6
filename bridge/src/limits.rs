//! Limits against abuse and runaway cost: a per-sender rate limit and a daily token budget.
//!
//! The rate limit counts the texts a sender had handled within the last minute *by the
//! texts' own dates*, so a backlog read at once after a restart is not mistaken for a flood;
//! texts over the limit are not handled, and the sender is told once per minute. The token
//! budget counts the tokens the agent used today (local date) — input, output and cache
//! writes; cache reads cost a tenth and are not counted — in the state database
//! ([`crate::state`]), so a restart does not reset it; once it is used up, texts go to Inbox
//! unprocessed and the user is told once per day.
//!
//! Invariants: each change to the budget is one transaction, committed without its own
//! fsync ([`StateDb::write_relaxed`]): a process crash loses nothing, a power cut at most the
//! last run's count (the text's own finish commit, which follows, syncs it); both limits are behind
//! `std::sync::Mutex`es held only for a few steps, never across an `.await` (the budget's is
//! held across its own blocking save); the `blocking_*` methods block (fsync), async callers
//! use the async ones, which run them on the blocking pool.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::anthropic::Usage;
use crate::mutex::lock;
use crate::state::StateDb;

/// The rate limit's window.
pub const WINDOW: TimeDelta = TimeDelta::minutes(1);

/// The file older versions kept the budget in, inside the data directory (now imported
/// into the state database at start).
pub const BUDGET_FILE: &str = "budget.json";

/// Why the budget could not be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// Saving the budget failed; the in-memory count is still right.
    #[error("could not save the token budget to {path}: {source}")]
    Write {
        /// The state database.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// Reading the stored budget failed.
    #[error("could not read the token budget from {path}: {source}")]
    Read {
        /// The state database.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking task saving the budget died (a panic or a runtime shutting down).
    #[error("the token budget task for {path} did not finish: {reason}")]
    Interrupted {
        /// The state database.
        path: PathBuf,
        /// What happened to the task.
        reason: String,
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

/// The daily token budget, persisted with its date in the state database.
#[derive(Debug)]
pub struct Budget {
    db: Arc<StateDb>,
    limit: u64,
    day: Mutex<Day>,
}

/// One day's count (the shape `budget.json` stored it in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Day {
    /// The local date counted.
    pub date: NaiveDate,
    /// Tokens counted that day.
    pub used: u64,
    /// Whether the user was told that day that the budget is used up.
    pub notified: bool,
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
    /// Opens the budget saved in `db` with `limit` tokens a day; none saved counts from zero.
    pub fn open(db: Arc<StateDb>, limit: u64, today: NaiveDate) -> Result<Budget, LimitsError> {
        let stored = db
            .read(|c| {
                c.query_row(
                    "SELECT date, used, notified FROM budget WHERE id = 1",
                    [],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, bool>(2)?,
                        ))
                    },
                )
                .optional()
            })
            .map_err(|source| LimitsError::Read {
                path: db.path().to_path_buf(),
                source,
            })?;
        let day = stored
            .and_then(|(date, used, notified)| {
                Some(Day {
                    date: date.parse().ok()?,
                    used: u64::try_from(used).ok()?,
                    notified,
                })
            })
            .unwrap_or_else(|| Day::new(today));
        Ok(Budget {
            db,
            limit: limit.max(1),
            day: Mutex::new(day),
        })
    }

    /// Tokens counted on `today`.
    pub fn used(&self, today: NaiveDate) -> u64 {
        let day = lock(&self.day);
        if day.date == today { day.used } else { 0 }
    }

    /// Whether a run may start on `today`; when not, whether to tell the user (once a day,
    /// remembered across restarts).
    pub fn blocking_check(&self, today: NaiveDate) -> Result<Spend, LimitsError> {
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

    /// [`blocking_check`](Budget::blocking_check) on the blocking pool.
    pub async fn check(self: &Arc<Self>, today: NaiveDate) -> Result<Spend, LimitsError> {
        self.off_runtime(move |budget| budget.blocking_check(today))
            .await
    }

    /// Counts what a run used on `today`; returns today's total. The count in memory
    /// stays right when saving fails.
    pub fn blocking_spend(&self, today: NaiveDate, usage: &Usage) -> Result<u64, LimitsError> {
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

    /// [`blocking_spend`](Budget::blocking_spend) on the blocking pool.
    pub async fn spend(
        self: &Arc<Self>,
        today: NaiveDate,
        usage: &Usage,
    ) -> Result<u64, LimitsError> {
        let usage = *usage;
        self.off_runtime(move |budget| budget.blocking_spend(today, &usage))
            .await
    }

    /// Takes over a day counted by an older version (`budget.json`) unless one is stored.
    pub fn blocking_import(&self, saved: Day) -> Result<(), LimitsError> {
        let stored: bool = self
            .db
            .read(|c| c.query_row("SELECT COUNT(*) > 0 FROM budget", [], |r| r.get(0)))
            .map_err(|source| LimitsError::Read {
                path: self.db.path().to_path_buf(),
                source,
            })?;
        if stored {
            return Ok(());
        }
        let mut day = lock(&self.day);
        self.save(&saved)?;
        *day = saved;
        Ok(())
    }

    fn save(&self, day: &Day) -> Result<(), LimitsError> {
        let used = i64::try_from(day.used).unwrap_or(i64::MAX);
        // Relaxed: a power cut may forget one run's tokens or one notice, never more; the
        // text's finish commit syncs it anyway.
        self.db
            .write_relaxed(|tx| {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO budget (id, date, used, notified) VALUES (1, ?1, ?2, ?3)",
                )?
                .execute(rusqlite::params![day.date.to_string(), used, day.notified])
            })
            .map(drop)
            .map_err(|source| LimitsError::Write {
                path: self.db.path().to_path_buf(),
                source,
            })
    }

    async fn off_runtime<T: Send + 'static>(
        self: &Arc<Self>,
        step: impl FnOnce(&Budget) -> Result<T, LimitsError> + Send + 'static,
    ) -> Result<T, LimitsError> {
        let budget = Arc::clone(self);
        tokio::task::spawn_blocking(move || step(&budget))
            .await
            .unwrap_or_else(|join| {
                Err(LimitsError::Interrupted {
                    path: self.db.path().to_path_buf(),
                    reason: join.to_string(),
                })
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

    fn budget_at(dir: &std::path::Path, limit: u64, today: NaiveDate) -> Budget {
        let (db, _) = StateDb::open(dir.join(crate::state::FILE)).unwrap();
        Budget::open(Arc::new(db), limit, today).unwrap()
    }

    fn stored(budget: &Budget) -> (String, i64, bool) {
        budget
            .db
            .read(|c| {
                c.query_row("SELECT date, used, notified FROM budget", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
            })
            .unwrap()
    }

    #[test]
    fn budget_counts_tokens_per_day_and_persists_the_notice() {
        let dir = tempfile::tempdir().unwrap();
        let budget = budget_at(dir.path(), 1_000, day(1));
        assert_eq!(budget.blocking_check(day(1)).unwrap(), Spend::Allowed);
        // Cache reads are not counted.
        assert_eq!(
            budget
                .blocking_spend(day(1), &usage(600, 300, 50, 9_999))
                .unwrap(),
            950
        );
        assert_eq!(budget.blocking_check(day(1)).unwrap(), Spend::Allowed);
        assert_eq!(
            budget.blocking_spend(day(1), &usage(40, 10, 0, 0)).unwrap(),
            1_000
        );
        assert_eq!(
            budget.blocking_check(day(1)).unwrap(),
            Spend::Exhausted { notify: true }
        );
        assert_eq!(
            budget.blocking_check(day(1)).unwrap(),
            Spend::Exhausted { notify: false }
        );
        assert_eq!(stored(&budget), ("2026-03-01".to_string(), 1000, true));
        drop(budget);

        // A restart the same day remembers both the count and the notice.
        let budget = budget_at(dir.path(), 1_000, day(1));
        assert_eq!(budget.used(day(1)), 1_000);
        assert_eq!(
            budget.blocking_check(day(1)).unwrap(),
            Spend::Exhausted { notify: false }
        );
        // The next day starts afresh.
        assert_eq!(budget.used(day(2)), 0);
        assert_eq!(budget.blocking_check(day(2)).unwrap(), Spend::Allowed);
        assert_eq!(
            budget.blocking_spend(day(2), &usage(1, 1, 0, 0)).unwrap(),
            2
        );
    }

    #[tokio::test]
    async fn the_async_budget_steps_save_and_a_failed_save_is_typed() {
        let budget = Arc::new(Budget::open(Arc::new(StateDb::in_memory()), 10, day(1)).unwrap());
        assert_eq!(budget.spend(day(1), &usage(4, 0, 0, 0)).await.unwrap(), 4);
        assert_eq!(budget.check(day(1)).await.unwrap(), Spend::Allowed);
        assert_eq!(stored(&budget), ("2026-03-01".to_string(), 4, false));
        budget
            .db
            .read(|c| {
                c.execute_batch(
                    "CREATE TRIGGER refuse BEFORE INSERT ON budget \
                     BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
                )
            })
            .unwrap();
        let err = budget.spend(day(1), &usage(5, 0, 0, 0)).await.unwrap_err();
        assert!(matches!(err, LimitsError::Write { .. }), "{err}");
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(budget.used(day(1)), 9, "the count in memory stays right");
    }

    #[test]
    fn an_imported_day_is_taken_only_when_none_is_stored() {
        let budget = Budget::open(Arc::new(StateDb::in_memory()), 10, day(2)).unwrap();
        let old = Day {
            date: day(2),
            used: 7,
            notified: false,
        };
        budget.blocking_import(old.clone()).unwrap();
        assert_eq!(budget.used(day(2)), 7);
        budget.blocking_spend(day(2), &usage(1, 0, 0, 0)).unwrap();
        budget.blocking_import(old).unwrap();
        assert_eq!(budget.used(day(2)), 8, "the stored count wins");
        assert_eq!(stored(&budget), ("2026-03-02".to_string(), 8, false));
    }
}
