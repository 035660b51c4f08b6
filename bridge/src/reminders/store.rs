//! What the bridge keeps about reminders in `state.db`: the chat each note's reminder was set
//! from, and each reminder's send (in flight, then sent or unconfirmed).
//!
//! Invariants: both tables are created here (`CREATE TABLE IF NOT EXISTS`) on the shared
//! [`StateDb`]; a send is recorded in flight in its own committed transaction before the
//! text goes out, so a bridge killed at any moment finds it and never sends it again; the
//! chat is keyed by the note's vault path and follows the note when the bridge moves it.

use std::sync::Arc;

use crate::chatdb::Chat;
use crate::state::StateDb;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS reminder_chats (
        note TEXT PRIMARY KEY, due TEXT NOT NULL, chat TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS reminder_sends (key TEXT PRIMARY KEY, state TEXT NOT NULL);
";

/// Where a reminder's send stands: as a reply's, in the ledger.
pub use crate::ledger::SendState;

/// What [`Store::claim`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Never sent: now recorded in flight, to be sent.
    New,
    /// Recorded before, in this state: not sent again.
    Seen(SendState),
}

/// The reminders' tables in `state.db`. Clones share the database.
#[derive(Clone, Debug)]
pub struct Store {
    db: Arc<StateDb>,
}

impl Store {
    /// The store on `db`, creating its tables.
    pub fn open(db: Arc<StateDb>) -> rusqlite::Result<Store> {
        db.write(|tx| tx.execute_batch(SCHEMA))?;
        Ok(Store { db })
    }

    /// Records that the reminder of `note` (due `due`, as written) goes to `chat`.
    pub fn set_chat(&self, note: &str, due: &str, chat: &Chat) -> rusqlite::Result<()> {
        let chat = serde_json::to_string(chat).expect("a chat serialises");
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO reminder_chats (note, due, chat) VALUES (?1, ?2, ?3)
                 ON CONFLICT (note) DO UPDATE SET due = ?2, chat = ?3",
                (note, due, &chat),
            )
            .map(drop)
        })
    }

    /// The chat the reminder of `note` goes to. A note moved outside the bridge (in
    /// Obsidian) is found by its due time when its path is unknown.
    pub fn chat(&self, note: &str, due: &str) -> rusqlite::Result<Option<Chat>> {
        let json: Option<String> = self.db.read(|conn| {
            let by_path = conn
                .query_row(
                    "SELECT chat FROM reminder_chats WHERE note = ?1",
                    [note],
                    |row| row.get(0),
                )
                .map(Some)
                .or_else(none_when_no_rows)?;
            match by_path {
                Some(json) => Ok(Some(json)),
                None => conn
                    .query_row(
                        "SELECT chat FROM reminder_chats WHERE due = ?1 ORDER BY note LIMIT 1",
                        [due],
                        |row| row.get(0),
                    )
                    .map(Some)
                    .or_else(none_when_no_rows),
            }
        })?;
        Ok(json.and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// The note at `from` is now at `to`.
    pub fn moved(&self, from: &str, to: &str) -> rusqlite::Result<()> {
        self.db.write(|tx| {
            tx.execute(
                "UPDATE OR REPLACE reminder_chats SET note = ?2 WHERE note = ?1",
                (from, to),
            )
            .map(drop)
        })
    }

    /// Records the send of reminder `key` in flight, unless it was recorded before.
    pub fn claim(&self, key: &str) -> rusqlite::Result<Claim> {
        self.db.write(|tx| {
            let seen: Option<String> = tx
                .query_row(
                    "SELECT state FROM reminder_sends WHERE key = ?1",
                    [key],
                    |row| row.get(0),
                )
                .map(Some)
                .or_else(none_when_no_rows)?;
            if let Some(state) = seen {
                return Ok(Claim::Seen(SendState::parse(&state)));
            }
            tx.execute(
                "INSERT INTO reminder_sends (key, state) VALUES (?1, ?2)",
                (key, SendState::InFlight.as_str()),
            )?;
            Ok(Claim::New)
        })
    }

    /// Records how the send of `key` ended.
    pub fn settle(&self, key: &str, state: SendState) -> rusqlite::Result<()> {
        self.db.write(|tx| {
            tx.execute(
                "UPDATE reminder_sends SET state = ?2 WHERE key = ?1",
                (key, state.as_str()),
            )
            .map(drop)
        })
    }

    /// Forgets the claim on `key`: the send certainly did not happen, so it may be tried
    /// again.
    pub fn release(&self, key: &str) -> rusqlite::Result<()> {
        self.db.write(|tx| {
            tx.execute("DELETE FROM reminder_sends WHERE key = ?1", [key])
                .map(drop)
        })
    }
}

fn none_when_no_rows<T>(err: rusqlite::Error) -> rusqlite::Result<Option<T>> {
    match err {
        rusqlite::Error::QueryReturnedNoRows => Ok(None),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(handle: &str) -> Chat {
        Chat {
            guid: format!("iMessage;-;{handle}"),
            identifier: handle.into(),
            is_group: false,
        }
    }

    #[test]
    fn the_chat_follows_the_note_and_is_found_by_due_when_moved_elsewhere() {
        let store = Store::open(Arc::new(StateDb::in_memory())).unwrap();
        let due = "2026-12-03T17:00:00+01:00";
        store.set_chat("Tasks/a.md", due, &chat("+1555")).unwrap();
        store
            .set_chat("Tasks/b.md", "2026-12-04T09:00:00+01:00", &chat("+1666"))
            .unwrap();
        assert_eq!(store.chat("Tasks/a.md", due).unwrap(), Some(chat("+1555")));
        store.moved("Tasks/a.md", "Archive/a.md").unwrap();
        assert_eq!(
            store.chat("Archive/a.md", "x").unwrap(),
            Some(chat("+1555"))
        );
        // Moved in Obsidian: the path is new, the due is the same.
        assert_eq!(
            store.chat("Projects/a.md", due).unwrap(),
            Some(chat("+1555"))
        );
        assert_eq!(
            store.chat("Projects/c.md", "2027-01-01T00:00:00Z").unwrap(),
            None
        );
        // Set again from another chat: the new one wins.
        store.set_chat("Archive/a.md", due, &chat("+1777")).unwrap();
        assert_eq!(
            store.chat("Archive/a.md", due).unwrap(),
            Some(chat("+1777"))
        );
    }

    #[test]
    fn a_send_is_claimed_once_and_a_release_allows_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let open = || Store::open(Arc::new(StateDb::open(path.clone()).unwrap().0)).unwrap();
        let store = open();
        assert_eq!(store.claim("k1").unwrap(), Claim::New);
        // A new process (after kill -9) sees the claim.
        let store = open();
        assert_eq!(store.claim("k1").unwrap(), Claim::Seen(SendState::InFlight));
        store.settle("k1", SendState::Sent).unwrap();
        assert_eq!(store.claim("k1").unwrap(), Claim::Seen(SendState::Sent));
        assert_eq!(store.claim("k2").unwrap(), Claim::New);
        store.release("k2").unwrap();
        assert_eq!(store.claim("k2").unwrap(), Claim::New);
        store.settle("k2", SendState::Unconfirmed).unwrap();
        assert_eq!(
            open().claim("k2").unwrap(),
            Claim::Seen(SendState::Unconfirmed)
        );
    }
}
