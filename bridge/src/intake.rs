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

use crate::allowlist::Admission;
use crate::chatdb::{self, ChatDb, IncomingMessage};
use crate::echoes::{Copy, Echoes};
use crate::ledger::{Cursor, Ledger, Mark};
use crate::router::{Handler, Job, Router};
use crate::status::{SeenGroup, State, StatusBoard};
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
    pub admission: Arc<RwLock<Admission>>,
    /// The replies sent lately, whose copies in chat.db are not texts.
    pub echoes: Arc<Echoes>,
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
        let admission = Arc::clone(&self.admission);
        let echoes = Arc::clone(&self.echoes);
        let catch_up = TimeDelta::from_std(self.catch_up).unwrap_or(TimeDelta::MAX);
        let result = tokio::task::spawn_blocking(move || {
            let gate = Gate {
                ledger: &ledger,
                admission: &admission,
                echoes: &echoes,
            };
            read_and_claim(&path, open, &gate, catch_up)
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
                for group in admitted.groups {
                    self.status.saw_group(group);
                }
                self.status.update(|s| {
                    s.skipped_old += admitted.skipped_old;
                    s.skipped_backfill += admitted.skipped_backfill;
                    s.echoes_ignored += admitted.echoes;
                    s.sms_ignored += admitted.sms_ignored;
                });
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
                // One change, so no snapshot shows the state without its error.
                self.status.update(|s| {
                    if s.state != State::Stopping {
                        s.state = State::NeedsSetup(reason);
                    }
                    s.last_error = Some(err.to_string());
                });
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
    /// Group chats that are not allowed.
    groups: Vec<SeenGroup>,
    /// Texts older than the catch-up window.
    skipped_old: u64,
    /// Rows dated well before the cursor.
    skipped_backfill: u64,
    /// Messages' copies of our own replies.
    echoes: u64,
    /// SMS/RCS texts while only iMessage counts.
    sms_ignored: u64,
}

/// What becomes of one row read past the cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Claimed and handed to the router.
    Admit,
    /// Messages' "received" copy of one of our replies (a chat with yourself).
    Echo,
    /// The sent row of one of our replies, in a chat with yourself.
    OwnReply,
    /// SMS or RCS while only iMessage counts.
    NotIMessage,
    /// A group chat that is not allowed.
    Group,
    /// A sender not on the allowlist.
    Stranger,
}

/// Decides one row. A row matching a reply sent in the last ten minutes is that reply's
/// copy, whoever sent it; everything else needs iMessage (unless SMS is allowed), an allowed
/// group when it is a group, and an allowed sender.
fn verdict(
    message: &IncomingMessage,
    admission: &Admission,
    echoes: &Echoes,
    now: DateTime<Utc>,
) -> Verdict {
    let origin = &message.origin;
    let copy = if origin.from_me {
        Copy::Sent
    } else {
        Copy::Received
    };
    if echoes.take(&message.chat.guid, &message.text, copy, now) {
        return if origin.from_me {
            Verdict::OwnReply
        } else {
            Verdict::Echo
        };
    }
    if !origin.service.is_imessage() && !admission.allow_sms {
        return Verdict::NotIMessage;
    }
    if message.chat.is_group && !admission.groups.contains(&message.chat.guid) {
        return Verdict::Group;
    }
    if !admission.senders.is_allowed(&message.sender) {
        return Verdict::Stranger;
    }
    Verdict::Admit
}

/// What a read needs besides the database.
struct Gate<'a> {
    ledger: &'a Ledger,
    admission: &'a RwLock<Admission>,
    echoes: &'a Echoes,
}

/// Blocking: (re)opens the database when needed, reads every row past the cursor, admits
/// allowed senders and claims their texts.
fn read_and_claim(
    path: &Path,
    open: Option<Open>,
    gate: &Gate<'_>,
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
    let result = read_all(&open.db, reopened, gate, Utc::now(), catch_up);
    (Some(open), result)
}

/// Where reading starts: `None` on the first start (the cursor is seeded at `newest`,
/// history is not replayed); else the cursor, reset when the database was rebuilt.
fn start(
    db: &ChatDb,
    newest: Option<chatdb::Position>,
    reopened: bool,
    ledger: &Ledger,
    now: DateTime<Utc>,
) -> Result<Option<(Cursor, bool)>, chatdb::Error> {
    let Some(mut cursor) = ledger.cursor() else {
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
        return Ok(None);
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
    Ok(Some((cursor, rebuilt)))
}

/// Reads everything past the cursor. `reopened` says the connection is new (first read, or
/// a replaced file), so the cursor's mark is checked against the rows. When the newest ROWID
/// has not moved past the cursor (the idle case: a poll or a write elsewhere in chat.db),
/// only that one cached query runs.
fn read_all(
    db: &ChatDb,
    reopened: bool,
    gate: &Gate<'_>,
    now: DateTime<Utc>,
    catch_up: TimeDelta,
) -> Result<Admitted, chatdb::Error> {
    let mut admitted = Admitted::default();
    let newest = db.newest()?;
    let Some((mut cursor, rebuilt)) = start(db, newest, reopened, gate.ledger, now)? else {
        return Ok(admitted);
    };
    if !rebuilt && newest.is_none_or(|n| n.rowid <= cursor.rowid) {
        return Ok(admitted);
    }
    let mut pass = Pass {
        db,
        gate,
        now,
        cut_off: now.checked_sub_signed(catch_up),
        rebuilt,
        newest,
        history: 0,
    };
    loop {
        let batch = db.read_after(cursor.rowid, now)?;
        let more = batch.more;
        let (next, claim) = pass.sort_batch(batch, &cursor, &mut admitted);
        if (next != cursor || !claim.is_empty())
            && !claim_texts(gate.ledger, claim, &next, &mut admitted)
        {
            // Not claimed, so not dispatched: the same rows are read again next time.
            return Ok(admitted);
        }
        cursor = next;
        if !more {
            if rebuilt {
                info!(
                    history = pass.history,
                    cursor = cursor.rowid,
                    "re-read the database by date; older rows were left alone"
                );
            }
            return Ok(admitted);
        }
    }
}

/// One read of the rows past the cursor.
struct Pass<'a> {
    db: &'a ChatDb,
    gate: &'a Gate<'a>,
    now: DateTime<Utc>,
    /// Texts dated before this are older than the catch-up window.
    cut_off: Option<DateTime<Utc>>,
    /// The database is being re-read by date.
    rebuilt: bool,
    /// The newest row when the read began.
    newest: Option<chatdb::Position>,
    /// Rows left alone as history while re-reading a rebuilt database.
    history: u64,
}

impl Pass<'_> {
    /// Sorts one batch: returns the cursor past it and the texts to claim.
    fn sort_batch(
        &mut self,
        batch: chatdb::Batch,
        cursor: &Cursor,
        admitted: &mut Admitted,
    ) -> (Cursor, Vec<IncomingMessage>) {
        let now = self.now;
        let mut next = Cursor {
            rowid: batch.next_after,
            ..cursor.clone()
        };
        let history_before = cursor.date.map(|d| d - BACKFILL_TOLERANCE);
        let mut claim = Vec::new();
        for message in batch.messages {
            let seen = message.date.min(now);
            next.date = Some(next.date.map_or(seen, |d| d.max(seen)));
            next.mark = Some(Mark {
                rowid: message.rowid,
                guid: message.guid.clone(),
            });
            if history_before.is_some_and(|floor| message.date < floor) {
                if self.rebuilt {
                    self.history += 1;
                } else {
                    debug!(
                        rowid = message.rowid,
                        "row dated well before the cursor (history synced in late); not a new text"
                    );
                    admitted.skipped_backfill += 1;
                }
                continue;
            }
            if self.cut_off.is_some_and(|cut_off| message.date < cut_off) {
                info!(rowid = message.rowid, date = %message.date,
                    "text older than the catch-up window; skipped");
                admitted.skipped_old += 1;
                continue;
            }
            sort(self.db, message, self.gate, now, &mut claim, admitted);
        }
        if !batch.more
            && let Some(newest) = self.newest
            && newest.rowid == next.rowid
        {
            // The newest row (often a reply sent from this Mac) dates the cursor too.
            let seen = newest.date.min(now);
            next.date = Some(next.date.map_or(seen, |d| d.max(seen)));
        }
        (next, claim)
    }
}

/// Puts one row where its [`verdict`] says.
fn sort(
    db: &ChatDb,
    message: IncomingMessage,
    gate: &Gate<'_>,
    now: DateTime<Utc>,
    claim: &mut Vec<IncomingMessage>,
    admitted: &mut Admitted,
) {
    let admission = crate::mutex::read(gate.admission);
    let rowid = message.rowid;
    match verdict(&message, &admission, gate.echoes, now) {
        Verdict::Admit => claim.push(message),
        Verdict::Echo => {
            info!(rowid, chat = ?message.chat.guid, "Messages' copy of our own reply; skipped");
            admitted.echoes += 1;
        }
        Verdict::OwnReply => debug!(rowid, "our own reply, as sent; skipped"),
        Verdict::NotIMessage => {
            info!(rowid, service = ?message.origin.service, "ignored a text that did not come by iMessage (SMS is not allowed)");
            admitted.sms_ignored += 1;
        }
        Verdict::Group => {
            info!(rowid, chat = ?message.chat.guid, "ignored a text in a group chat that is not allowed");
            if !admitted.groups.iter().any(|g| g.guid == message.chat.guid) {
                let members = db.members(&message.chat.guid).unwrap_or_default();
                admitted.groups.push(SeenGroup {
                    guid: message.chat.guid.clone(),
                    name: message.origin.chat_name.clone(),
                    members,
                    last_seen: message.date,
                });
            }
        }
        Verdict::Stranger => {
            info!(sender = ?message.sender, rowid, "ignored a text from a sender not on the allowlist");
            admitted.strangers.push((message.sender, message.date));
        }
    }
}

/// Claims `claim` and moves the cursor to `next` in one ledger write; `false` when that
/// could not be saved.
fn claim_texts(
    ledger: &Ledger,
    claim: Vec<IncomingMessage>,
    next: &Cursor,
    admitted: &mut Admitted,
) -> bool {
    if claim.is_empty() {
        // Nothing to claim: the cursor alone, a step that needs no fsync of its own.
        return match ledger.blocking_advance(next.clone()) {
            Ok(()) => true,
            Err(err) => {
                warn!(cause = %err, "could not record the chat.db cursor");
                false
            }
        };
    }
    match ledger.blocking_claim(&claim, next.clone()) {
        Ok(fresh) => {
            debug!(
                read = claim.len(),
                fresh = fresh.len(),
                cursor = next.rowid,
                "claimed"
            );
            admitted.messages.extend(fresh);
            true
        }
        Err(err) => {
            warn!(cause = %err, "could not record claimed texts");
            false
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
    if let Err(err) = ledger.blocking_advance(cursor) {
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

/// The fixture builder shared with the end-to-end tests.
#[cfg(test)]
use util::chatdb as fixture;

#[cfg(test)]
mod tests {
    use super::fixture::{FixtureDb, Msg, apple_ns, blob};
    use super::*;
    use crate::allowlist::Allowlist;

    const ME: &str = "+15551234567";
    const DM: &str = "iMessage;-;+15551234567";
    const STRANGER: &str = "+447700900123";

    /// A chat.db, a ledger and an allowlist with [`ME`], each in one temporary folder.
    struct Env {
        dir: tempfile::TempDir,
        fixture: FixtureDb,
        db: ChatDb,
        ledger: Ledger,
        admission: RwLock<Admission>,
        echoes: Echoes,
    }

    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let fixture = FixtureDb::create(&path);
        fixture.chat(DM, ME, false);
        let db = ChatDb::open(&path).unwrap();
        let (state, _) = crate::state::StateDb::open(dir.path().join(crate::state::FILE)).unwrap();
        let ledger = Ledger::open(Arc::new(state)).unwrap();
        Env {
            dir,
            fixture,
            db,
            ledger,
            admission: RwLock::new(Admission::senders(Allowlist::parse(&[ME]).unwrap())),
            echoes: Echoes::in_memory(),
        }
    }

    impl Env {
        fn read(&self, reopened: bool) -> Admitted {
            self.read_at(reopened, Utc::now(), TimeDelta::hours(24))
        }

        fn read_at(&self, reopened: bool, now: DateTime<Utc>, catch_up: TimeDelta) -> Admitted {
            let gate = Gate {
                ledger: &self.ledger,
                admission: &self.admission,
                echoes: &self.echoes,
            };
            read_all(&self.db, reopened, &gate, now, catch_up).unwrap()
        }

        /// A text from [`ME`] dated `date`.
        fn text(&self, text: &str, date: DateTime<Utc>) -> i64 {
            let msg = Msg::new(DM, ME).text(text).date(apple_ns(date));
            self.fixture.insert(&msg).rowid
        }

        /// Finishes everything claimed, as the conversation would.
        fn finish_all(&self) {
            for m in self.ledger.unfinished().unwrap() {
                self.ledger.blocking_finish(&m.guid).unwrap();
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

    const OWN: &str = "me@icloud.com";
    const SELF_CHAT: &str = "iMessage;-;me@icloud.com";

    /// An env whose allowlist also has the account's own address, with a self-chat.
    fn self_env() -> Env {
        let env = env();
        *env.admission.write().unwrap() = Admission::senders(Allowlist::parse(&[ME, OWN]).unwrap());
        env.fixture.chat(SELF_CHAT, OWN, false);
        env.text("seed", ago(1));
        env.read(true);
        env
    }

    /// Issue 15: in a chat with yourself Messages records each reply as sent and again as
    /// received from your own address, in `attributedBody` only, quotes curled: neither copy
    /// is a text; the person's own texts still are, also when recorded only as sent.
    #[test]
    fn a_self_chat_hears_the_person_and_never_its_own_replies() {
        let env = self_env();
        let reply = "Saved to Tasks: \"call Sam\" \u{1F44D}\u{FE0F}";
        env.echoes.remember(SELF_CHAT, reply, Utc::now()).unwrap();
        let from_me = format!("E:{OWN}");
        let fixture = &env.fixture;
        fixture.insert(&Msg::new(SELF_CHAT, OWN).text(reply).sent_by(&from_me));
        let curled = "Saved to Tasks: \u{201C}call Sam\u{201D} \u{1F44D}";
        fixture.insert(&Msg::new(SELF_CHAT, OWN).body(super::fixture::typedstream(curled)));
        fixture.insert(&Msg::new(SELF_CHAT, OWN).text("idea: a bike shed"));
        fixture.insert(
            &Msg::new(SELF_CHAT, OWN)
                .text("typed on this Mac")
                .sent_by(&from_me),
        );
        let admitted = env.read(false);
        assert_eq!(texts(&admitted), ["idea: a bike shed", "typed on this Mac"]);
        assert_eq!(admitted.echoes, 1);
        assert!(admitted.messages.iter().all(|m| m.origin.self_chat));
        assert_eq!(
            admitted.messages[1].sender, OWN,
            "a sent row's author is the account"
        );
        // The same words again later are the person's: a reply has one copy of each kind.
        fixture.insert(&Msg::new(SELF_CHAT, OWN).text(reply));
        assert_eq!(texts(&env.read(false)), [reply]);
    }

    /// Issue 15: the account's own addresses come from `account` on rows it sent; a row sent
    /// in a chat with someone else is never a text.
    #[test]
    fn own_addresses_come_from_sent_rows_and_other_chats_stay_closed() {
        let env = self_env();
        env.fixture.insert(
            &Msg::new(DM, ME)
                .text("sent to Sam")
                .sent_by("p:+15550009999"),
        );
        let admitted = env.read(false);
        assert!(admitted.messages.is_empty());
        assert!(env.db.own().contains("+15550009999"));
        assert!(!env.db.own().contains(ME));
    }

    /// Issue 15: iMessage only by default; SMS and RCS when allowed.
    #[test]
    fn sms_counts_only_when_allowed() {
        let env = env();
        env.text("seed", ago(1));
        env.read(true);
        env.fixture.insert(
            &Msg::new("SMS;-;+15551234567", ME)
                .text("by sms")
                .service("SMS"),
        );
        env.fixture.insert(
            &Msg::new("RCS;-;+15551234567", ME)
                .text("by rcs")
                .service("RCS"),
        );
        let ignored = env.read(false);
        assert!(ignored.messages.is_empty());
        assert_eq!(ignored.sms_ignored, 2);
        env.admission.write().unwrap().allow_sms = true;
        env.fixture.insert(
            &Msg::new("SMS;-;+15551234567", ME)
                .text("by sms again")
                .service("SMS"),
        );
        assert_eq!(texts(&env.read(false)), ["by sms again"]);
    }

    /// Issue 15: a group is ignored (and listed with its name and members) unless allowed
    /// by guid; an allowed group still admits only allowed senders.
    #[test]
    fn groups_need_allowing_and_still_admit_only_allowed_senders() {
        let env = env();
        env.text("seed", ago(1));
        env.read(true);
        let group = "iMessage;+;chat4242";
        env.fixture.group(group, "Book club", &[ME, STRANGER]);
        env.fixture
            .insert(&Msg::new(group, ME).text("from me in the group"));
        env.fixture
            .insert(&Msg::new(group, STRANGER).text("from a stranger"));
        let ignored = env.read(false);
        assert!(ignored.messages.is_empty());
        assert_eq!(ignored.groups.len(), 1);
        assert_eq!(ignored.groups[0].name.as_deref(), Some("Book club"));
        assert_eq!(ignored.groups[0].members, [ME, STRANGER]);
        env.admission
            .write()
            .unwrap()
            .groups
            .insert(group.to_string());
        env.fixture
            .insert(&Msg::new(group, STRANGER).text("stranger again"));
        env.fixture.insert(&Msg::new(group, ME).text("me again"));
        let admitted = env.read(false);
        assert_eq!(texts(&admitted), ["me again"]);
        assert_eq!(admitted.strangers.len(), 1);
    }

    /// Issue 15: a Kelvin sign in a handle is not a K: that sender stays a stranger.
    #[test]
    fn a_kelvin_sign_sender_stays_a_stranger() {
        let env = env();
        *env.admission.write().unwrap() =
            Admission::senders(Allowlist::parse(&["kate@icloud.com"]).unwrap());
        env.text("seed", ago(1));
        env.read(true);
        let kelvin = "\u{212A}ate@icloud.com";
        env.fixture
            .insert(&Msg::new("iMessage;-;\u{212A}ate@icloud.com", kelvin).text("hi, it's Kate"));
        env.fixture
            .insert(&Msg::new("iMessage;-;kate@icloud.com", "kate@icloud.com").text("really Kate"));
        let admitted = env.read(false);
        assert_eq!(texts(&admitted), ["really Kate"]);
        assert_eq!(admitted.strangers[0].0, kelvin);
    }

    /// Issue 15: the body of a blob whose declared length overruns its string (ExtraData)
    /// is read, not skipped.
    #[test]
    fn the_extra_data_blob_is_a_text() {
        let env = env();
        env.text("seed", ago(1));
        env.read(true);
        env.fixture
            .insert(&Msg::new(DM, ME).body(blob("ExtraData")));
        assert_eq!(texts(&env.read(false)), ["This is parsing  "]);
    }
}
