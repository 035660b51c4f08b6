//! The message ledger: the chat.db cursor and exactly-once bookkeeping, in `ledger.json`.
//!
//! A text is *claimed* when it is read (the whole [`IncomingMessage`] is stored, so it can be
//! handled again after a crash even if chat.db changed) and *finished* when its handling is
//! over; the guids of the last [`FINISHED_LIMIT`] finished texts are kept so that a text read
//! twice is recognised. Every reply sent for a claimed text is recorded too, keyed by the
//! text's guid and a digest of the reply: *in flight* before `osascript` runs, *sent* or
//! *unconfirmed* after. A re-run after a crash finds the record and does not send again; a
//! record still in flight at start means the process died mid-send, so the reply counts as
//! unconfirmed and is never repeated. Send records go when their text is finished.
//!
//! Invariants: every change is made to a copy of the book, written to disk (atomically and
//! durably, via [`persist::write_atomic`]) and only then swapped in, so a crash can repeat
//! work but never lose a claimed text, and a failed write changes nothing; writers are
//! serialised by one `std::sync::Mutex` held across the write. The API is blocking: call it
//! from `spawn_blocking`.

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
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    /// The highest `message.ROWID` read.
    pub rowid: i64,
    /// The newest message date seen (never later than the clock when it was read): texts
    /// dated well before it are history, not new texts, and a rebuilt database is re-read
    /// from this date.
    pub date: Option<DateTime<Utc>>,
    /// The last text read (from anyone), to tell whether a reopened database still has the
    /// same rows under the same ROWIDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
}

/// A row the cursor has passed, remembered by ROWID and guid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mark {
    /// Its `message.ROWID`.
    pub rowid: i64,
    /// Its `message.guid`.
    pub guid: String,
}

/// Where a reply stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendState {
    /// `osascript` was (about to be) started and has not returned.
    InFlight,
    /// `osascript` reported success.
    Sent,
    /// Whether Messages sent it is unknown (time-out, or the bridge died mid-send).
    Unconfirmed,
}

/// What [`Ledger::begin_send`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStart {
    /// No record: it is now recorded in flight; send it, then call [`Ledger::end_send`].
    Go,
    /// It was sent before: do not send again.
    AlreadySent,
    /// It may have been sent: do not send again. `just_found` is true the first time this
    /// is noticed (a send left in flight by a crash), so it is reported once.
    Unconfirmed {
        /// Whether this call turned an in-flight record into an unconfirmed one.
        just_found: bool,
    },
}

/// How a send recorded by [`Ledger::begin_send`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Sent.
    Sent,
    /// Certainly not sent (the script failed or never ran): the record is dropped.
    NotSent,
    /// Unknown (the sender timed out).
    Unknown,
}

/// One reply's record, keyed by the guid of the text it answers and a digest of its words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SendRecord {
    source: String,
    digest: String,
    state: SendState,
}

/// The digest a reply is recorded under: FNV-1a (64 bit) of its UTF-8 bytes, in hex. Stable
/// across processes and versions, which `std`'s hasher does not promise.
pub fn digest(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
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

/// The cursor, the claimed texts, the recently finished guids and the replies of claimed
/// texts, saved on every change.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    finished_limit: usize,
    book: Mutex<Book>,
}

/// The ledger's contents in memory.
#[derive(Clone, Debug, Default)]
struct Book {
    cursor: Option<Cursor>,
    /// Claimed, not finished; sorted by ROWID.
    claimed: Vec<IncomingMessage>,
    /// Finished guids, oldest first, at most `finished_limit`.
    finished: VecDeque<String>,
    finished_set: HashSet<String>,
    /// Replies of claimed texts.
    sends: Vec<SendRecord>,
}

impl Book {
    fn is_claimed(&self, guid: &str) -> bool {
        self.claimed.iter().any(|m| m.guid == guid)
    }

    fn is_known(&self, guid: &str) -> bool {
        self.finished_set.contains(guid) || self.is_claimed(guid)
    }

    fn send(&mut self, source: &str, digest: &str) -> Option<&mut SendRecord> {
        self.sends
            .iter_mut()
            .find(|r| r.source == source && r.digest == digest)
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
    #[serde(default)]
    sends: Vec<SendRecord>,
}

/// The file as written, borrowed from the book.
#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    cursor: &'a Option<Cursor>,
    claimed: &'a [IncomingMessage],
    finished: &'a VecDeque<String>,
    sends: &'a [SendRecord],
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
                for record in file.sends {
                    if book.is_claimed(&record.source) {
                        book.sends.push(record);
                    }
                }
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
            tracing::warn!(path = ?path, moved_to = ?moved_to, %reason,
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
        self.lock().cursor.clone()
    }

    /// Records `cursor` and claims every text of `batch` whose guid is neither claimed nor
    /// recently finished (nor repeated earlier in the batch), durably, then returns exactly
    /// those, in batch order. On error nothing is recorded.
    pub fn claim(
        &self,
        batch: &[IncomingMessage],
        cursor: Cursor,
    ) -> io::Result<Vec<IncomingMessage>> {
        let fresh = self.update(|book| {
            let mut in_batch = HashSet::new();
            let mut fresh = Vec::new();
            for message in batch {
                if book.is_known(&message.guid) || !in_batch.insert(message.guid.as_str()) {
                    tracing::debug!(rowid = message.rowid, guid = ?message.guid,
                        "text already known; not claimed again");
                    continue;
                }
                fresh.push(message.clone());
            }
            if fresh.is_empty() && book.cursor.as_ref() == Some(&cursor) {
                return (fresh, false);
            }
            book.cursor = Some(cursor);
            book.claimed.extend(fresh.iter().cloned());
            book.claimed.sort_by_key(|m| m.rowid);
            (fresh, true)
        })?;
        for message in &fresh {
            tracing::debug!(rowid = message.rowid, guid = ?message.guid, chat = ?message.chat.guid, "text claimed");
        }
        Ok(fresh)
    }

    /// Records `cursor` alone, for a read that found nothing to claim.
    pub fn advance(&self, cursor: Cursor) -> io::Result<()> {
        self.update(|book| {
            if book.cursor.as_ref() == Some(&cursor) {
                return ((), false);
            }
            book.cursor = Some(cursor);
            ((), true)
        })?;
        Ok(())
    }

    /// Marks the text with this guid finished: it leaves the claimed list, its send records
    /// go, and it is remembered among the recently finished. Finishing an unclaimed guid
    /// records it too; finishing twice is a no-op.
    pub fn finish(&self, guid: &str) -> io::Result<()> {
        let limit = self.finished_limit;
        self.update(|book| {
            let was_claimed = book.is_claimed(guid);
            let already_finished = book.finished_set.contains(guid);
            if already_finished && !was_claimed {
                return ((), false);
            }
            if !was_claimed {
                tracing::debug!(?guid, "finishing a text that was not claimed");
            }
            book.claimed.retain(|m| m.guid != guid);
            book.sends.retain(|r| r.source != guid);
            if !already_finished {
                book.finished.push_back(guid.to_string());
                book.finished_set.insert(guid.to_string());
            }
            while book.finished.len() > limit {
                if let Some(oldest) = book.finished.pop_front() {
                    book.finished_set.remove(&oldest);
                }
            }
            ((), true)
        })?;
        tracing::debug!(?guid, "text finished");
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

    /// Whether the text with this guid was recently finished.
    pub fn is_finished(&self, guid: &str) -> bool {
        self.lock().finished_set.contains(guid)
    }

    /// Before sending the reply `digest` (see [`digest`]) for the text `source`: records it
    /// in flight and says [`SendStart::Go`], or says why it must not be sent again. A
    /// record left in flight (by a crash) becomes unconfirmed here. On error nothing is
    /// recorded.
    pub fn begin_send(&self, source: &str, digest: &str) -> io::Result<SendStart> {
        let start = self.update(|book| match book.send(source, digest) {
            Some(record) => match record.state {
                SendState::Sent => (SendStart::AlreadySent, false),
                SendState::Unconfirmed => (SendStart::Unconfirmed { just_found: false }, false),
                SendState::InFlight => {
                    record.state = SendState::Unconfirmed;
                    (SendStart::Unconfirmed { just_found: true }, true)
                }
            },
            None => {
                book.sends.push(SendRecord {
                    source: source.to_string(),
                    digest: digest.to_string(),
                    state: SendState::InFlight,
                });
                (SendStart::Go, true)
            }
        })?;
        Ok(start)
    }

    /// Records how a send begun with [`begin_send`](Ledger::begin_send) ended.
    pub fn end_send(&self, source: &str, digest: &str, outcome: SendOutcome) -> io::Result<()> {
        self.update(|book| {
            let state = match outcome {
                SendOutcome::Sent => SendState::Sent,
                SendOutcome::Unknown => SendState::Unconfirmed,
                SendOutcome::NotSent => {
                    let before = book.sends.len();
                    book.sends
                        .retain(|r| !(r.source == source && r.digest == digest));
                    return ((), book.sends.len() != before);
                }
            };
            match book.send(source, digest) {
                Some(record) if record.state == state => ((), false),
                Some(record) => {
                    record.state = state;
                    ((), true)
                }
                None => {
                    book.sends.push(SendRecord {
                        source: source.to_string(),
                        digest: digest.to_string(),
                        state,
                    });
                    ((), true)
                }
            }
        })?;
        Ok(())
    }

    /// How many replies of unfinished texts may or may not have been sent.
    pub fn unconfirmed_sends(&self) -> usize {
        self.lock()
            .sends
            .iter()
            .filter(|r| r.state != SendState::Sent)
            .count()
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // The book is only replaced whole, after its write succeeded, so a poisoned lock
        // still guards a consistent book.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `edit` to a copy of the book; when it reports a change, writes the copy and
    /// only then makes it the book. The lock is held throughout, which serialises writers.
    fn update<T>(&self, edit: impl FnOnce(&mut Book) -> (T, bool)) -> Result<T, LedgerError> {
        let mut book = self.lock();
        let mut next = book.clone();
        let (out, changed) = edit(&mut next);
        if changed {
            self.write(&next)?;
            *book = next;
        }
        Ok(out)
    }

    /// Writes the file.
    fn write(&self, book: &Book) -> Result<(), LedgerError> {
        let file = FileOut {
            version: FILE_VERSION,
            cursor: &book.cursor,
            claimed: &book.claimed,
            finished: &book.finished,
            sends: &book.sends,
        };
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
            origin: Default::default(),
            extra: None,
        }
    }

    fn cursor(rowid: i64) -> Cursor {
        Cursor {
            rowid,
            date: Some(at(rowid)),
            mark: None,
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
                mark: None,
            })
            .unwrap();
        ledger
            .advance(Cursor {
                rowid: 42,
                date: None,
                mark: None,
            })
            .unwrap();
        drop(ledger);
        let ledger = open(&path);
        assert_eq!(
            ledger.cursor(),
            Some(Cursor {
                rowid: 42,
                date: None,
                mark: None,
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

    /// Issue 4: a reply recorded as sent is never sent again, even after a restart; a
    /// send left in flight by a crash becomes unconfirmed (reported once, never repeated);
    /// a failed send can be tried again; records go when the text is finished.
    #[test]
    fn replies_are_recorded_around_the_send_and_survive_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let ledger = open(&path);
        ledger
            .claim(&[message(1, "a"), message(2, "b")], cursor(2))
            .unwrap();
        let (saved, asked) = (digest("Saved to Tasks ✅"), digest("Which day?"));

        assert_eq!(
            ledger.begin_send("GUID-0001", &saved).unwrap(),
            SendStart::Go
        );
        ledger
            .end_send("GUID-0001", &saved, SendOutcome::Sent)
            .unwrap();
        assert_eq!(
            ledger.begin_send("GUID-0001", &saved).unwrap(),
            SendStart::AlreadySent
        );
        // Another reply to the same text, and the same reply to another text, are new.
        assert_eq!(
            ledger.begin_send("GUID-0001", &asked).unwrap(),
            SendStart::Go
        );
        assert_eq!(
            ledger.begin_send("GUID-0002", &saved).unwrap(),
            SendStart::Go
        );
        ledger
            .end_send("GUID-0002", &saved, SendOutcome::NotSent)
            .unwrap();
        assert_eq!(
            ledger.begin_send("GUID-0002", &saved).unwrap(),
            SendStart::Go,
            "a send that certainly failed may be tried again"
        );
        ledger
            .end_send("GUID-0002", &saved, SendOutcome::Unknown)
            .unwrap();
        // The process dies with GUID-0001's second reply in flight.
        drop(ledger);

        let ledger = open(&path);
        assert_eq!(
            ledger.begin_send("GUID-0001", &saved).unwrap(),
            SendStart::AlreadySent
        );
        assert_eq!(
            ledger.begin_send("GUID-0001", &asked).unwrap(),
            SendStart::Unconfirmed { just_found: true }
        );
        assert_eq!(
            ledger.begin_send("GUID-0001", &asked).unwrap(),
            SendStart::Unconfirmed { just_found: false }
        );
        assert_eq!(
            ledger.begin_send("GUID-0002", &saved).unwrap(),
            SendStart::Unconfirmed { just_found: false }
        );
        assert_eq!(ledger.unconfirmed_sends(), 2);
        let sends = file(&path)["sends"].clone();
        assert_eq!(sends.as_array().unwrap().len(), 3, "{sends}");
        assert!(
            sends
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["state"] == "unconfirmed")
        );

        ledger.finish("GUID-0001").unwrap();
        ledger.finish("GUID-0002").unwrap();
        assert_eq!(file(&path)["sends"], serde_json::json!([]));
        assert_eq!(ledger.unconfirmed_sends(), 0);
    }

    #[test]
    fn send_records_of_texts_no_longer_claimed_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let text = serde_json::json!({
            "version": 1,
            "cursor": {"rowid": 3, "date": null},
            "claimed": [serde_json::to_value(message(3, "c")).unwrap()],
            "finished": ["GUID-0001"],
            "sends": [
                {"source": "GUID-0001", "digest": "00", "state": "sent"},
                {"source": "GUID-0003", "digest": "01", "state": "in_flight"},
                {"source": "GUID-0009", "digest": "02", "state": "sent"},
            ],
        });
        std::fs::write(&path, text.to_string()).unwrap();
        let ledger = open(&path);
        assert_eq!(ledger.begin_send("GUID-0001", "00").unwrap(), SendStart::Go);
        assert_eq!(
            ledger.begin_send("GUID-0003", "01").unwrap(),
            SendStart::Unconfirmed { just_found: true }
        );
        assert_eq!(ledger.begin_send("GUID-0009", "02").unwrap(), SendStart::Go);
        // A file from before send records existed still opens.
        std::fs::write(
            &path,
            r#"{"version":1,"cursor":{"rowid":7,"date":null},"claimed":[],"finished":[]}"#,
        )
        .unwrap();
        let ledger = open(&path);
        assert_eq!(ledger.cursor().unwrap().rowid, 7);
        assert_eq!(ledger.cursor().unwrap().mark, None);
    }

    #[test]
    fn digests_are_stable_and_tell_texts_apart() {
        // FNV-1a test vectors, and texts that differ in one invisible way.
        assert_eq!(digest(""), "cbf29ce484222325");
        assert_eq!(digest("a"), "af63dc4c8601ec8c");
        let texts = [
            "Saved ✅",
            "Saved ✅ ",
            "Saved\r\n",
            "Saved\n",
            "Saved\u{2028}",
            "שלום",
            "𝔘𝔫𝔦",
            "👋🏽",
            "👋",
        ];
        let digests: HashSet<String> = texts.iter().map(|t| digest(t)).collect();
        assert_eq!(digests.len(), texts.len());
    }

    #[test]
    fn the_cursor_keeps_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        let ledger = open(&path);
        let marked = Cursor {
            mark: Some(Mark {
                rowid: 9,
                guid: "GUID-0009".into(),
            }),
            ..cursor(10)
        };
        ledger.advance(marked.clone()).unwrap();
        drop(ledger);
        assert_eq!(open(&path).cursor(), Some(marked));
        assert_eq!(file(&path)["cursor"]["mark"]["guid"], "GUID-0009");
    }
}
