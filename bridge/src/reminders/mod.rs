//! Reminders that text you back: a note's frontmatter `reminder: {due, sent}` is texted into
//! the chat it was set from at `due`, exactly once.
//!
//! The note is the truth: what is pending is read from the vault ([`Pending`]), never kept
//! elsewhere; [`frontmatter`] changes only the `reminder:` field (and the archive stamps) of a
//! note, by a conditional read-modify-write; [`store`] keeps which chat each note's reminder
//! was set from and which reminders were sent (or may have been) in `state.db`; the
//! [`scheduler`] arms a timer for the next one.
//!
//! Invariants: a due time always carries an offset once written (a local time without one is
//! read in the Mac's time zone); notes in `Archive/` and sent reminders are never pending.

pub mod frontmatter;
pub mod scheduler;
pub mod store;
pub mod tool;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, SecondsFormat, TimeZone};
use serde::Serialize;

use crate::search::{note, read_note, walk};
use crate::vault::Folder;

pub use store::Store;

/// Longest first body line added to a reminder's text, in characters.
const MAX_FIRST_LINE_CHARS: usize = 120;

/// When a reminder is due: an instant with the offset it is shown in.
pub type Due = DateTime<FixedOffset>;

/// One pending reminder, as its note has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reminder {
    /// The note, vault-relative.
    pub path: String,
    /// The note's title.
    pub title: String,
    /// When it is due.
    #[serde(serialize_with = "serialize_due")]
    pub due: Due,
    /// The note's first body line, when it is short enough to go into the text.
    #[serde(skip)]
    pub first_line: Option<String>,
}

fn serialize_due<S: serde::Serializer>(due: &Due, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_due(due))
}

impl Reminder {
    /// Identifies this reminder (this note, this due time) in the send record and the
    /// outbox: `reminder:<note>:<due>`.
    pub fn key(&self) -> String {
        format!("reminder:{}:{}", self.path, format_due(&self.due))
    }

    /// Whether the note is in `Archive/`.
    pub fn is_archived(&self) -> bool {
        top_folder(&self.path) == Folder::Archive.as_str()
    }
}

/// Why a `due` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DueError {
    /// Not ISO 8601 as accepted.
    #[error(
        "{0:?} is not an ISO 8601 date-time like 2026-12-03T17:00:00+01:00 (or 2026-12-03T17:00, local time, or 2026-12-03 for 09:00)"
    )]
    Format(String),
    /// A local time that does not exist (skipped by a daylight-saving change).
    #[error("{0:?} does not exist in the local time zone (a daylight-saving change skips it)")]
    NoSuchLocalTime(String),
}

/// Reads `raw`: RFC 3339 (with an offset or `Z`), or a local date-time without one, read in
/// the Mac's time zone (the earlier of two, when a daylight-saving change repeats it), or a
/// date alone, meaning 09:00 that day (the default the prompt states; also what a person
/// typing `due: 2026-12-03` into the note in Obsidian means).
pub fn parse_due(raw: &str) -> Result<Due, DueError> {
    parse_due_in(raw, &Local)
}

/// [`parse_due`] with local times read in `zone`.
pub fn parse_due_in<Z: TimeZone>(raw: &str, zone: &Z) -> Result<Due, DueError> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t);
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
    .or_else(|| {
        chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .and_then(|day| day.and_hms_opt(9, 0, 0))
    })
    .ok_or_else(|| DueError::Format(raw.chars().take(60).collect()))?;
    zone.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.fixed_offset())
        .ok_or_else(|| DueError::NoSuchLocalTime(raw.to_string()))
}

/// `due` as it is written into a note: RFC 3339, seconds, in the Mac's offset at that time.
pub fn format_due(due: &Due) -> String {
    due.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// `due` in the Mac's time zone, with its offset.
pub fn local(due: &Due) -> Due {
    due.with_timezone(&Local).fixed_offset()
}

fn top_folder(rel: &str) -> &str {
    rel.split('/').next().unwrap_or_default()
}

/// The pending reminder of the note `rel` whose text is `text`, if it has one: not sent,
/// not archived, with a due that parses.
pub fn of_note(rel: &str, text: &str) -> Option<Reminder> {
    if top_folder(rel) == Folder::Archive.as_str() {
        return None;
    }
    let parsed = note::parse(rel, text);
    let reminder = parsed.reminder.filter(|r| !r.sent)?;
    let due = parse_due(&reminder.due).ok()?;
    // The first line that says more than the title (a task's `- [ ] <title> 📅 …` does not).
    let title = parsed.title.to_lowercase();
    let first_line = parsed
        .body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !is_task_line_of(l, &title))
        .filter(|l| l.chars().count() <= MAX_FIRST_LINE_CHARS)
        .map(str::to_string);
    Some(Reminder {
        path: rel.to_string(),
        title: parsed.title,
        due,
        first_line,
    })
}

/// Whether `line` is a task line (`- [ ] …`) naming `title` (lower-cased).
fn is_task_line_of(line: &str, title: &str) -> bool {
    line.starts_with("- [") && line.to_lowercase().contains(title)
}

/// The pending reminder of the note at `rel` in the vault at `root`, read now (blocking).
pub fn read_one(root: &Path, rel: &str) -> Option<Reminder> {
    of_note(rel, &read_note(&root.join(rel))?)
}

/// Every pending reminder in the vault at `root`, soonest first (blocking).
pub fn pending(root: &Path) -> Vec<Reminder> {
    let mut all = Pending::default();
    all.refresh(root);
    all.soonest_first()
}

/// The vault's pending reminders, kept with each note's stamp so that a refresh reads only
/// the notes that changed.
#[derive(Debug, Default)]
pub struct Pending {
    notes: HashMap<String, (walk::Stamp, Option<Reminder>)>,
}

impl Pending {
    /// Walks the vault and reads the notes that are new or changed since the last refresh
    /// (blocking). Returns whether anything changed.
    pub fn refresh(&mut self, root: &Path) -> bool {
        let mut disk = Vec::new();
        walk::under(root, "", &mut disk);
        let before = self.notes.len();
        let mut changed = false;
        let mut seen = HashMap::with_capacity(disk.len());
        for (rel, stamp) in disk {
            let entry = match self.notes.remove(&rel) {
                Some((old, reminder)) if old == stamp => (old, reminder),
                _ => {
                    changed = true;
                    (stamp, read_one(root, &rel))
                }
            };
            seen.insert(rel, entry);
        }
        changed |= seen.len() != before || !self.notes.is_empty();
        self.notes = seen;
        changed
    }

    /// Forgets what is known of `rel`, so the next refresh reads it again.
    pub fn forget(&mut self, rel: &str) {
        self.notes.remove(rel);
    }

    /// The pending reminders, soonest first.
    pub fn soonest_first(&self) -> Vec<Reminder> {
        let mut all: Vec<Reminder> = self.notes.values().filter_map(|(_, r)| r.clone()).collect();
        all.sort_by(|a, b| a.due.cmp(&b.due).then_with(|| a.path.cmp(&b.path)));
        all
    }
}

/// What [`cancel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancelled {
    /// The reminder was removed from the note.
    Removed,
    /// The note has no pending reminder: nothing changed.
    NothingPending,
}

/// Removes the pending reminder from the note at `rel` (vault-relative, confined like a
/// read), by a conditional read-modify-write; a running bridge follows the change through
/// its file watch (blocking).
pub fn cancel(vault: &crate::vault::Vault, rel: &str) -> Result<Cancelled, crate::vault::Error> {
    let path = vault.note_file(rel)?;
    let updated = frontmatter::update(&path, |text| {
        of_note(rel, text).map(|_| frontmatter::set_field(text, "reminder", None))
    })
    .map_err(|e| crate::vault::Error::invalid("filepath", e.to_string()))?;
    if let Some(live) = of_vault(vault.root()) {
        live.poke();
    }
    Ok(match updated {
        frontmatter::Updated::Written => Cancelled::Removed,
        frontmatter::Updated::Unchanged => Cancelled::NothingPending,
    })
}

/// What the running bridge shares with the tools: the store, and a way to tell the
/// scheduler that a reminder changed.
#[derive(Clone, Debug)]
pub struct Live {
    /// Which chat each reminder goes to.
    pub store: Store,
    /// Bumped on every change the tools make; the scheduler re-reads the vault.
    pub changed: tokio::sync::watch::Sender<u64>,
}

impl Live {
    /// Tells the scheduler to look at the vault again.
    pub fn poke(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Live>> {
    static LIVE: OnceLock<Mutex<HashMap<PathBuf, Live>>> = OnceLock::new();
    LIVE.get_or_init(Mutex::default)
}

/// The reminders of the running bridge for the vault at `root`, if one runs.
pub fn of_vault(root: &Path) -> Option<Live> {
    crate::mutex::lock(registry()).get(root).cloned()
}

/// Makes `live` the reminders of the vault at `root` until the returned guard is dropped.
pub fn register(root: &Path, live: Live) -> Registered {
    let changed = live.changed.clone();
    crate::mutex::lock(registry()).insert(root.to_path_buf(), live);
    Registered(root.to_path_buf(), changed)
}

/// Unregisters a vault's reminders when dropped, unless a newer bridge registered its own.
#[derive(Debug)]
pub struct Registered(PathBuf, tokio::sync::watch::Sender<u64>);

impl Drop for Registered {
    fn drop(&mut self) {
        let mut live = crate::mutex::lock(registry());
        if live
            .get(&self.0)
            .is_some_and(|l| l.changed.same_channel(&self.1))
        {
            live.remove(&self.0);
        }
    }
}

/// Starts the vault's reminders on `tracker`: registers them for the tools and runs the
/// [`scheduler::Scheduler`] until `cancel` fires. `vault_changes` is the vault's file watch.
pub fn start(
    config: &crate::config::Config,
    outbox: &crate::outbox::Outbox,
    ledger: &std::sync::Arc<crate::ledger::Ledger>,
    status: &crate::status::StatusBoard,
    vault_changes: Option<tokio::sync::watch::Receiver<u64>>,
    tracker: &tokio_util::task::TaskTracker,
    cancel: &tokio_util::sync::CancellationToken,
) {
    let Some(root) = config.vault.clone() else {
        return;
    };
    let store = match Store::open(std::sync::Arc::clone(ledger.db())) {
        Ok(store) => store,
        Err(err) => {
            tracing::warn!(cause = %err, "could not open the reminders' tables; reminders are off");
            return;
        }
    };
    let (changed, changes) = tokio::sync::watch::channel(0);
    let registered = register(
        &root,
        Live {
            store: store.clone(),
            changed,
        },
    );
    // A note whose chat was never recorded (a reminder typed in Obsidian) goes to the only
    // allowed sender, as the digest does; with several, nowhere.
    let mut senders = config.allowed_senders.iter();
    let fallback = match (senders.next(), senders.next()) {
        (Some(only), None) => Some(crate::chatdb::Chat {
            guid: format!("iMessage;-;{}", only.as_str()),
            identifier: only.as_str().to_string(),
            is_group: false,
        }),
        _ => None,
    };
    let scheduler = scheduler::Scheduler {
        root,
        store,
        outbox: outbox.clone(),
        status: status.clone(),
        clock: crate::digest::SystemClock,
        changes,
        vault_changes,
        fallback,
    };
    let cancel = cancel.clone();
    tracker.spawn(async move {
        let _registered = registered;
        scheduler.run(cancel).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_with_and_without_an_offset() {
        let paris = FixedOffset::east_opt(3600).unwrap();
        let cases = [
            ("2026-12-03T17:00:00+01:00", "2026-12-03T17:00:00+01:00"),
            ("2026-12-03T16:00:00Z", "2026-12-03T16:00:00+00:00"),
            ("2026-12-03T17:00", "2026-12-03T17:00:00+01:00"),
            (" 2026-12-03 17:00:30 ", "2026-12-03T17:00:30+01:00"),
            ("2026-12-03", "2026-12-03T09:00:00+01:00"),
        ];
        for (raw, want) in cases {
            let due = parse_due_in(raw, &paris).unwrap();
            assert_eq!(format_due(&due), want, "{raw}");
        }
        for bad in [
            "tomorrow at 5",
            "",
            "2026-13-03T17:00",
            "17:00",
            "2026-12-32",
            "2026-12-03T25:00",
        ] {
            assert!(
                matches!(parse_due_in(bad, &paris), Err(DueError::Format(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_note_is_pending_until_sent_and_never_in_archive() {
        let text = "---\ntags: []\nreminder:\n  due: 2026-12-03T17:00:00+01:00\n  sent: false\n---\n# Call the dentist\n\n- [ ] Call the dentist 📅 2026-12-03\nAsk about Friday.\n";
        let r = of_note("Tasks/a.md", text).unwrap();
        assert_eq!(r.title, "Call the dentist");
        assert_eq!(r.first_line.as_deref(), Some("Ask about Friday."));
        assert_eq!(r.key(), "reminder:Tasks/a.md:2026-12-03T17:00:00+01:00");
        assert_eq!(of_note("Archive/a.md", text), None);
        assert_eq!(
            of_note("Tasks/a.md", &text.replace("sent: false", "sent: true")),
            None
        );
        assert_eq!(
            of_note("Tasks/a.md", &text.replace("2026-12-03T17", "soon")),
            None
        );
        let long = text.replace("Ask about Friday.", &"x".repeat(200));
        assert_eq!(of_note("Tasks/a.md", &long).unwrap().first_line, None);
    }

    #[test]
    fn an_old_bridge_going_away_leaves_the_new_ones_reminders_registered() {
        let dir = tempfile::tempdir().unwrap();
        let live = || Live {
            store: Store::open(std::sync::Arc::new(crate::state::StateDb::in_memory())).unwrap(),
            changed: tokio::sync::watch::channel(0).0,
        };
        let old = register(dir.path(), live());
        let new_one = live();
        let new = register(dir.path(), new_one.clone());
        drop(old);
        let found = of_vault(dir.path()).expect("still registered");
        assert!(found.changed.same_channel(&new_one.changed));
        drop(new);
        assert!(of_vault(dir.path()).is_none());
    }

    #[test]
    fn cancel_removes_only_the_reminder() {
        let dir = tempfile::tempdir().unwrap();
        let vault = crate::vault::Vault::new(dir.path());
        vault.check_writable().unwrap();
        let text = "---\ntags: [a]\nreminder:\n  due: 2999-01-01T09:00:00+00:00\n  sent: false\n---\n# T\n";
        std::fs::write(dir.path().join("Tasks/t.md"), text).unwrap();
        assert_eq!(cancel(&vault, "Tasks/t.md").unwrap(), Cancelled::Removed);
        let after = std::fs::read_to_string(dir.path().join("Tasks/t.md")).unwrap();
        assert_eq!(after, "---\ntags: [a]\n---\n# T\n");
        assert_eq!(
            cancel(&vault, "Tasks/t.md").unwrap(),
            Cancelled::NothingPending
        );
        assert!(cancel(&vault, "../t.md").is_err());
    }

    #[test]
    fn a_refresh_reads_only_changed_notes_and_sees_removals() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("Tasks")).unwrap();
        let note = |due: &str| format!("---\nreminder:\n  due: {due}\n  sent: false\n---\n# T\n");
        std::fs::write(root.join("Tasks/b.md"), note("2026-12-04T09:00:00+01:00")).unwrap();
        std::fs::write(root.join("Tasks/a.md"), note("2026-12-03T09:00:00+01:00")).unwrap();
        let mut pending = Pending::default();
        assert!(pending.refresh(root));
        let paths: Vec<String> = pending
            .soonest_first()
            .into_iter()
            .map(|r| r.path)
            .collect();
        assert_eq!(paths, ["Tasks/a.md", "Tasks/b.md"]);
        assert!(!pending.refresh(root), "nothing changed");
        std::fs::remove_file(root.join("Tasks/a.md")).unwrap();
        assert!(pending.refresh(root));
        assert_eq!(pending.soonest_first().len(), 1);
    }
}
