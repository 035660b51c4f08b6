//! The message ledger: the chat.db cursor and exactly-once bookkeeping, in the state
//! database ([`crate::state`]).
//!
//! A text is *claimed* when it is read (the whole [`IncomingMessage`] is stored, so it can be
//! handled again after a crash even if chat.db changed) and *finished* when its handling is
//! over; the guids of the last [`FINISHED_LIMIT`] finished texts are kept so that a text read
//! twice is recognised (a fixed window: the ledger does not grow with every text handled).
//! Every reply sent for a claimed text is recorded too, keyed by the text's guid and a digest
//! of the reply: *in flight* before `osascript` runs, *sent* or *unconfirmed* after. A re-run
//! after a crash finds the record and does not send again; a record still in flight at start
//! means the process died mid-send, so the reply counts as unconfirmed and is never repeated.
//! Send records go when their text is finished.
//!
//! Invariants: each step (claim, finish, a send's start or end, a cursor move) is one
//! transaction, durable when it returns, so a crash can repeat work but never lose a claimed
//! text, and a failed step changes nothing. Two steps are committed without their own fsync
//! ([`StateDb::write_relaxed`]; a process crash still loses neither): a send's end, which a
//! power cut can only put back in flight, which counts as unconfirmed, so a reply is still
//! never sent twice; and a cursor move that claims nothing, which a power cut can only make
//! read the same unclaimed rows again. The `blocking_*` methods block (SQLite, fsync;
//! named like tokio's `blocking_recv`); async callers use the async methods, which run them
//! on the blocking pool.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use crate::chatdb::IncomingMessage;
use crate::state::StateDb;

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

impl SendState {
    /// Its name in the database.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SendState::InFlight => "in_flight",
            SendState::Sent => "sent",
            SendState::Unconfirmed => "unconfirmed",
        }
    }

    /// Reads a stored name; an unknown one counts as unconfirmed (never sent again).
    pub(crate) fn parse(raw: &str) -> SendState {
        match raw {
            "in_flight" => SendState::InFlight,
            "sent" => SendState::Sent,
            _ => SendState::Unconfirmed,
        }
    }
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

/// One reply's record, keyed by the guid of the text it answers and a digest of its words
/// (the shape `ledger.json` stored them in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRecord {
    /// The guid of the text it answers.
    pub source: String,
    /// [`digest`] of the reply.
    pub digest: String,
    /// Where it stands.
    pub state: SendState,
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

/// Why a ledger step failed; the step changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The state database refused the step.
    #[error("could not save the message ledger to {path}: {source}")]
    Write {
        /// The state database.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The state database could not be read.
    #[error("could not read the message ledger from {path}: {source}")]
    Read {
        /// The state database.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// A text or cursor could not be turned into JSON for storage.
    #[error("could not serialise the message ledger for {path}: {source}")]
    Serialise {
        /// The state database.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The blocking task running the step died (a panic or a runtime shutting down).
    #[error("the message ledger task for {path} did not finish: {reason}")]
    Interrupted {
        /// The state database.
        path: PathBuf,
        /// What happened to the task.
        reason: String,
    },
}

/// The cursor, the claimed texts, the recently finished guids and the replies of claimed
/// texts, in the state database.
#[derive(Debug)]
pub struct Ledger {
    db: Arc<StateDb>,
    finished_limit: usize,
    /// The stored cursor, kept in memory: read on every poll, written only with the row.
    cursor: Mutex<Option<Cursor>>,
}

/// What `claim` stores, beside the cursor.
const CURSOR_KEY: &str = "cursor";

impl Ledger {
    /// The ledger in `db`, remembering [`FINISHED_LIMIT`] finished texts.
    pub fn open(db: Arc<StateDb>) -> Result<Ledger, LedgerError> {
        Self::with_finished_limit(db, FINISHED_LIMIT)
    }

    /// The ledger in `db`, remembering `limit` finished texts.
    pub fn with_finished_limit(db: Arc<StateDb>, limit: usize) -> Result<Ledger, LedgerError> {
        let raw: Option<String> = db
            .read(|c| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [CURSOR_KEY], |r| {
                    r.get(0)
                })
                .optional()
            })
            .map_err(|source| LedgerError::Read {
                path: db.path().to_path_buf(),
                source,
            })?;
        let cursor = raw.and_then(|raw| match serde_json::from_str(&raw) {
            Ok(cursor) => Some(cursor),
            Err(err) => {
                tracing::warn!(cause = %err, "the stored chat.db cursor does not read; starting without one");
                None
            }
        });
        Ok(Ledger {
            db,
            finished_limit: limit.max(1),
            cursor: Mutex::new(cursor),
        })
    }

    /// The state database it lives in.
    pub fn db(&self) -> &Arc<StateDb> {
        &self.db
    }

    /// How far chat.db has been read, if it ever was.
    pub fn cursor(&self) -> Option<Cursor> {
        crate::mutex::lock(&self.cursor).clone()
    }

    /// Records `cursor` and claims every text of `batch` whose guid is neither claimed nor
    /// recently finished (nor repeated earlier in the batch), in one transaction, then
    /// returns exactly those, in batch order. On error nothing is recorded.
    pub fn blocking_claim(
        &self,
        batch: &[IncomingMessage],
        cursor: Cursor,
    ) -> Result<Vec<IncomingMessage>, LedgerError> {
        let mut encoded = Vec::with_capacity(batch.len());
        for message in batch {
            encoded.push(serde_json::to_string(message).map_err(|e| self.serialise(e))?);
        }
        let same_cursor = self.cursor().as_ref() == Some(&cursor);
        let fresh = self.write(|tx| {
            let mut in_batch = HashSet::new();
            let mut fresh = Vec::new();
            for (message, json) in batch.iter().zip(&encoded) {
                if !in_batch.insert(message.guid.as_str()) || is_known(tx, &message.guid)? {
                    tracing::debug!(rowid = message.rowid, guid = ?message.guid,
                        "text already known; not claimed again");
                    continue;
                }
                tx.prepare_cached(
                    "INSERT INTO claimed (guid, rowid, message) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![message.guid, message.rowid, json])?;
                fresh.push(message.clone());
            }
            if !(fresh.is_empty() && same_cursor) {
                store_cursor(tx, &cursor)?;
            }
            Ok(fresh)
        })?;
        *crate::mutex::lock(&self.cursor) = Some(cursor);
        for message in &fresh {
            tracing::debug!(rowid = message.rowid, guid = ?message.guid, chat = ?message.chat.guid, "text claimed");
        }
        Ok(fresh)
    }

    /// Records `cursor` alone, for a read that found nothing to claim (our own replies'
    /// rows, strangers, history). Relaxed ([`StateDb::write_relaxed`]): lost to a power cut,
    /// the same rows are read again and claim nothing again; the next claim syncs it.
    pub fn blocking_advance(&self, cursor: Cursor) -> Result<(), LedgerError> {
        if self.cursor().as_ref() == Some(&cursor) {
            return Ok(());
        }
        self.db
            .write_relaxed(|tx| store_cursor(tx, &cursor))
            .map_err(|source| LedgerError::Write {
                path: self.db.path().to_path_buf(),
                source,
            })?;
        *crate::mutex::lock(&self.cursor) = Some(cursor);
        Ok(())
    }

    /// Marks the text with this guid finished: it leaves the claimed list, its send records
    /// go, and it is remembered among the recently finished (the oldest beyond the window
    /// are forgotten). Finishing an unclaimed guid records it too; finishing twice is a
    /// no-op.
    pub fn blocking_finish(&self, guid: &str) -> Result<(), LedgerError> {
        let limit = i64::try_from(self.finished_limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            let was_claimed = tx
                .prepare_cached("DELETE FROM claimed WHERE guid = ?1")?
                .execute([guid])?
                > 0;
            if !was_claimed {
                tracing::debug!(?guid, "finishing a text that was not claimed");
            }
            tx.prepare_cached("DELETE FROM sends WHERE source = ?1")?
                .execute([guid])?;
            let added = tx
                .prepare_cached("INSERT OR IGNORE INTO finished (guid) VALUES (?1)")?
                .execute([guid])?;
            if added > 0 {
                tx.prepare_cached(
                    "DELETE FROM finished WHERE seq <= (SELECT MAX(seq) FROM finished) - ?1",
                )?
                .execute([limit])?;
            }
            Ok(())
        })?;
        tracing::debug!(?guid, "text finished");
        Ok(())
    }

    /// [`blocking_finish`](Ledger::blocking_finish) on the blocking pool.
    pub async fn finish(self: &Arc<Self>, guid: &str) -> Result<(), LedgerError> {
        let guid = guid.to_string();
        self.off_runtime(move |ledger| ledger.blocking_finish(&guid))
            .await
    }

    /// The texts claimed and not finished (left over from a crash or still in progress),
    /// in ROWID order. A stored text that no longer reads is logged and left out.
    pub fn unfinished(&self) -> Result<Vec<IncomingMessage>, LedgerError> {
        let rows: Vec<(String, String)> = self
            .db
            .read(|c| {
                let mut stmt =
                    c.prepare_cached("SELECT guid, message FROM claimed ORDER BY rowid, guid")?;
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .map_err(|source| self.read_error(source))?;
        Ok(rows
            .into_iter()
            .filter_map(|(guid, json)| match serde_json::from_str(&json) {
                Ok(message) => Some(message),
                Err(err) => {
                    tracing::warn!(?guid, cause = %err, "a claimed text does not read; left out");
                    None
                }
            })
            .collect())
    }

    /// Whether the text with this guid is claimed or was recently finished.
    pub fn is_known(&self, guid: &str) -> Result<bool, LedgerError> {
        self.db
            .read(|c| is_known(c, guid))
            .map_err(|source| self.read_error(source))
    }

    /// Whether the text with this guid was recently finished.
    pub fn is_finished(&self, guid: &str) -> Result<bool, LedgerError> {
        self.db
            .read(|c| exists(c, "SELECT 1 FROM finished WHERE guid = ?1", guid))
            .map_err(|source| self.read_error(source))
    }

    /// Before sending the reply `digest` (see [`digest`]) for the text `source`: records it
    /// in flight and says [`SendStart::Go`], or says why it must not be sent again. A
    /// record left in flight (by a crash) becomes unconfirmed here. On error nothing is
    /// recorded.
    pub fn blocking_begin_send(
        &self,
        source: &str,
        digest: &str,
    ) -> Result<SendStart, LedgerError> {
        self.write(|tx| {
            let found = send_state(tx, source, digest)?;
            let (start, store) = match found {
                Some(SendState::Sent) => (SendStart::AlreadySent, None),
                Some(SendState::Unconfirmed) => {
                    (SendStart::Unconfirmed { just_found: false }, None)
                }
                Some(SendState::InFlight) => (
                    SendStart::Unconfirmed { just_found: true },
                    Some(SendState::Unconfirmed),
                ),
                None => (SendStart::Go, Some(SendState::InFlight)),
            };
            if let Some(state) = store {
                store_send(tx, source, digest, state)?;
            }
            Ok(start)
        })
    }

    /// [`blocking_begin_send`](Ledger::blocking_begin_send) on the blocking pool.
    pub async fn begin_send(
        self: &Arc<Self>,
        source: &str,
        digest: &str,
    ) -> Result<SendStart, LedgerError> {
        let (source, digest) = (source.to_string(), digest.to_string());
        self.off_runtime(move |ledger| ledger.blocking_begin_send(&source, &digest))
            .await
    }

    /// Records how a send begun with [`begin_send`](Ledger::begin_send) ended.
    pub fn blocking_end_send(
        &self,
        source: &str,
        digest: &str,
        outcome: SendOutcome,
    ) -> Result<(), LedgerError> {
        // Relaxed: lost to a power cut, the record is back in flight, which counts as
        // unconfirmed and is never sent again; the text's finish commit syncs it anyway.
        let step = |tx: &Transaction<'_>| {
            let state = match outcome {
                SendOutcome::Sent => SendState::Sent,
                SendOutcome::Unknown => SendState::Unconfirmed,
                SendOutcome::NotSent => {
                    tx.prepare_cached("DELETE FROM sends WHERE source = ?1 AND digest = ?2")?
                        .execute([source, digest])?;
                    return Ok(());
                }
            };
            if send_state(tx, source, digest)? != Some(state) {
                store_send(tx, source, digest, state)?;
            }
            Ok(())
        };
        self.db
            .write_relaxed(step)
            .map_err(|source| LedgerError::Write {
                path: self.db.path().to_path_buf(),
                source,
            })
    }

    /// [`blocking_end_send`](Ledger::blocking_end_send) on the blocking pool.
    pub async fn end_send(
        self: &Arc<Self>,
        source: &str,
        digest: &str,
        outcome: SendOutcome,
    ) -> Result<(), LedgerError> {
        let (source, digest) = (source.to_string(), digest.to_string());
        self.off_runtime(move |ledger| ledger.blocking_end_send(&source, &digest, outcome))
            .await
    }

    /// How many replies of unfinished texts may or may not have been sent.
    pub fn unconfirmed_sends(&self) -> Result<usize, LedgerError> {
        let count: i64 = self
            .db
            .read(|c| {
                c.prepare_cached("SELECT COUNT(*) FROM sends WHERE state != 'sent'")?
                    .query_row([], |r| r.get(0))
            })
            .map_err(|source| self.read_error(source))?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Imports a ledger saved by an older version (`ledger.json`), in one transaction:
    /// its cursor (unless one is stored), claimed texts, finished guids (the newest of them,
    /// up to the window) and the send records of its claimed texts. Importing twice is
    /// harmless.
    pub fn blocking_import(
        &self,
        cursor: Option<Cursor>,
        claimed: &[IncomingMessage],
        finished: &[String],
        sends: &[SendRecord],
    ) -> Result<(), LedgerError> {
        let skip = finished.len().saturating_sub(self.finished_limit);
        let keep_cursor = self.cursor().is_some();
        let mut encoded = Vec::with_capacity(claimed.len());
        for message in claimed {
            encoded.push(serde_json::to_string(message).map_err(|e| self.serialise(e))?);
        }
        self.write(|tx| {
            for guid in &finished[skip..] {
                tx.prepare_cached("INSERT OR IGNORE INTO finished (guid) VALUES (?1)")?
                    .execute([guid])?;
            }
            let mut imported = HashSet::new();
            for (message, json) in claimed.iter().zip(&encoded) {
                if is_known(tx, &message.guid)? {
                    continue;
                }
                tx.prepare_cached(
                    "INSERT INTO claimed (guid, rowid, message) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![message.guid, message.rowid, json])?;
                imported.insert(message.guid.as_str());
            }
            for record in sends
                .iter()
                .filter(|r| imported.contains(r.source.as_str()))
            {
                store_send(tx, &record.source, &record.digest, record.state)?;
            }
            match (&cursor, keep_cursor) {
                (Some(cursor), false) => store_cursor(tx, cursor),
                _ => Ok(()),
            }
        })?;
        if !keep_cursor && cursor.is_some() {
            *crate::mutex::lock(&self.cursor) = cursor;
        }
        Ok(())
    }

    /// Runs `step` in one transaction of the state database.
    fn write<T>(
        &self,
        step: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        self.db.write(step).map_err(|source| LedgerError::Write {
            path: self.db.path().to_path_buf(),
            source,
        })
    }

    /// Runs a blocking step on the blocking pool.
    async fn off_runtime<T: Send + 'static>(
        self: &Arc<Self>,
        step: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = Arc::clone(self);
        tokio::task::spawn_blocking(move || step(&ledger))
            .await
            .unwrap_or_else(|join| {
                Err(LedgerError::Interrupted {
                    path: self.db.path().to_path_buf(),
                    reason: join.to_string(),
                })
            })
    }

    fn read_error(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError::Read {
            path: self.db.path().to_path_buf(),
            source,
        }
    }

    fn serialise(&self, source: serde_json::Error) -> LedgerError {
        LedgerError::Serialise {
            path: self.db.path().to_path_buf(),
            source,
        }
    }
}

fn exists(c: &rusqlite::Connection, sql: &str, key: &str) -> rusqlite::Result<bool> {
    Ok(c.prepare_cached(sql)?
        .query_row([key], |_| Ok(()))
        .optional()?
        .is_some())
}

fn is_known(c: &rusqlite::Connection, guid: &str) -> rusqlite::Result<bool> {
    Ok(exists(c, "SELECT 1 FROM finished WHERE guid = ?1", guid)?
        || exists(c, "SELECT 1 FROM claimed WHERE guid = ?1", guid)?)
}

fn send_state(
    c: &rusqlite::Connection,
    source: &str,
    digest: &str,
) -> rusqlite::Result<Option<SendState>> {
    let raw: Option<String> = c
        .prepare_cached("SELECT state FROM sends WHERE source = ?1 AND digest = ?2")?
        .query_row([source, digest], |r| r.get(0))
        .optional()?;
    Ok(raw.as_deref().map(SendState::parse))
}

fn store_send(
    c: &rusqlite::Connection,
    source: &str,
    digest: &str,
    state: SendState,
) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO sends (source, digest, state) VALUES (?1, ?2, ?3)")?
        .execute([source, digest, state.as_str()])?;
    Ok(())
}

fn store_cursor(c: &rusqlite::Connection, cursor: &Cursor) -> rusqlite::Result<()> {
    let json = serde_json::to_string(cursor)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    c.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
        .execute([CURSOR_KEY, &json])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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

    /// A ledger in `dir/state.db`; opening it again is a restart.
    fn open(dir: &Path) -> Ledger {
        let (db, moved) = StateDb::open(dir.join(crate::state::FILE)).unwrap();
        assert_eq!(moved, None);
        Ledger::open(Arc::new(db)).unwrap()
    }

    fn count(ledger: &Ledger, table: &str) -> i64 {
        ledger
            .db()
            .read(|c| c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)))
            .unwrap()
    }

    #[test]
    fn a_text_is_claimed_once() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(dir.path());
        assert_eq!(ledger.cursor(), None);
        let batch = vec![
            message(1, "a"),
            message(2, "b"),
            message(2, "b again, same guid"),
        ];

        let first = ledger.blocking_claim(&batch, cursor(2)).unwrap();
        assert_eq!(
            first,
            batch[..2].to_vec(),
            "a guid repeated in one batch is claimed once"
        );
        assert_eq!(ledger.blocking_claim(&batch, cursor(2)).unwrap(), vec![]);
        assert_eq!(
            ledger.blocking_claim(&batch[1..], cursor(3)).unwrap(),
            vec![]
        );
        assert_eq!(ledger.cursor(), Some(cursor(3)));
        assert!(ledger.is_known("GUID-0001").unwrap() && ledger.is_known("GUID-0002").unwrap());
        assert!(!ledger.is_known("GUID-0003").unwrap());
        assert_eq!(count(&ledger, "claimed"), 2);

        ledger.blocking_finish("GUID-0001").unwrap();
        let again = vec![message(1, "a"), message(3, "c")];
        assert_eq!(
            guids(&ledger.blocking_claim(&again, cursor(3)).unwrap()),
            vec!["GUID-0003"]
        );
        drop(ledger);
        assert_eq!(
            open(dir.path()).cursor(),
            Some(cursor(3)),
            "the cursor is stored"
        );
    }

    #[test]
    fn finished_texts_are_not_unfinished_after_a_restart_but_still_known() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(dir.path());
        ledger
            .blocking_claim(&[message(7, "x"), message(8, "y")], cursor(8))
            .unwrap();
        ledger.blocking_finish("GUID-0007").unwrap();
        ledger.blocking_finish("GUID-0007").unwrap(); // twice is harmless
        drop(ledger);

        let ledger = open(dir.path());
        assert_eq!(guids(&ledger.unfinished().unwrap()), vec!["GUID-0008"]);
        assert!(ledger.is_known("GUID-0007").unwrap());
        assert!(ledger.is_finished("GUID-0007").unwrap());
        assert!(!ledger.is_finished("GUID-0008").unwrap());
        assert_eq!(ledger.cursor(), Some(cursor(8)));
        assert_eq!(
            ledger
                .blocking_claim(&[message(7, "x")], cursor(8))
                .unwrap(),
            vec![]
        );
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
        "'); DROP TABLE claimed; --",
    ];

    #[test]
    fn claimed_texts_survive_a_crash_in_rowid_order() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(dir.path());
        let mut claimed = Vec::new();
        // Claimed over several batches, not in ROWID order (a retried read can do that).
        for (i, text) in TRICKY.iter().enumerate() {
            let rowid = 100 - i as i64 * 3;
            let batch = vec![message(rowid, text)];
            claimed.extend(ledger.blocking_claim(&batch, cursor(100)).unwrap());
        }
        assert_eq!(claimed.len(), TRICKY.len());
        // The process dies: no finish, no clean shutdown.
        drop(ledger);

        let ledger = open(dir.path());
        claimed.sort_by_key(|m| m.rowid);
        assert_eq!(ledger.unfinished().unwrap(), claimed);
        assert_eq!(ledger.cursor(), Some(cursor(100)));
    }

    #[test]
    fn advance_records_only_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = open(dir.path());
        let plain = Cursor {
            rowid: 42,
            date: None,
            mark: None,
        };
        ledger.blocking_advance(plain.clone()).unwrap();
        ledger.blocking_advance(plain.clone()).unwrap();
        drop(ledger);
        let ledger = open(dir.path());
        assert_eq!(ledger.cursor(), Some(plain));
        assert_eq!(ledger.unfinished().unwrap(), vec![]);
        let stored: String = ledger
            .db()
            .read(|c| {
                c.query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
                    r.get(0)
                })
            })
            .unwrap();
        assert_eq!(stored, r#"{"rowid":42,"date":null}"#);
    }

    #[test]
    fn only_the_most_recently_finished_guids_are_remembered() {
        let db = Arc::new(StateDb::in_memory());
        let ledger = Ledger::with_finished_limit(Arc::clone(&db), 3).unwrap();
        let batch: Vec<_> = (1..=5).map(|n| message(n, "t")).collect();
        ledger.blocking_claim(&batch, cursor(5)).unwrap();
        for m in &batch {
            ledger.blocking_finish(&m.guid).unwrap();
        }
        let known: Vec<bool> = batch
            .iter()
            .map(|m| ledger.is_known(&m.guid).unwrap())
            .collect();
        assert_eq!(known, vec![false, false, true, true, true]);
        assert_eq!(count(&ledger, "finished"), 3);
        assert_eq!(count(&ledger, "claimed"), 0);
        assert_eq!(FINISHED_LIMIT, 5_000);

        // The window stays fixed however many texts pass.
        for n in 6..=200 {
            ledger.blocking_finish(&format!("GUID-{n:04}")).unwrap();
        }
        assert_eq!(count(&ledger, "finished"), 3);
        assert!(ledger.is_known("GUID-0200").unwrap() && !ledger.is_known("GUID-0197").unwrap());
    }

    /// Installs a trigger that makes every write to `table` fail, as a full disk would.
    fn refuse_writes(ledger: &Ledger, table: &str) {
        ledger
            .db()
            .read(|c| {
                c.execute_batch(&format!(
                    "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} \
                     BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
                ))
            })
            .unwrap();
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let db = Arc::new(StateDb::in_memory());
        let ledger = Ledger::open(Arc::clone(&db)).unwrap();
        refuse_writes(&ledger, "meta");

        let err = ledger
            .blocking_claim(&[message(1, "a")], cursor(1))
            .unwrap_err();
        assert!(matches!(err, LedgerError::Write { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("could not save the message ledger") && text.contains("disk full"),
            "{text}"
        );
        assert!(
            !ledger.is_known("GUID-0001").unwrap(),
            "the claim was rolled back with the cursor"
        );
        assert_eq!(ledger.cursor(), None);
        assert!(ledger.blocking_advance(cursor(1)).is_err());
        assert_eq!(ledger.cursor(), None);

        db.read(|c| c.execute_batch("DROP TRIGGER refuse_meta"))
            .unwrap();
        assert_eq!(
            guids(
                &ledger
                    .blocking_claim(&[message(1, "a")], cursor(1))
                    .unwrap()
            ),
            vec!["GUID-0001"]
        );
        refuse_writes(&ledger, "finished");
        assert!(ledger.blocking_finish("GUID-0001").is_err());
        assert_eq!(
            guids(&ledger.unfinished().unwrap()),
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
        let ledger = open(dir.path());
        ledger
            .blocking_claim(&[message(1, "a"), message(2, "b")], cursor(2))
            .unwrap();
        let (saved, asked) = (digest("Saved to Tasks ✅"), digest("Which day?"));
        let begin = |l: &Ledger, s: &str, d: &str| l.blocking_begin_send(s, d).unwrap();

        assert_eq!(begin(&ledger, "GUID-0001", &saved), SendStart::Go);
        ledger
            .blocking_end_send("GUID-0001", &saved, SendOutcome::Sent)
            .unwrap();
        assert_eq!(begin(&ledger, "GUID-0001", &saved), SendStart::AlreadySent);
        // Another reply to the same text, and the same reply to another text, are new.
        assert_eq!(begin(&ledger, "GUID-0001", &asked), SendStart::Go);
        assert_eq!(begin(&ledger, "GUID-0002", &saved), SendStart::Go);
        ledger
            .blocking_end_send("GUID-0002", &saved, SendOutcome::NotSent)
            .unwrap();
        assert_eq!(
            begin(&ledger, "GUID-0002", &saved),
            SendStart::Go,
            "a send that certainly failed may be tried again"
        );
        ledger
            .blocking_end_send("GUID-0002", &saved, SendOutcome::Unknown)
            .unwrap();
        // The process dies with GUID-0001's second reply in flight.
        drop(ledger);

        let ledger = open(dir.path());
        assert_eq!(begin(&ledger, "GUID-0001", &saved), SendStart::AlreadySent);
        assert_eq!(
            begin(&ledger, "GUID-0001", &asked),
            SendStart::Unconfirmed { just_found: true }
        );
        assert_eq!(
            begin(&ledger, "GUID-0001", &asked),
            SendStart::Unconfirmed { just_found: false }
        );
        assert_eq!(
            begin(&ledger, "GUID-0002", &saved),
            SendStart::Unconfirmed { just_found: false }
        );
        assert_eq!(ledger.unconfirmed_sends().unwrap(), 2);
        assert_eq!(count(&ledger, "sends"), 3);

        ledger.blocking_finish("GUID-0001").unwrap();
        ledger.blocking_finish("GUID-0002").unwrap();
        assert_eq!(count(&ledger, "sends"), 0);
        assert_eq!(ledger.unconfirmed_sends().unwrap(), 0);
    }

    #[tokio::test]
    async fn the_async_steps_reach_the_database() {
        let ledger = Arc::new(Ledger::open(Arc::new(StateDb::in_memory())).unwrap());
        ledger
            .blocking_claim(&[message(1, "a")], cursor(1))
            .unwrap();
        let d = digest("Saved");
        assert_eq!(
            ledger.begin_send("GUID-0001", &d).await.unwrap(),
            SendStart::Go
        );
        ledger
            .end_send("GUID-0001", &d, SendOutcome::Sent)
            .await
            .unwrap();
        assert_eq!(
            ledger.begin_send("GUID-0001", &d).await.unwrap(),
            SendStart::AlreadySent
        );
        ledger.finish("GUID-0001").await.unwrap();
        assert!(ledger.is_finished("GUID-0001").unwrap());
        assert_eq!(count(&ledger, "sends"), 0);
        refuse_writes(&ledger, "finished");
        let err = ledger.finish("GUID-0002").await.unwrap_err();
        assert!(
            matches!(err, LedgerError::Write { .. }),
            "typed to the caller: {err}"
        );
    }

    #[test]
    fn an_import_is_idempotent_and_keeps_a_stored_cursor() {
        let ledger = Ledger::with_finished_limit(Arc::new(StateDb::in_memory()), 2).unwrap();
        let claimed = [message(3, "c"), message(4, "d")];
        let finished = [
            "GUID-0001".to_string(),
            "GUID-0002".into(),
            "GUID-0003".into(),
        ];
        let sends = [
            SendRecord {
                source: "GUID-0004".into(),
                digest: "01".into(),
                state: SendState::InFlight,
            },
            SendRecord {
                source: "GUID-0009".into(),
                digest: "02".into(),
                state: SendState::Sent,
            },
        ];
        for _ in 0..2 {
            ledger
                .blocking_import(Some(cursor(4)), &claimed, &finished, &sends)
                .unwrap();
        }
        // GUID-0003 is both finished and claimed in the file: finished wins.
        assert_eq!(guids(&ledger.unfinished().unwrap()), vec!["GUID-0004"]);
        assert!(!ledger.is_known("GUID-0001").unwrap(), "beyond the window");
        assert!(ledger.is_finished("GUID-0002").unwrap());
        assert_eq!(
            ledger.blocking_begin_send("GUID-0004", "01").unwrap(),
            SendStart::Unconfirmed { just_found: true }
        );
        assert_eq!(
            count(&ledger, "sends"),
            1,
            "records of texts not claimed are dropped"
        );
        assert_eq!(ledger.cursor(), Some(cursor(4)));
        ledger
            .blocking_import(Some(cursor(1)), &[], &[], &[])
            .unwrap();
        assert_eq!(
            ledger.cursor(),
            Some(cursor(4)),
            "a stored cursor is newer than a file's"
        );
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
        let ledger = open(dir.path());
        let marked = Cursor {
            mark: Some(Mark {
                rowid: 9,
                guid: "GUID-0009".into(),
            }),
            ..cursor(10)
        };
        ledger.blocking_advance(marked.clone()).unwrap();
        drop(ledger);
        assert_eq!(open(dir.path()).cursor(), Some(marked));
    }
}
