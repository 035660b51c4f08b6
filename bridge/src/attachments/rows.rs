//! Reads a message's attachment rows from `chat.db` (`message_attachment_join` →
//! `attachment`), in the order Messages joined them.
//!
//! Invariants: read-only, through the caller's connection; any column may hold anything (a
//! wrong type reads as absent, never a panic); a `filename` starting with `~` is under the
//! user's home; hidden attachments (`hide_attachment = 1`, e.g. a link preview's thumbnail)
//! are not returned.
//!
//! `transfer_state` is the `IMFileTransferState` of IMCore, the private framework Messages
//! is built on (no Apple documentation; the values as the Barcelona bridge reads them in
//! `IMFileTransfer+StateBound.swift`: -1 archiving, 0 waiting for accept, 1 accepted,
//! 2 preparing, 3 transferring, 4 finalizing, 5 finished, 6 error, 7 recoverable error).

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};
use serde::{Deserialize, Serialize};

/// Most attachments read for one message; Messages allows far fewer per text.
pub const MAX_PER_MESSAGE: usize = 100;

/// One attachment row of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// `attachment.guid`.
    pub guid: String,
    /// Where the file is (`filename`, `~` expanded), when Messages has named it yet.
    pub path: Option<PathBuf>,
    /// `mime_type`, e.g. `image/jpeg`.
    pub mime_type: Option<String>,
    /// `uti`, e.g. `public.heic`.
    pub uti: Option<String>,
    /// `transfer_name`: the name the sender's file had.
    pub transfer_name: Option<String>,
    /// `total_bytes`: the size the file has when complete (0 when unknown).
    pub total_bytes: u64,
    /// `transfer_state`, as it stood when the text was read.
    #[serde(default)]
    pub transfer: Transfer,
}

/// Where Messages' download of an attachment stands (`transfer_state`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transfer {
    /// Finished (5).
    Finished,
    /// Failed for good (6): the file will not come without the user's doing.
    Failed,
    /// Any other state, or none recorded: it may still come.
    #[default]
    Pending,
}

impl Transfer {
    /// The state of `transfer_state` value `state`.
    pub fn of(state: Option<i64>) -> Transfer {
        match state {
            Some(5) => Transfer::Finished,
            Some(6) => Transfer::Failed,
            _ => Transfer::Pending,
        }
    }
}

impl Attachment {
    /// The name to show for it: the transfer name, else the file's name, else its guid.
    pub fn display_name(&self) -> String {
        self.transfer_name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .or_else(|| {
                self.path
                    .as_deref()
                    .and_then(Path::file_name)
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| self.guid.clone())
    }
}

/// How often a wait that reads `chat.db` again (for a file's row, a voice transcript) looks
/// without a file event: the watch's safety net, bounded by the wait's limit.
pub const SAFETY_POLL: std::time::Duration = std::time::Duration::from_secs(5);

/// `chat_db` opened read-only for a wait that reads rows again; `None` (logged) when it
/// cannot be opened, so the wait goes on with what it has.
pub fn open_read_only(chat_db: &Path) -> Option<Connection> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    match Connection::open_with_flags(chat_db, flags) {
        Ok(conn) => {
            // A WAL reader never waits for Messages' writer; this is only for a checkpoint.
            let _ = conn.busy_timeout(std::time::Duration::from_millis(100));
            Some(conn)
        }
        Err(err) => {
            tracing::warn!(cause = %err, "cannot open chat.db to read a waiting text's rows again");
            None
        }
    }
}

/// The attachment query; table and column names as Messages writes them.
const SQL: &str = "SELECT a.guid, a.filename, a.mime_type, a.uti, a.transfer_name, \
                   a.total_bytes, a.hide_attachment, a.transfer_state \
                   FROM message_attachment_join AS j \
                   JOIN attachment AS a ON a.ROWID = j.attachment_id \
                   WHERE j.message_id = ?1 ORDER BY j.ROWID LIMIT ?2";

/// The visible attachments of message `rowid`; `home` expands a leading `~`.
pub fn read(
    conn: &Connection,
    rowid: i64,
    home: Option<&Path>,
) -> rusqlite::Result<Vec<Attachment>> {
    let mut stmt = conn.prepare_cached(SQL)?;
    let limit = i64::try_from(MAX_PER_MESSAGE).unwrap_or(i64::MAX);
    let mut rows = stmt.query((rowid, limit))?;
    let mut found = Vec::new();
    while let Some(row) = rows.next()? {
        if let Some(attachment) = from_row(row, home) {
            found.push(attachment);
        }
    }
    Ok(found)
}

/// One row as an attachment; `None` for a hidden one or one without a guid.
fn from_row(row: &Row<'_>, home: Option<&Path>) -> Option<Attachment> {
    if integer(row, 6).unwrap_or(0) != 0 {
        return None;
    }
    Some(Attachment {
        guid: text(row, 0)?,
        path: text(row, 1)
            .filter(|f| !f.is_empty())
            .map(|f| expand(&f, home)),
        mime_type: text(row, 2).filter(|m| !m.is_empty()),
        uti: text(row, 3).filter(|u| !u.is_empty()),
        transfer_name: text(row, 4),
        total_bytes: integer(row, 5)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        transfer: Transfer::of(integer(row, 7)),
    })
}

/// `~/Library/…` under `home`; other paths as they are.
pub fn expand(filename: &str, home: Option<&Path>) -> PathBuf {
    match (filename.strip_prefix('~'), home) {
        (Some(rest), Some(home)) => home.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(filename),
    }
}

fn integer(row: &Row<'_>, idx: usize) -> Option<i64> {
    match row.get_ref(idx).ok()? {
        ValueRef::Integer(i) => Some(i),
        _ => None,
    }
}

fn text(row: &Row<'_>, idx: usize) -> Option<String> {
    match row.get_ref(idx).ok()? {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rusqlite::types::Value;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE attachment (ROWID INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT, \
             filename TEXT, uti TEXT, mime_type TEXT, transfer_name TEXT, total_bytes INTEGER, \
             hide_attachment INTEGER DEFAULT 0, transfer_state INTEGER DEFAULT 0); \
             CREATE TABLE message_attachment_join (message_id INTEGER, attachment_id INTEGER);",
        )
        .unwrap();
        conn
    }

    fn add(conn: &Connection, message: i64, values: [Value; 8]) {
        conn.execute(
            "INSERT INTO attachment (guid, filename, mime_type, uti, transfer_name, total_bytes, \
             hide_attachment, transfer_state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params_from_iter(values),
        )
        .unwrap();
        let id = conn.last_insert_rowid();
        conn.execute(
            "INSERT INTO message_attachment_join VALUES (?1, ?2)",
            (message, id),
        )
        .unwrap();
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn rows_in_join_order_home_expanded_hidden_left_out() {
        let conn = db();
        let row = |guid: &str, file: &str, hidden: i64, state: Value| {
            [
                t(guid),
                t(file),
                t("image/jpeg"),
                t("public.jpeg"),
                t("IMG_1.JPG"),
                Value::Integer(42),
                Value::Integer(hidden),
                state,
            ]
        };
        let finished = || Value::Integer(5);
        add(
            &conn,
            7,
            row("b", "~/Library/Messages/Attachments/b.jpg", 0, finished()),
        );
        add(&conn, 7, row("a", "/abs/a.jpg", 0, Value::Integer(6)));
        add(&conn, 7, row("thumb", "~/x.png", 1, finished()));
        add(&conn, 8, row("other", "~/y.png", 0, finished()));
        add(&conn, 7, row("c", "~/c.jpg", 0, Value::Integer(3)));
        add(&conn, 7, row("d", "~/d.jpg", 0, Value::Null));
        let found = read(&conn, 7, Some(Path::new("/home/me"))).unwrap();
        let guids: Vec<&str> = found.iter().map(|a| a.guid.as_str()).collect();
        assert_eq!(guids, ["b", "a", "c", "d"]);
        let states: Vec<Transfer> = found.iter().map(|a| a.transfer).collect();
        assert_eq!(
            states,
            [
                Transfer::Finished,
                Transfer::Failed,
                Transfer::Pending,
                Transfer::Pending
            ]
        );
        assert_eq!(
            found[0].path.as_deref(),
            Some(Path::new("/home/me/Library/Messages/Attachments/b.jpg"))
        );
        assert_eq!(found[1].path.as_deref(), Some(Path::new("/abs/a.jpg")));
        assert_eq!(found[0].total_bytes, 42);
        assert_eq!(found[0].display_name(), "IMG_1.JPG");
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            ".{0,40}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Blob),
        ]
    }

    proptest! {
        #[test]
        fn garbage_rows_never_panic(rows in proptest::collection::vec(
            proptest::array::uniform8(any_value()), 0..6)) {
            let conn = db();
            for values in rows {
                add(&conn, 1, values);
            }
            let found = read(&conn, 1, Some(Path::new("/h"))).unwrap();
            prop_assert!(found.len() <= MAX_PER_MESSAGE);
        }
    }
}
