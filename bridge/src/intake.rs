//! Intake: notices new rows in chat.db, admits allowed senders, claims their texts in the
//! ledger and hands them to the router.
//!
//! Invariants: a text is claimed durably before any work on it starts; the cursor moves past
//! a row only once it is claimed or skipped; strangers never reach the router. The cursor
//! keeps the ROWID, the newest date seen and a mark (ROWID and guid of the last text read).
//! Texts dated more than [`BACKFILL_TOLERANCE`] before the cursor's date are history synced
//! in late (iCloud backfill), not new texts; texts older than the catch-up window (texts
//! that came while the bridge was down) are skipped and counted. The database is reopened
//! when its file is replaced; a database whose newest ROWID is below the cursor, or whose
//! rows no longer line up with the mark, is re-read by date: from its first row, taking only
//! texts dated after the cursor's date (less the tolerance), with the ledger's guids keeping
//! out texts already handled — so a rebuilt database neither stalls nor replays. Reading and
//! claiming run on the blocking pool (SQLite and fsync).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::allowlist::Allowlist;
use crate::chatdb::{self, ChatDb, IncomingMessage};
use crate::ledger::{Cursor, Ledger, Mark};
use crate::router::{Handler, Job, Router};
use crate::status::{State, StatusBoard};
use crate::watcher::Watcher;

/// How far before the cursor's date a newly read row may be dated and still count as a new
/// text (clock differences between devices, late delivery).
pub const BACKFILL_TOLERANCE: TimeDelta = TimeDelta::minutes(10);

/// The intake loop's inputs.
pub struct Intake<H> {
    /// Messages' database.
    pub chat_db: PathBuf,
    /// Safety-net poll interval.
    pub poll: Duration,
    /// Texts older than this when read are skipped (those that came while the bridge was
    /// down, beyond the catch-up window).
    pub catch_up: Duration,
    /// Claimed and finished texts, and the cursor.
    pub ledger: Arc<Ledger>,
    /// Who may reach the agent (shared so the app can change it live).
    pub allowlist: Arc<RwLock<Allowlist>>,
    /// Where admitted texts go.
    pub router: Router<H>,
    /// What the tray shows.
    pub status: StatusBoard,
    /// `true` while the user has paused the bridge.
    pub paused: watch::Receiver<bool>,
}

/// An open database and the identity of the file it was opened from.
struct Open {
    db: ChatDb,
    identity: Option<(u64, u64)>,
}

impl<H: Handler> Intake<H> {
    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut watcher = Watcher::new(&self.chat_db, self.poll);
        let mut open: Option<Open> = None;
        let mut announced = false;
        loop {
            if !*self.paused.borrow_and_update() {
                open = self.read_new(open).await;
                if open.is_some() {
                    self.status.set_state(State::Running);
                }
            } else {
                self.status.set_state(State::Paused);
            }
            if !announced {
                info!(chat_db = ?self.chat_db, "ready: watching for new texts");
                announced = true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = watcher.changed() => {}
                changed = self.paused.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Reads and dispatches everything new; returns the connection to keep.
    async fn read_new(&self, open: Option<Open>) -> Option<Open> {
        let path = self.chat_db.clone();
        let ledger = Arc::clone(&self.ledger);
        let allowlist = Arc::clone(&self.allowlist);
        let catch_up = TimeDelta::from_std(self.catch_up).unwrap_or(TimeDelta::MAX);
        let result = tokio::task::spawn_blocking(move || {
            read_and_claim(&path, open, &ledger, &allowlist, catch_up)
        })
        .await;
        let (open, outcome) = match result {
            Ok(pair) => pair,
            Err(err) => {
                warn!(cause = %err, "chat.db reader task failed");
                return None;
            }
        };
        match outcome {
            Ok(admitted) => {
                for (handle, at) in &admitted.strangers {
                    self.status.saw_stranger(handle, *at);
                }
                if admitted.skipped_old > 0 || admitted.skipped_backfill > 0 {
                    self.status.update(|s| {
                        s.skipped_old += admitted.skipped_old;
                        s.skipped_backfill += admitted.skipped_backfill;
                    });
                }
                for message in admitted.messages {
                    self.router.dispatch(Job::Message(message));
                }
            }
            Err(err) => {
                let reason = match &err {
                    chatdb::Error::PermissionDenied { .. } => "Full Disk Access".to_string(),
                    chatdb::Error::NotFound { .. } => {
                        "Messages is not set up (no chat.db)".to_string()
                    }
                    other => other.to_string(),
                };
                warn!(cause = %err, "cannot read chat.db; will keep checking");
                self.status.set_state(State::NeedsSetup(reason));
                self.status.update(|s| s.last_error = Some(err.to_string()));
            }
        }
        open
    }
}

/// What one read found.
#[derive(Debug, Default)]
struct Admitted {
    /// Claimed texts from allowed senders, to dispatch.
    messages: Vec<IncomingMessage>,
    /// Senders not on the allowlist, with their texts' dates.
    strangers: Vec<(String, DateTime<Utc>)>,
    /// Texts older than the catch-up window.
    skipped_old: u64,
    /// Rows dated well before the cursor.
    skipped_backfill: u64,
}

/// Blocking: (re)opens the database when needed, reads every row past the cursor, admits
/// allowed senders and claims their texts.
fn read_and_claim(
    path: &Path,
    open: Option<Open>,
    ledger: &Ledger,
    allowlist: &RwLock<Allowlist>,
    catch_up: TimeDelta,
) -> (Option<Open>, Result<Admitted, chatdb::Error>) {
    let identity = file_identity(path);
    let (open, reopened) = match open {
        Some(open) if open.identity == identity => (open, false),
        previous => {
            if previous.is_some() {
                info!("chat.db was replaced; reopening");
            }
            match ChatDb::open(path) {
                Ok(db) => (Open { db, identity }, true),
                Err(err) => return (None, Err(err)),
            }
        }
    };
    let result = read_all(&open.db, reopened, ledger, allowlist, Utc::now(), catch_up);
    (Some(open), result)
}

/// Reads everything past the cursor. `reopened` says the connection is new (first read, or
/// a replaced file), so the cursor's mark is checked against the rows.
fn read_all(
    db: &ChatDb,
    reopened: bool,
    ledger: &Ledger,
    allowlist: &RwLock<Allowlist>,
    now: DateTime<Utc>,
    catch_up: TimeDelta,
) -> Result<Admitted, chatdb::Error> {
    let mut admitted = Admitted::default();
    let newest = db.newest()?;
    let Some(mut cursor) = ledger.cursor() else {
        // First start: begin at the newest row; history is not replayed.
        let seed = Cursor {
            rowid: newest.map_or(0, |p| p.rowid),
            date: newest.map(|p| p.date.min(now)),
            mark: None,
        };
        info!(
            rowid = seed.rowid,
            "first start: beginning at the newest text"
        );
        persist_cursor(ledger, seed);
        return Ok(admitted);
    };
    let rebuilt = match (&newest, &cursor.mark) {
        (None, _) => cursor.rowid > 0,
        (Some(newest), _) if newest.rowid < cursor.rowid => true,
        (Some(_), Some(mark)) if reopened => !lines_up(db, mark, now)?,
        _ => false,
    };
    if rebuilt {
        warn!(
            cursor = cursor.rowid,
            newest = newest.map(|p| p.rowid),
            "chat.db was rebuilt or replaced: its rows do not line up with the cursor; re-reading \
             it by date"
        );
        cursor.rowid = 0;
        cursor.mark = None;
        persist_cursor(ledger, cursor.clone());
    }
    let cut_off = now.checked_sub_signed(catch_up);
    let mut history = 0_u64;
    loop {
        let batch = db.read_after(cursor.rowid, now)?;
        let history_before = cursor.date.map(|d| d - BACKFILL_TOLERANCE);
        let mut next = Cursor {
            rowid: batch.next_after,
            ..cursor.clone()
        };
        let mut claim = Vec::new();
        {
            let allowlist = allowlist.read().expect("allowlist lock");
            for message in batch.messages {
                let seen = message.date.min(now);
                next.date = Some(next.date.map_or(seen, |d| d.max(seen)));
                next.mark = Some(Mark {
                    rowid: message.rowid,
                    guid: message.guid.clone(),
                });
                if history_before.is_some_and(|floor| message.date < floor) {
                    if rebuilt {
                        history += 1;
                    } else {
                        debug!(
                            rowid = message.rowid,
                            "row dated well before the cursor (history synced in late); not a new text"
                        );
                        admitted.skipped_backfill += 1;
                    }
                    continue;
                }
                if cut_off.is_some_and(|cut_off| message.date < cut_off) {
                    info!(rowid = message.rowid, date = %message.date,
                        "text older than the catch-up window; skipped");
                    admitted.skipped_old += 1;
                    continue;
                }
                if allowlist.is_allowed(&message.sender) {
                    claim.push(message);
                } else {
                    info!(sender = ?message.sender, rowid = message.rowid, "ignored a text from a sender not on the allowlist");
                    admitted.strangers.push((message.sender, message.date));
                }
            }
        }
        if !batch.more
            && let Some(newest) = newest
            && newest.rowid == next.rowid
        {
            // The newest row (often a reply sent from this Mac) dates the cursor too.
            let seen = newest.date.min(now);
            next.date = Some(next.date.map_or(seen, |d| d.max(seen)));
        }
        if next != cursor || !claim.is_empty() {
            match ledger.claim(&claim, next.clone()) {
                Ok(fresh) => {
                    debug!(
                        read = claim.len(),
                        fresh = fresh.len(),
                        cursor = next.rowid,
                        "claimed"
                    );
                    admitted.messages.extend(fresh);
                }
                Err(err) => {
                    // Not claimed, so not dispatched: the same rows are read again next time.
                    warn!(cause = %err, "could not record claimed texts");
                    return Ok(admitted);
                }
            }
        }
        cursor = next;
        if !batch.more {
            if rebuilt {
                info!(
                    history,
                    cursor = cursor.rowid,
                    "re-read the database by date; older rows were left alone"
                );
            }
            return Ok(admitted);
        }
    }
}

/// Whether the row under the mark's ROWID is still the text the mark remembers.
fn lines_up(db: &ChatDb, mark: &Mark, now: DateTime<Utc>) -> Result<bool, chatdb::Error> {
    let batch = db.read_after(mark.rowid.saturating_sub(1), now)?;
    Ok(batch
        .messages
        .first()
        .is_some_and(|m| m.rowid == mark.rowid && m.guid == mark.guid))
}

fn persist_cursor(ledger: &Ledger, cursor: Cursor) {
    if let Err(err) = ledger.advance(cursor) {
        warn!(cause = %err, "could not record the chat.db cursor");
    }
}

/// The file's identity (device, inode): a replaced database has a new one.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .map(|t| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (d.as_secs(), u64::from(d.subsec_nanos()))
        })
}

/// The fixture builder shared with the end-to-end tests (declared outside `tests`, so that
/// `#[path]` resolves from this file).
#[cfg(test)]
#[allow(dead_code, clippy::duplicate_mod)] // `chatdb` loads it too, privately.
#[path = "../../tests/util/chatdb.rs"]
mod fixture;

#[cfg(test)]
mod tests {
    use super::fixture::{FixtureDb, Msg, apple_ns};
    use super::*;

    const ME: &str = "+15551234567";
    const DM: &str = "iMessage;-;+15551234567";
    const STRANGER: &str = "+447700900123";

    /// A chat.db, a ledger and an allowlist with [`ME`], each in one temporary folder.
    struct Env {
        dir: tempfile::TempDir,
        fixture: FixtureDb,
        db: ChatDb,
        ledger: Ledger,
        allowlist: RwLock<Allowlist>,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let fixture = FixtureDb::create(&path);
        fixture.chat(DM, ME, false);
        let db = ChatDb::open(&path).unwrap();
        let (ledger, _) = Ledger::open(dir.path().join("ledger.json")).unwrap();
        Env {
            dir,
            fixture,
            db,
            ledger,
            allowlist: RwLock::new(Allowlist::parse(&[ME]).unwrap()),
        }
    }

    impl Env {
        fn read(&self, reopened: bool) -> Admitted {
            self.read_at(reopened, Utc::now(), TimeDelta::hours(24))
        }

        fn read_at(&self, reopened: bool, now: DateTime<Utc>, catch_up: TimeDelta) -> Admitted {
            read_all(
                &self.db,
                reopened,
                &self.ledger,
                &self.allowlist,
                now,
                catch_up,
            )
            .unwrap()
        }

        /// A text from [`ME`] dated `date`.
        fn text(&self, text: &str, date: DateTime<Utc>) -> i64 {
            let msg = Msg::new(DM, ME).text(text).date(apple_ns(date));
            self.fixture.insert(&msg).rowid
        }

        /// Finishes everything claimed, as the conversation would.
        fn finish_all(&self) {
            for m in self.ledger.unfinished() {
                self.ledger.finish(&m.guid).unwrap();
            }
        }
    }

    fn texts(admitted: &Admitted) -> Vec<&str> {
        admitted.messages.iter().map(|m| m.text.as_str()).collect()
    }

    fn ago(minutes: i64) -> DateTime<Utc> {
        Utc::now() - TimeDelta::minutes(minutes)
    }

    #[test]
    fn the_first_start_begins_at_the_newest_row_then_reads_what_comes() {
        let env = env();
        env.text("history", ago(60));
        let last = env.text("more history", ago(5));
        let first = env.read(true);
        assert!(first.messages.is_empty());
        let cursor = env.ledger.cursor().unwrap();
        assert_eq!(cursor.rowid, last);
        assert!(cursor.date.unwrap() > ago(6));

        env.text("new", Utc::now());
        assert_eq!(texts(&env.read(false)), ["new"]);
        let mark = env.ledger.cursor().unwrap().mark.unwrap();
        assert_eq!(mark.rowid, last + 1);
    }

    /// Issue 4: texts that came while the bridge was down are handled within the catch-up
    /// window; older ones are skipped and counted.
    #[test]
    fn texts_from_the_downtime_are_handled_within_the_catch_up_window() {
        let env = env();
        env.text("the last text before the stop", ago(30 * 60));
        env.read(true);
        let cases = [
            (29 * 60, "29 h old", false),
            (24 * 60 + 1, "just over a day", false),
            (24 * 60 - 1, "just under a day", true),
            (3 * 60, "👋🏽 3 h old", true),
            (0, "שלום, just now", true),
        ];
        for (minutes, text, _) in cases {
            env.text(text, ago(minutes));
        }
        let admitted = env.read(true);
        let want: Vec<&str> = cases.iter().filter(|c| c.2).map(|c| c.1).collect();
        assert_eq!(texts(&admitted), want);
        assert_eq!(admitted.skipped_old, 2);
        assert_eq!(admitted.skipped_backfill, 0);
        // Skipped texts are passed, not read again.
        let again = env.read(false);
        assert!(again.messages.is_empty() && again.skipped_old == 0);

        // A window of zero hours handles only what is not older than now.
        let env2 = self::env();
        env2.text("seed", ago(10));
        env2.read(true);
        env2.text("a minute old", ago(1));
        let now = Utc::now();
        let admitted = env2.read_at(false, now, TimeDelta::zero());
        assert!(admitted.messages.is_empty());
        assert_eq!(admitted.skipped_old, 1);
    }

    /// Issue 4: rows with new ROWIDs but dates well before the cursor (iCloud backfill) are
    /// not new texts; a text a few minutes "early" (clock skew) still is.
    #[test]
    fn backfilled_rows_with_old_dates_are_not_new_texts() {
        let env = env();
        env.text("seed", Utc::now());
        env.read(true);
        env.fixture.conn().execute_batch("BEGIN").unwrap();
        for i in 0..600 {
            env.text(&format!("old {i}"), ago(120 + i));
        }
        env.fixture.conn().execute_batch("COMMIT").unwrap();
        env.text("sent from a phone whose clock is 5 minutes slow", ago(5));
        env.text("brand new", Utc::now());
        let admitted = env.read(false);
        assert_eq!(
            texts(&admitted),
            [
                "sent from a phone whose clock is 5 minutes slow",
                "brand new"
            ]
        );
        assert_eq!(admitted.skipped_backfill, 600);
        assert_eq!(admitted.skipped_old, 0);
    }

    /// Issue 4: the cursor's date never runs ahead of the clock, so one row dated in the
    /// future cannot make every later text look like history.
    #[test]
    fn a_row_dated_in_the_future_does_not_push_the_cursor_date_ahead() {
        let env = env();
        env.text("seed", Utc::now());
        env.read(true);
        env.text(
            "from a clock a year ahead",
            Utc::now() + TimeDelta::days(365),
        );
        assert_eq!(texts(&env.read(false)), ["from a clock a year ahead"]);
        assert!(env.ledger.cursor().unwrap().date.unwrap() <= Utc::now());
        env.text("next", Utc::now());
        assert_eq!(texts(&env.read(false)), ["next"]);
    }

    /// Replaces chat.db by a new file built by `build` (or by `source`, when given),
    /// renamed over it, as Messages does when it rebuilds its database; then reopens the
    /// writer and the reader on it. The old writer checkpoints and closes first: its WAL
    /// would otherwise be taken for the new file's.
    fn replace_db(env: &mut Env, build: impl FnOnce(&FixtureDb)) {
        let path = env.fixture.path().to_path_buf();
        let new_path = env.dir.path().join("rebuilt.db");
        let rebuilt = FixtureDb::create(&new_path);
        rebuilt.chat(DM, ME, false);
        build(&rebuilt);
        drop(rebuilt);
        close_writer(env);
        std::fs::rename(&new_path, &path).unwrap();
        reopen(env, &path);
    }

    fn close_writer(env: &mut Env) {
        let path = env.fixture.path().to_path_buf();
        env.fixture
            .conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let placeholder = env.dir.path().join("placeholder.db");
        drop(std::mem::replace(
            &mut env.fixture,
            FixtureDb::create(&placeholder),
        ));
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    fn reopen(env: &mut Env, path: &Path) {
        env.fixture = FixtureDb::open(path);
        env.db = ChatDb::open(path).unwrap();
    }

    /// Issue 4: a database swapped for one with lower ROWIDs is re-read by date: texts
    /// dated after the cursor are handled, history and texts already handled are not.
    #[test]
    fn a_database_with_lower_rowids_is_re_read_by_date() {
        let mut env = env();
        env.text("seed", ago(60));
        env.read(true);
        for i in 0..10 {
            env.text(&format!("before {i}"), ago(50 - i));
        }
        let handled = env.read(false);
        assert_eq!(handled.messages.len(), 10);
        env.finish_all();
        let cursor = env.ledger.cursor().unwrap();
        assert_eq!(cursor.rowid, 11);

        let again = handled.messages[9].clone();
        replace_db(&mut env, |db| {
            db.insert(&Msg::new(DM, ME).text("history").date(apple_ns(ago(600))));
            db.insert(&Msg {
                guid: Some(again.guid.clone()),
                ..Msg::new(DM, ME)
                    .text(&again.text)
                    .date(apple_ns(again.date))
            });
            db.insert(&Msg::new(DM, ME).text("new after the swap"));
        });
        let admitted = env.read(true);
        assert_eq!(texts(&admitted), ["new after the swap"]);
        assert_eq!(
            admitted.skipped_backfill, 0,
            "history met while re-reading is not backfill"
        );
        assert_eq!(env.ledger.cursor().unwrap().rowid, 3);
        // Later texts continue from the new cursor.
        env.text("later", Utc::now());
        assert_eq!(texts(&env.read(false)), ["later"]);
    }

    /// Issue 4: a replaced file whose rows do not line up with the cursor's mark (here:
    /// the same texts under higher ROWIDs) is re-read by date; no text is handled twice.
    #[test]
    fn a_replaced_file_whose_rows_do_not_line_up_is_re_read_by_date() {
        let mut env = env();
        env.text("seed", ago(30));
        env.read(true);
        env.text("renew passport", ago(20));
        let first = env.read(false);
        env.finish_all();
        let known = first.messages[0].clone();
        replace_db(&mut env, |db| {
            for _ in 0..5 {
                db.insert(&Msg {
                    is_from_me: true,
                    ..Msg::new(DM, ME).text("a reply").date(apple_ns(ago(25)))
                });
            }
            db.insert(&Msg {
                guid: Some(known.guid.clone()),
                ..Msg::new(DM, ME)
                    .text("renew passport")
                    .date(apple_ns(known.date))
            });
            db.insert(&Msg::new(DM, ME).text("buy stamps"));
        });
        assert_eq!(texts(&env.read(true)), ["buy stamps"]);
    }

    /// A replaced file with the same rows (Messages rewriting its file) continues from the
    /// cursor: nothing before it is read again (a stranger is not reported twice).
    #[test]
    fn a_replaced_file_whose_rows_line_up_continues_from_the_cursor() {
        let mut env = env();
        env.text("seed", ago(30));
        env.read(true);
        env.fixture
            .insert(&Msg::new("iMessage;-;+447700900123", STRANGER).text("hello?"));
        env.text("mine", Utc::now());
        let first = env.read(false);
        assert_eq!(texts(&first), ["mine"]);
        assert_eq!(first.strangers.len(), 1);
        let copy = env.dir.path().join("copy.db");
        env.fixture
            .conn()
            .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
        let path = env.fixture.path().to_path_buf();
        close_writer(&mut env);
        std::fs::rename(&copy, &path).unwrap();
        reopen(&mut env, &path);
        let after = env.read(true);
        assert!(
            after.messages.is_empty() && after.strangers.is_empty(),
            "{after:?}"
        );
        assert_eq!(env.ledger.cursor().unwrap().rowid, 3);
    }

    #[test]
    fn an_emptied_database_resets_the_rowid_and_keeps_the_date() {
        let mut env = env();
        env.text("seed", ago(3));
        env.read(true);
        let date = env.ledger.cursor().unwrap().date;
        replace_db(&mut env, |_| {});
        assert!(env.read(true).messages.is_empty());
        let cursor = env.ledger.cursor().unwrap();
        assert_eq!((cursor.rowid, cursor.date), (0, date));
        env.text("first in the new database", Utc::now());
        assert_eq!(texts(&env.read(false)), ["first in the new database"]);
    }

    /// Issue 4: the bridge never answers its own messages: rows sent from this Mac are
    /// passed, whoever the handle is.
    #[test]
    fn own_messages_are_never_admitted() {
        let env = env();
        env.text("seed", ago(1));
        env.read(true);
        for text in ["Saved to Tasks: x", "Which day?", ""] {
            env.fixture.insert(&Msg {
                is_from_me: true,
                ..Msg::new(DM, ME).text(text)
            });
        }
        let admitted = env.read(false);
        assert!(admitted.messages.is_empty());
        assert_eq!(
            env.ledger.cursor().unwrap().rowid,
            4,
            "passed, not stuck on"
        );
    }
}
