//! Reads the bridge's state database (`<data dir>/state.db`) as a test inspects it:
//! read-only, so a test never checkpoints or changes what the bridge finds at its next
//! start (a read-only connection does not checkpoint on close:
//! <https://www.sqlite.org/wal.html#readonly>).

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

/// The database's name in the data directory.
pub const FILE: &str = "state.db";

/// What the ledger and the budget hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Guids of the claimed, unfinished texts, in ROWID order.
    pub claimed: Vec<String>,
    /// Guids of the finished texts remembered, oldest first.
    pub finished: Vec<String>,
    /// Reply records: (source guid, state).
    pub sends: Vec<(String, String)>,
    /// The cursor's ROWID, if one is stored.
    pub cursor: Option<i64>,
    /// Today's budget row: (date, used, notified).
    pub budget: Option<(String, u64, bool)>,
}

fn open(data_dir: &Path) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(data_dir.join(FILE), flags)?;
    conn.busy_timeout(Duration::from_secs(2))?;
    Ok(conn)
}

fn column(conn: &Connection, sql: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(sql)?;
    stmt.query_map([], |r| r.get(0))?.collect()
}

/// Reads the state; `None` while the database does not exist or is not set up yet.
pub fn read(data_dir: &Path) -> Option<Snapshot> {
    if !data_dir.join(FILE).exists() {
        return None;
    }
    let conn = open(data_dir).ok()?;
    let claimed = column(&conn, "SELECT guid FROM claimed ORDER BY rowid, guid").ok()?;
    let finished = column(&conn, "SELECT guid FROM finished ORDER BY seq").ok()?;
    let mut stmt = conn
        .prepare("SELECT source, state FROM sends ORDER BY source, digest")
        .ok()?;
    let sends = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .ok()?
        .collect::<rusqlite::Result<_>>()
        .ok()?;
    let cursor: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'cursor'", [], |r| {
            r.get(0)
        })
        .optional()
        .ok()?;
    let cursor = cursor.map(|json| {
        let value: serde_json::Value = serde_json::from_str(&json).expect("the cursor is JSON");
        value["rowid"].as_i64().expect("the cursor has a rowid")
    });
    let budget = conn
        .query_row("SELECT date, used, notified FROM budget", [], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64, r.get(2)?))
        })
        .optional()
        .ok()?;
    Some(Snapshot {
        claimed,
        finished,
        sends,
        cursor,
        budget,
    })
}

/// Reads the state, which must be there.
pub fn snapshot(data_dir: &Path) -> Snapshot {
    read(data_dir).unwrap_or_else(|| panic!("no readable state database in {}", data_dir.display()))
}

/// Whether the database (if it exists) is whole: SQLite's own `integrity_check`.
pub fn check_integrity(data_dir: &Path) -> Result<(), String> {
    if !data_dir.join(FILE).exists() {
        return Ok(());
    }
    let conn = open(data_dir).map_err(|e| format!("state.db does not open: {e}"))?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| format!("state.db integrity check failed to run: {e}"))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(format!("state.db is damaged: {verdict}"))
    }
}
