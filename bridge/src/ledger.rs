//! The message ledger: the chat.db cursor and exactly-once bookkeeping, in `ledger.json`.
//!
//! A text is *claimed* when it is read (the whole [`IncomingMessage`] is stored, so it can be
//! handled again after a crash even if chat.db changed) and *finished* when its handling is
//! over; the guids of the last [`FINISHED_LIMIT`] finished texts are kept so that a text read
//! twice is recognised.
//!
//! Invariants: every change is on disk (atomically and durably, via
//! [`persist::write_atomic`]) before it is visible in memory or returned to the caller, so a
//! crash can repeat work but never lose a claimed text; writers are serialised by one
//! `std::sync::Mutex` held across the write. The API is blocking: call it from
//! `spawn_blocking`.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chatdb::IncomingMessage;
use crate::persist::{self, Loaded};

/// The version written in `ledger.json`; a file with another version is moved aside.
pub const FILE_VERSION: u32 = 1;

/// How many finished guids are remembered for deduplication.
pub const FINISHED_LIMIT: usize = 5_000;

/// How far chat.db has been read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// The highest `message.ROWID` read.
    pub rowid: i64,
    /// The date of that row, when known (a safety net should ROWIDs ever be reset).
    pub date: Option<DateTime<Utc>>,
}

/// Why the ledger could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Writing the file failed; the change was not made.
    #[error("could not save the message ledger to {path}: {source}")]
    Write {
        /// The ledger file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The ledger could not be turned into JSON; the change was not made.
    #[error("could not serialise the message ledger for {path}: {source}")]
    Serialise {
        /// The ledger file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
}

impl From<LedgerError> for io::Error {
    fn from(err: LedgerError) -> io::Error {
        let kind = match &err {
            LedgerError::Write { source, .. } => source.kind(),
            LedgerError::Serialise { .. } => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, err)
    }
}

/// The cursor, the claimed texts and the recently finished guids, saved on every change.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    finished_limit: usize,
    book: Mutex<Book>,
}

/// The ledger's contents in memory.
#[derive(Debug, Default)]
struct Book {
    cursor: Option<Cursor>,
    /// Claimed, not finished; sorted by ROWID.
    claimed: Vec<IncomingMessage>,
    /// Finished guids, oldest first, at most `finished_limit`.
    finished: VecDeque<String>,
    finished_set: HashSet<String>,
}

impl Book {
    fn is_claimed(&self, guid: &str) -> bool {
        self.claimed.iter().any(|m| m.guid == guid)
    }

    fn is_known(&self, guid: &str) -> bool {
        self.finished_set.contains(guid) || self.is_claimed(guid)
    }
}

/// The file as read.
#[derive(Deserialize)]
struct FileIn {
    version: u32,
    cursor: Option<Cursor>,
    #[serde(default)]
    claimed: Vec<IncomingMessage>,
    #[serde(default)]
    finished: Vec<String>,
}

/// The file as written, borrowed from the book plus the change being made.
#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    cursor: Option<Cursor>,
    claimed: Vec<&'a IncomingMessage>,
    finished: Vec<&'a str>,
}

impl Ledger {
    /// Opens the ledger at `path` (it need not exist). An unreadable file is moved aside
    /// and reported as `(where it went, why)`; the ledger then starts empty, without a cursor.
    pub fn open(path: PathBuf) -> io::Result<(Ledger, Option<(PathBuf, String)>)> {
        Self::open_with_limit(path, FINISHED_LIMIT)
    }

    fn open_with_limit(
        path: PathBuf,
        finished_limit: usize,
    ) -> io::Result<(Ledger, Option<(PathBuf, String)>)> {
        let mut moved_aside = None;
        let mut book = Book::default();
        match persist::load_json::<FileIn>(&path)? {
            Loaded::Missing => {}
            Loaded::Ok(file) if file.version == FILE_VERSION => {
                let skip = file.finished.len().saturating_sub(finished_limit);
                for guid in file.finished.into_iter().skip(skip) {
                    if book.finished_set.insert(guid.clone()) {
                        book.finished.push_back(guid);
                    }
                }
                book.cursor = file.cursor;
                for message in file.claimed {
                    if !book.is_known(&message.guid) {
                        book.claimed.push(message);
                    }
                }
                book.claimed.sort_by_key(|m| m.rowid);
            }
            Loaded::Ok(file) => {
                let moved_to = persist::move_aside(&path)?;
                let reason = format!(
                    "unsupported ledger file version {} (expected {FILE_VERSION})",
                    file.version
                );
                moved_aside = Some((moved_to, reason));
            }
            Loaded::MovedAside { moved_to, reason } => moved_aside = Some((moved_to, reason)),
        }
        if let Some((moved_to, reason)) = &moved_aside {
            tracing::warn!(path = %path.display(), moved_to = %moved_to.display(), %reason,
                "message ledger unreadable; moved aside, starting without a cursor");
        }
        let ledger = Ledger {
            path,
            finished_limit,
            book: Mutex::new(book),
        };
        Ok((ledger, moved_aside))
    }

    /// The file the ledger is saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How far chat.db has been read, if it ever was.
    pub fn cursor(&self) -> Option<Cursor> {
        self.lock().cursor
    }

    /// Records `cursor` and claims every text of `batch` whose guid is neither claimed nor
    /// recently finished (nor repeated earlier in the batch), durably, then returns exactly
    /// those, in batch order. On error nothing is recorded.
    pub fn claim(
        &self,
        batch: &[IncomingMessage],
        cursor: Cursor,
    ) -> io::Result<Vec<IncomingMessage>> {
        let mut book = self.lock();
        let mut in_batch = HashSet::new();
        let mut fresh = Vec::new();
        for message in batch {
            if book.is_known(&message.guid) || !in_batch.insert(message.guid.as_str()) {
                tracing::debug!(rowid = message.rowid, guid = %message.guid,
                    "text already known; not claimed again");
                continue;
            }
            fresh.push(message.clone());
        }
        if fresh.is_empty() && book.cursor == Some(cursor) {
            return Ok(fresh);
        }
        let mut claimed: Vec<&IncomingMessage> = book.claimed.iter().chain(&fresh).collect();
        claimed.sort_by_key(|m| m.rowid);
        let finished = book.finished.iter().map(String::as_str).collect();
        self.write(FileOut {
            version: FILE_VERSION,
            cursor: Some(cursor),
            claimed,
            finished,
        })?;

        book.cursor = Some(cursor);
        book.claimed.extend(fresh.iter().cloned());
        book.claimed.sort_by_key(|m| m.rowid);
        for message in &fresh {
            tracing::debug!(rowid = message.rowid, guid = %message.guid, chat = %message.chat.guid, "text claimed");
        }
        Ok(fresh)
    }

    /// Records `cursor` alone, for a read that found nothing to claim.
    pub fn advance(&self, cursor: Cursor) -> io::Result<()> {
        let mut book = self.lock();
        if book.cursor == Some(cursor) {
            return Ok(());
        }
        let claimed = book.claimed.iter().collect();
        let finished = book.finished.iter().map(String::as_str).collect();
        self.write(FileOut {
            version: FILE_VERSION,
            cursor: Some(cursor),
            claimed,
            finished,
        })?;
        book.cursor = Some(cursor);
        Ok(())
    }

    /// Marks the text with this guid finished: it leaves the claimed list and is remembered
    /// among the recently finished. Finishing an unclaimed guid records it too; finishing
    /// twice is a no-op.
    pub fn finish(&self, guid: &str) -> io::Result<()> {
        let mut book = self.lock();
        let was_claimed = book.is_claimed(guid);
        let already_finished = book.finished_set.contains(guid);
        if already_finished && !was_claimed {
            return Ok(());
        }
        if !was_claimed {
            tracing::debug!(%guid, "finishing a text that was not claimed");
        }
        let claimed = book.claimed.iter().filter(|m| m.guid != guid).collect();
        let mut finished: Vec<&str> = book.finished.iter().map(String::as_str).collect();
        if !already_finished {
            finished.push(guid);
        }
        let overflow = finished.len().saturating_sub(self.finished_limit);
        finished.drain(..overflow);
        let cursor = book.cursor;
        self.write(FileOut {
            version: FILE_VERSION,
            cursor,
            claimed,
            finished,
        })?;

        book.claimed.retain(|m| m.guid != guid);
        if !already_finished {
            book.finished.push_back(guid.to_string());
            book.finished_set.insert(guid.to_string());
        }
        while book.finished.len() > self.finished_limit {
            if let Some(oldest) = book.finished.pop_front() {
                book.finished_set.remove(&oldest);
            }
        }
        tracing::debug!(%guid, "text finished");
        Ok(())
    }

    /// The texts claimed and not finished (left over from a crash or still in progress),
    /// in ROWID order.
    pub fn unfinished(&self) -> Vec<IncomingMessage> {
        self.lock().claimed.clone()
    }

    /// Whether the text with this guid is claimed or was recently finished.
    pub fn is_known(&self, guid: &str) -> bool {
        self.lock().is_known(guid)
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // Every change is applied after its write succeeded, in a few infallible steps, so a
        // poisoned lock still guards a consistent book.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the file; held under the book's lock, which serialises writers.
    fn write(&self, file: FileOut<'_>) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec(&file).map_err(|source| LedgerError::Serialise {
            path: self.path.clone(),
            source,
        })?;
        persist::write_atomic(&self.path, &bytes).map_err(|source| LedgerError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::chatdb::Chat;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_740_000_000 + seconds, 0).unwrap()
    }

    fn message(rowid: i64, text: &str) -> IncomingMessage {
        IncomingMessage {
            rowid,
            guid: format!("GUID-{rowid:04}"),
            chat: Chat {
                guid: "iMessage;-;+15550001111".to_string(),
                identifier: "+15550001111".to_string(),
                is_group: false,
            },
            sender: "+15550001111".to_string(),
            text: text.to_string(),
            date: at(rowid),
        }
    }

    fn cursor(rowid: i64) -> Cursor {
        Cursor {
            rowid,
            date: Some(at(rowid)),
        }
    }

    fn guids(messages: &[IncomingMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.guid.as_str()).collect()
    }

    fn file(path: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn open(path: &Path) -> Ledger {
        let (ledger, moved) = Ledger::open(path.to_path_buf()).unwrap();
        assert_eq!(moved, None);
        ledger
    }

    #[test]
    fn a_text_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let ledger = open(&path);
        assert_eq!(ledger.cursor(), None);
        let batch = vec![
            message(1, "a"),
            message(2, "b"),
            message(2, "b again, same guid"),
        ];

        let first = ledger.claim(&batch, cursor(2)).unwrap();
        assert_eq!(
            first,
            batch[..2].to_vec(),
            "a guid repeated in one batch is claimed once"
        );
        assert_eq!(ledger.claim(&batch, cursor(2)).unwrap(), vec![]);
        assert_eq!(ledger.claim(&batch[1..], cursor(3)).unwrap(), vec![]);
        assert_eq!(ledger.cursor(), Some(cursor(3)));
        assert!(ledger.is_known("GUID-0001") && ledger.is_known("GUID-0002"));
        assert!(!ledger.is_known("GUID-0003"));

        let on_disk = file(&path);
        assert_eq!(on_disk["version"], 1);
        assert_eq!(on_disk["cursor"]["rowid"], 3);
        assert_eq!(on_disk["claimed"].as_array().unwrap().len(), 2);

        ledger.finish("GUID-0001").unwrap();
        let again = vec![message(1, "a"), message(3, "c")];
        assert_eq!(
            guids(&ledger.claim(&again, cursor(3)).unwrap()),
            vec!["GUID-0003"]
        );
    }

    #[test]
    fn finished_texts_are_not_unfinished_after_a_restart_but_still_known() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let ledger = open(&path);
        ledger
            .claim(&[message(7, "x"), message(8, "y")], cursor(8))
            .unwrap();
        ledger.finish("GUID-0007").unwrap();
        ledger.finish("GUID-0007").unwrap(); // twice is harmless
        drop(ledger);

        let ledger = open(&path);
        assert_eq!(guids(&ledger.unfinished()), vec!["GUID-0008"]);
        assert!(ledger.is_known("GUID-0007"));
        assert_eq!(ledger.cursor(), Some(cursor(8)));
        assert_eq!(ledger.claim(&[message(7, "x")], cursor(8)).unwrap(), vec![]);
    }

    /// Texts that must come back byte for byte after a crash.
    const TRICKY: &[&str] = &[
        "",
        "quote \" backslash \\ apostrophe '",
        "crlf\r\nlf\ncr\r",
        "line\u{2028}para\u{2029}",
        "👋🏽 👨‍👩‍👧 𝄞",
        "שלום עולם",
        "\" & do shell script \"echo pwned\" & \"",
    ];

    #[test]
    fn claimed_texts_survive_a_crash_in_rowid_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let ledger = open(&path);
        let mut claimed = Vec::new();
        // Claimed over several batches, not in ROWID order (a retried read can do that).
        for (i, text) in TRICKY.iter().enumerate() {
            let rowid = 100 - i as i64 * 3;
            let batch = vec![message(rowid, text)];
            claimed.extend(ledger.claim(&batch, cursor(100)).unwrap());
        }
        assert_eq!(claimed.len(), TRICKY.len());
        // The process dies: no finish, no clean shutdown.
        drop(ledger);

        let ledger = open(&path);
        claimed.sort_by_key(|m| m.rowid);
        assert_eq!(ledger.unfinished(), claimed);
        assert_eq!(ledger.cursor(), Some(cursor(100)));
    }

    #[test]
    fn advance_records_only_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let ledger = open(&path);
        ledger
            .advance(Cursor {
                rowid: 42,
                date: None,
            })
            .unwrap();
        ledger
            .advance(Cursor {
                rowid: 42,
                date: None,
            })
            .unwrap();
        drop(ledger);
        let ledger = open(&path);
        assert_eq!(
            ledger.cursor(),
            Some(Cursor {
                rowid: 42,
                date: None
            })
        );
        assert_eq!(ledger.unfinished(), vec![]);
        assert_eq!(
            file(&path)["cursor"],
            serde_json::json!({"rowid": 42, "date": null})
        );
    }

    #[test]
    fn unreadable_files_are_moved_aside_and_the_ledger_starts_empty() {
        let cases: &[(&[u8], &str)] = &[
            (b"{\"version\":1,\"cursor\":", "EOF"),
            (b"\xff\xfe garbage", "line 1"),
            (b"{\"version\":9,\"cursor\":null}", "version 9"),
            (
                b"{\"version\":1,\"cursor\":{\"rowid\":\"ten\"}}",
                "invalid type",
            ),
        ];
        for (bytes, reason_part) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ledger.json");
            std::fs::write(&path, bytes).unwrap();
            let (ledger, moved) = Ledger::open(path.clone()).unwrap();
            let (moved_to, reason) = moved.expect("moved aside");
            assert!(
                reason.contains(reason_part),
                "{reason:?} should mention {reason_part:?}"
            );
            assert_eq!(
                std::fs::read(&moved_to).unwrap(),
                *bytes,
                "the bad file is kept"
            );
            assert_eq!(ledger.cursor(), None);
            assert_eq!(ledger.unfinished(), vec![]);

            ledger.claim(&[message(1, "a")], cursor(1)).unwrap();
            assert_eq!(file(&path)["cursor"]["rowid"], 1);
        }
    }

    #[test]
    fn only_the_most_recently_finished_guids_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let (ledger, _) = Ledger::open_with_limit(path.clone(), 3).unwrap();
        let batch: Vec<_> = (1..=5).map(|n| message(n, "t")).collect();
        ledger.claim(&batch, cursor(5)).unwrap();
        for m in &batch {
            ledger.finish(&m.guid).unwrap();
        }
        let known: Vec<bool> = batch.iter().map(|m| ledger.is_known(&m.guid)).collect();
        assert_eq!(known, vec![false, false, true, true, true]);
        assert_eq!(
            file(&path)["finished"],
            serde_json::json!(["GUID-0003", "GUID-0004", "GUID-0005"])
        );
        drop(ledger);

        // A file written with a larger limit is trimmed to the newest on load.
        let (ledger, _) = Ledger::open_with_limit(path.clone(), 2).unwrap();
        let known: Vec<bool> = batch.iter().map(|m| ledger.is_known(&m.guid)).collect();
        assert_eq!(known, vec![false, false, false, true, true]);
        assert_eq!(FINISHED_LIMIT, 5_000);
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let path = data.join("ledger.json");
        let ledger = open(&path);
        // The ledger's directory becomes a regular file: every write fails.
        std::fs::write(&data, b"not a directory").unwrap();

        let err = ledger.claim(&[message(1, "a")], cursor(1)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("could not save the message ledger") && text.contains("ledger.json"),
            "{text}"
        );
        assert!(!ledger.is_known("GUID-0001"));
        assert_eq!(ledger.cursor(), None);
        assert!(ledger.advance(cursor(1)).is_err());
        assert_eq!(ledger.cursor(), None);

        std::fs::remove_file(&data).unwrap();
        assert_eq!(
            guids(&ledger.claim(&[message(1, "a")], cursor(1)).unwrap()),
            vec!["GUID-0001"]
        );

        std::fs::remove_dir_all(&data).unwrap();
        std::fs::write(&data, b"not a directory").unwrap();
        assert!(ledger.finish("GUID-0001").is_err());
        assert_eq!(
            guids(&ledger.unfinished()),
            vec!["GUID-0001"],
            "still unfinished"
        );
    }
}
