//! What the bridge is doing, for the tray's status line, `status` and `doctor`.
//!
//! Invariant: one [`StatusBoard`] per running bridge; every change is published to
//! subscribers at once. `<data dir>/status.json` (for the CLI) is written by one writer
//! thread of its own, never on the runtime's workers: it writes the latest snapshot whenever
//! it is behind, so a burst of changes costs a few writes, not one each; each write is
//! atomic but not fsynced ([`crate::persist::replace`]: the file is derived from memory and
//! rewritten at every start), and [`StatusBoard::flush`] waits until the file shows every
//! change made before it.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::mutex::lock;
use crate::persist::MovedAside;

/// The bridge's overall state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum State {
    /// Opening its files.
    Starting,
    /// Watching chat.db and handling texts.
    Running,
    /// Paused by the user: texts wait in chat.db and are handled on resume.
    Paused,
    /// Something must be fixed before texts can be handled; the reason says what.
    NeedsSetup(String),
    /// Finishing in-flight work before exit.
    Stopping,
}

/// A stranger who texted the account (never answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stranger {
    /// Their handle as found in chat.db.
    pub handle: String,
    /// When they last texted.
    pub last_seen: DateTime<Utc>,
}

/// The soonest pending reminder, for the tray and the Sessions window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextReminder {
    /// The note, vault-relative.
    pub path: String,
    /// The note's title.
    pub title: String,
    /// When, RFC 3339 in the Mac's offset.
    pub due: String,
}

impl NextReminder {
    /// "Next reminder 17:00" when it is due today (local time `today`), else "Next reminder
    /// Thu 3 Dec 17:00".
    pub fn line(&self, today: chrono::NaiveDate) -> String {
        match DateTime::parse_from_rfc3339(&self.due) {
            Ok(due) if due.date_naive() == today => {
                format!("Next reminder {}", due.format("%H:%M"))
            }
            Ok(due) => format!("Next reminder {}", due.format("%a %-d %b %H:%M")),
            Err(_) => format!("Next reminder: {}", self.title),
        }
    }
}

/// A group chat that texted the account but is not allowed (never answered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenGroup {
    /// `chat.guid`: what "Allow this group" adds to the allowed groups.
    pub guid: String,
    /// The group's name in Messages, if it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// Its members' handles.
    #[serde(default)]
    pub members: Vec<String>,
    /// When it last texted.
    pub last_seen: DateTime<Utc>,
}

/// A state file set aside at start, as the status lists it; written to `status.json` as
/// its sentence ("ledger file did not parse (…); kept as …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetAside {
    /// A state file of the bridge.
    File(MovedAside),
    /// A sentence from elsewhere (the settings file's problem, or a `status.json` read back).
    Other(String),
}

impl std::fmt::Display for SetAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetAside::File(moved) => moved.fmt(f),
            SetAside::Other(sentence) => f.write_str(sentence),
        }
    }
}

/// Writes a problem as its sentence; reads any sentence back as `Other`, so a
/// `status.json` keeps the shape the UI and the CLI read (a string).
macro_rules! sentence_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map($ty::Other)
            }
        }
    };
}

sentence_serde!(SetAside);
sentence_serde!(VaultProblem);
sentence_serde!(ApiProblem);

/// Why the vault cannot be written, while it cannot (texts wait meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultProblem {
    /// The write check failed; `reason` is what the vault said.
    NotWritable {
        /// Why, from the vault check.
        reason: String,
    },
    /// A sentence read back from a `status.json`.
    Other(String),
}

impl std::fmt::Display for VaultProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VaultProblem::NotWritable { reason } => {
                write!(f, "cannot write to the vault: {reason}")
            }
            VaultProblem::Other(sentence) => f.write_str(sentence),
        }
    }
}

/// Why the API refuses the bridge, while it does (texts go to Inbox meanwhile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiProblem {
    /// The API rejected the key (401/403); `detail` is the API's error, which starts
    /// "API key rejected (HTTP 401)".
    KeyRejected {
        /// The error as the agent reported it.
        detail: String,
    },
    /// A sentence read back from a `status.json`.
    Other(String),
}

impl std::fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiProblem::KeyRejected { detail } => f.write_str(detail),
            ApiProblem::Other(sentence) => f.write_str(sentence),
        }
    }
}

/// A snapshot of the bridge's status.
///
/// Fields added after the first release carry `#[serde(default)]`, so an older
/// `status.json` still reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The overall state.
    #[serde(flatten)]
    pub state: State,
    /// Active sessions.
    pub sessions: usize,
    /// Texts handled since start.
    pub handled: u64,
    /// Texts filed to Inbox because the agent failed.
    pub failed: u64,
    /// The last error worth showing, if any.
    pub last_error: Option<String>,
    /// Recent strangers, newest first (at most 20).
    pub strangers: Vec<Stranger>,
    /// State files that did not parse at start and were moved aside (what, where, why).
    #[serde(default)]
    pub moved_aside: Vec<SetAside>,
    /// Why the vault cannot be written, while it cannot: texts wait meanwhile.
    #[serde(default)]
    pub vault_problem: Option<VaultProblem>,
    /// Vault folders (`Projects`, `_system/logs`) that are links leaving the vault: nothing
    /// is written there or listed from there until they are real folders inside it.
    #[serde(default)]
    pub vault_folders_outside: Vec<String>,
    /// Texts claimed and waiting for the vault.
    #[serde(default)]
    pub waiting: usize,
    /// Texts claimed and waiting for their attachments' files (still downloading) or a voice
    /// message's transcript, at most the attachment wait each.
    #[serde(default)]
    pub awaiting_attachments: usize,
    /// Set while the API rejects the key (401/403); texts go to Inbox unprocessed meanwhile.
    #[serde(default)]
    pub api_problem: Option<ApiProblem>,
    /// Texts that arrived while the bridge was down but are older than the catch-up window,
    /// so were not handled (since start).
    #[serde(default)]
    pub skipped_old: u64,
    /// Rows with new ROWIDs but dates well before the cursor (history synced from iCloud),
    /// not treated as new texts (since start).
    #[serde(default)]
    pub skipped_backfill: u64,
    /// Texts not handled because their sender exceeded the rate limit (since start).
    #[serde(default)]
    pub rate_limited: u64,
    /// Texts filed to Inbox unprocessed because the daily token budget was used up
    /// (since start).
    #[serde(default)]
    pub over_budget: u64,
    /// Tokens counted against today's budget.
    #[serde(default)]
    pub tokens_today: u64,
    /// Replies whose delivery is unknown (the sender timed out or the bridge died while
    /// sending); they are never sent again (since start).
    #[serde(default)]
    pub unconfirmed_sends: u64,
    /// Texts captured as a note (since start).
    #[serde(default)]
    pub captured: u64,
    /// Texts answered with a question, the session waiting for the answer (since start).
    #[serde(default)]
    pub asked: u64,
    /// Texts that were questions about the vault, answered (since start).
    #[serde(default)]
    pub answered: u64,
    /// Messages' own copies of the bridge's replies (a chat with yourself), skipped (since
    /// start).
    #[serde(default)]
    pub echoes_ignored: u64,
    /// SMS/RCS texts ignored because only iMessage is allowed (since start).
    #[serde(default)]
    pub sms_ignored: u64,
    /// Texts longer than the model is given, cut for it and saved whole to Inbox (since
    /// start).
    #[serde(default)]
    pub oversized: u64,
    /// Model requests made for texts whose agent run ended (since start); with
    /// [`Status::model_runs`], the requests per text.
    #[serde(default)]
    pub model_requests: u64,
    /// Texts whose agent run ended, so whose requests are in [`Status::model_requests`]
    /// (since start).
    #[serde(default)]
    pub model_runs: u64,
    /// Model requests of the last text whose agent run ended.
    #[serde(default)]
    pub last_text_requests: Option<u32>,
    /// Recent group chats that are not allowed, newest first (at most 20).
    #[serde(default)]
    pub groups: Vec<SeenGroup>,
    /// The soonest pending reminder, if any.
    #[serde(default)]
    pub next_reminder: Option<NextReminder>,
    /// How often the pending reminders changed (set, edited, sent, cancelled) since start:
    /// the Sessions window reloads its Upcoming list when it moves.
    #[serde(default)]
    pub reminder_changes: u64,
    /// When this snapshot was taken.
    pub updated: DateTime<Utc>,
}

impl Status {
    /// The status of a bridge opening its files.
    fn starting() -> Status {
        Status {
            state: State::Starting,
            sessions: 0,
            handled: 0,
            failed: 0,
            last_error: None,
            strangers: Vec::new(),
            moved_aside: Vec::new(),
            vault_problem: None,
            vault_folders_outside: Vec::new(),
            waiting: 0,
            awaiting_attachments: 0,
            api_problem: None,
            skipped_old: 0,
            skipped_backfill: 0,
            rate_limited: 0,
            over_budget: 0,
            tokens_today: 0,
            unconfirmed_sends: 0,
            captured: 0,
            asked: 0,
            answered: 0,
            echoes_ignored: 0,
            sms_ignored: 0,
            oversized: 0,
            model_requests: 0,
            model_runs: 0,
            last_text_requests: None,
            groups: Vec::new(),
            next_reminder: None,
            reminder_changes: 0,
            updated: Utc::now(),
        }
    }

    /// One sentence per vault folder that points outside the vault ("Projects points
    /// outside the vault").
    pub fn vault_warnings(&self) -> Vec<String> {
        self.vault_folders_outside
            .iter()
            .map(|f| format!("{f} points outside the vault"))
            .collect()
    }

    /// The one-line summary for the tray menu.
    pub fn line(&self) -> String {
        match &self.state {
            State::Starting => "Starting…".into(),
            State::Running if self.vault_problem.is_some() => match self.waiting {
                0 => "Vault unavailable".into(),
                1 => "Vault unavailable · 1 text waiting".into(),
                n => format!("Vault unavailable · {n} texts waiting"),
            },
            State::Running if self.api_problem.is_some() => {
                "API key rejected · texts go to Inbox".into()
            }
            State::Running => match self.sessions {
                1 => "Running · 1 session".into(),
                n => format!("Running · {n} sessions"),
            },
            State::Paused => "Paused".into(),
            State::NeedsSetup(reason) => format!("Needs setup: {reason}"),
            State::Stopping => "Stopping…".into(),
        }
    }
}

/// Shared, observable status of one bridge.
#[derive(Clone, Debug)]
pub struct StatusBoard {
    tx: Arc<watch::Sender<Status>>,
    file: Option<Arc<FileWriter>>,
}

/// The status file's writer thread, and what it has written.
#[derive(Debug)]
struct FileWriter {
    shared: Arc<Progress>,
}

/// How far the status file is behind the board.
#[derive(Debug, Default)]
struct Progress {
    counts: Mutex<Counts>,
    moved: Condvar,
}

#[derive(Debug, Default)]
struct Counts {
    /// Changes made to the board.
    changed: u64,
    /// Changes the file shows (as of the last write attempt).
    written: u64,
    /// The board is gone: write what is left and stop.
    closed: bool,
}

impl Drop for FileWriter {
    fn drop(&mut self) {
        lock(&self.shared.counts).closed = true;
        self.shared.moved.notify_all();
    }
}

/// How long [`StatusBoard::flush`] waits for the writer at most.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

impl StatusBoard {
    /// A board that also mirrors itself to `file` (when given), from a writer thread.
    pub fn new(file: Option<PathBuf>) -> StatusBoard {
        let tx = Arc::new(watch::Sender::new(Status::starting()));
        let file = file.and_then(|path| {
            let shared = Arc::new(Progress::default());
            let rx = tx.subscribe();
            let progress = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name("status-writer".into())
                .spawn(move || write_file(&path, &rx, &progress));
            match spawned {
                Ok(_) => Some(Arc::new(FileWriter { shared })),
                Err(err) => {
                    tracing::warn!(cause = %err, "could not start the status file writer");
                    None
                }
            }
        });
        StatusBoard { tx, file }
    }

    /// The current snapshot.
    pub fn get(&self) -> Status {
        self.tx.borrow().clone()
    }

    /// Subscribes to changes.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.tx.subscribe()
    }

    /// Applies a change; subscribers see it at once, the status file soon after (and only
    /// if something changed).
    pub fn update(&self, change: impl FnOnce(&mut Status)) {
        let changed = self.tx.send_if_modified(|status| {
            let before = status.clone();
            change(status);
            let changed = *status != before;
            if changed {
                status.updated = Utc::now();
            }
            changed
        });
        if changed && let Some(file) = &self.file {
            lock(&file.shared.counts).changed += 1;
            file.shared.moved.notify_all();
        }
    }

    /// Blocks until the status file shows every change made before the call (or a write
    /// of it failed, or a few seconds passed). For the end of a run and for tests.
    pub fn blocking_flush(&self) {
        let Some(file) = &self.file else { return };
        let counts = lock(&file.shared.counts);
        let target = counts.changed;
        let waited = file
            .shared
            .moved
            .wait_timeout_while(counts, FLUSH_WAIT, |c| c.written < target);
        if waited.is_ok_and(|(_, timeout)| timeout.timed_out()) {
            tracing::warn!("the status file is behind the status");
        }
    }

    /// [`blocking_flush`](StatusBoard::blocking_flush) on the blocking pool.
    pub async fn flush(&self) {
        let board = self.clone();
        let _ = tokio::task::spawn_blocking(move || board.blocking_flush()).await;
    }

    /// Moves to `state`, unless the bridge is stopping: once shutdown began, nothing that
    /// finishes late (a read in flight, say) may report the bridge as running again.
    pub fn set_state(&self, state: State) {
        self.update(|s| {
            if s.state != State::Stopping {
                s.state = state;
            }
        });
    }

    /// Records a stranger's text.
    pub fn saw_stranger(&self, handle: &str, at: DateTime<Utc>) {
        self.update(|s| {
            s.strangers.retain(|x| x.handle != handle);
            s.strangers.insert(
                0,
                Stranger {
                    handle: handle.to_string(),
                    last_seen: at,
                },
            );
            s.strangers.truncate(20);
        });
    }

    /// Records a text from a group chat that is not allowed.
    pub fn saw_group(&self, group: SeenGroup) {
        self.update(|s| {
            s.groups.retain(|g| g.guid != group.guid);
            s.groups.insert(0, group);
            s.groups.truncate(20);
        });
    }
}

/// The writer thread: whenever the board is ahead of the file, writes the latest snapshot
/// (so changes made meanwhile are covered by one write); stops once the board is gone.
fn write_file(path: &std::path::Path, rx: &watch::Receiver<Status>, progress: &Progress) {
    let mut counts = lock(&progress.counts);
    loop {
        counts = match progress
            .moved
            .wait_while(counts, |c| c.written >= c.changed && !c.closed)
        {
            Ok(counts) => counts,
            Err(poisoned) => poisoned.into_inner(),
        };
        if counts.written >= counts.changed {
            return; // closed, nothing left
        }
        let target = counts.changed;
        drop(counts);
        // Taken after `target` was read, so the snapshot holds every change counted in it.
        let bytes = serde_json::to_vec_pretty(&*rx.borrow()).expect("status serialises");
        // Derived from memory and rewritten at every start: atomic, not fsynced.
        if let Err(err) = crate::persist::replace(path, &bytes) {
            tracing::warn!(cause = %err, file = ?path, "could not write status file");
        }
        counts = lock(&progress.counts);
        counts.written = counts.written.max(target);
        progress.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Updates racing on several threads: the file ends with the last snapshot, not one an
    /// earlier writer renamed into place after a later one.
    #[test]
    fn the_file_ends_with_the_latest_snapshot_when_updates_race() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status.json");
        let board = StatusBoard::new(Some(file.clone()));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..40 {
                        board.update(|s| s.handled += 1);
                    }
                });
            }
        });
        board.blocking_flush();
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(board.get().handled, 160);
        assert_eq!(on_disk["handled"], 160);
    }

    #[test]
    fn the_next_reminder_reads_as_a_time_today_and_a_day_otherwise() {
        let next = NextReminder {
            path: "Tasks/a.md".into(),
            title: "Call the dentist".into(),
            due: "2026-12-02T17:00:00+01:00".into(),
        };
        let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 12, d).unwrap();
        assert_eq!(next.line(day(2)), "Next reminder 17:00");
        assert_eq!(next.line(day(1)), "Next reminder Wed 2 Dec 17:00");
        let odd = NextReminder {
            due: "soon".into(),
            ..next
        };
        assert_eq!(odd.line(day(2)), "Next reminder: Call the dentist");
    }

    #[test]
    fn lines() {
        let board = StatusBoard::new(None);
        board.update(|s| s.state = State::Running);
        assert_eq!(board.get().line(), "Running · 0 sessions");
        board.update(|s| s.sessions = 1);
        assert_eq!(board.get().line(), "Running · 1 session");
        board.update(|s| {
            s.api_problem = Some(ApiProblem::KeyRejected {
                detail: "API key rejected (HTTP 401)".into(),
            })
        });
        assert_eq!(board.get().line(), "API key rejected · texts go to Inbox");
        board.update(|s| {
            s.vault_problem = Some(VaultProblem::NotWritable {
                reason: "the vault does not exist".into(),
            })
        });
        assert_eq!(board.get().line(), "Vault unavailable");
        for (waiting, line) in [
            (1, "Vault unavailable · 1 text waiting"),
            (3, "Vault unavailable · 3 texts waiting"),
        ] {
            board.update(|s| s.waiting = waiting);
            assert_eq!(board.get().line(), line);
        }
        board.update(|s| s.state = State::NeedsSetup("Full Disk Access".into()));
        assert_eq!(board.get().line(), "Needs setup: Full Disk Access");
    }

    #[test]
    fn a_status_file_without_the_newer_fields_still_reads() {
        let old = r#"{"state":"running","sessions":2,"handled":5,"failed":1,
            "last_error":null,"strangers":[],"updated":"2026-01-01T00:00:00Z"}"#;
        let status: Status = serde_json::from_str(old).unwrap();
        assert_eq!(status.line(), "Running · 2 sessions");
        assert_eq!((status.skipped_old, status.waiting), (0, 0));
        assert!(status.moved_aside.is_empty() && status.vault_problem.is_none());
    }

    #[test]
    fn a_burst_of_changes_ends_in_the_file_and_moved_aside_entries_read_as_sentences() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status.json");
        let board = StatusBoard::new(Some(file.clone()));
        let moved = MovedAside {
            file: crate::persist::StateFile::Ledger,
            moved_to: dir.path().join("ledger.json.corrupt-1"),
            reason: "EOF while parsing".into(),
        };
        board.update(|s| s.moved_aside = vec![SetAside::File(moved.clone())]);
        for n in 0..500 {
            board.update(|s| s.handled = n + 1);
        }
        board.blocking_flush();
        let on_disk: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(on_disk["handled"], 500);
        let sentence = format!(
            "ledger file did not parse (EOF while parsing); kept as {}",
            moved.moved_to.display()
        );
        assert_eq!(on_disk["moved_aside"], serde_json::json!([sentence]));
        let read: Status = serde_json::from_value(on_disk).unwrap();
        assert_eq!(read.moved_aside, vec![SetAside::Other(sentence)]);
        // The writer stops with the board; the file stays.
        drop(board);
        assert!(file.exists());
    }

    #[test]
    fn nothing_replaces_stopping() {
        let board = StatusBoard::new(None);
        board.set_state(State::Running);
        assert_eq!(board.get().state, State::Running);
        board.set_state(State::Stopping);
        for late in [State::Running, State::Paused, State::NeedsSetup("x".into())] {
            board.set_state(late);
            assert_eq!(board.get().state, State::Stopping);
        }
    }

    #[test]
    fn changes_reach_subscribers_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("status.json");
        let board = StatusBoard::new(Some(file.clone()));
        let mut rx = board.subscribe();
        rx.mark_unchanged();
        board.update(|s| s.state = State::Paused);
        assert!(rx.has_changed().unwrap());
        board.blocking_flush();
        let on_disk: Status = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(on_disk.state, State::Paused);
        rx.mark_unchanged();
        board.update(|s| s.state = State::Paused);
        assert!(
            !rx.has_changed().unwrap(),
            "no-op updates are not published"
        );
        board.saw_stranger("+1999", Utc::now());
        board.saw_stranger("+1888", Utc::now());
        board.saw_stranger("+1999", Utc::now());
        let handles: Vec<_> = board
            .get()
            .strangers
            .into_iter()
            .map(|s| s.handle)
            .collect();
        assert_eq!(handles, ["+1999", "+1888"]);
    }
}
