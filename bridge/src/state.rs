//! The state database, `state.db` in the data directory: the message ledger and the token
//! budget, written one small transaction per step instead of whole files.
//!
//! Invariants: the database is in WAL mode with `synchronous=FULL`, so each committed
//! transaction is durable once `commit` returns (SQLite syncs the write-ahead log at every
//! commit in that mode: <https://www.sqlite.org/pragma.html#pragma_synchronous>) and a
//! `kill -9` at any point leaves the last committed state; one connection, behind one
//! `std::sync::Mutex`, serialises every reader and writer (sections are single SQL steps,
//! never held across an `.await`). The file is created 0600 before SQLite opens it; SQLite
//! gives its `-wal` and `-shm` files the database's permissions (`findCreateFileMode` in
//! SQLite's `os_unix.c`). A file that is not a database is moved aside and reported, never
//! silently replaced. The API is blocking; the stores built on it ([`crate::ledger`],
//! [`crate::limits::Budget`]) offer async methods that run it on the blocking pool.
//!
//! `sessions.json` is not in here: it is the product's documented, user-readable format
//! (see [`crate::sessions`]).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::persist::{self, MovedAside, StateFile};

/// The database's name inside the data directory.
pub const FILE: &str = "state.db";

/// The schema version, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// The tables. `finished.seq` orders the finished window (oldest first); `claimed.message`
/// and `meta.value` hold JSON.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS claimed (
        guid TEXT PRIMARY KEY, rowid INTEGER NOT NULL, message TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS finished (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, guid TEXT NOT NULL UNIQUE);
    CREATE TABLE IF NOT EXISTS sends (
        source TEXT NOT NULL, digest TEXT NOT NULL, state TEXT NOT NULL,
        PRIMARY KEY (source, digest));
    CREATE TABLE IF NOT EXISTS budget (
        id INTEGER PRIMARY KEY CHECK (id = 1), date TEXT NOT NULL, used INTEGER NOT NULL,
        notified INTEGER NOT NULL);
";

/// Why the state database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite refused to open or set up the file.
    #[error("could not open the state database {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file could not be created, or an unreadable one could not be moved aside.
    #[error("could not prepare the state database {path}: {source}")]
    File {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file was written by a newer version of the bridge.
    #[error(
        "the state database {path} has schema version {found}; this bridge knows {SCHEMA_VERSION}"
    )]
    Newer {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
    },
}

/// The open state database.
#[derive(Debug)]
pub struct StateDb {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl StateDb {
    /// Opens (or creates) the database at `path`. A file that is not a database is moved
    /// aside, reported, and a new one started.
    pub fn open(path: PathBuf) -> Result<(StateDb, Option<MovedAside>), StateError> {
        let file_err = |source| StateError::File {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            persist::create_private_dir_all(dir).map_err(file_err)?;
        }
        persist::private(std::fs::OpenOptions::new().append(true).create(true))
            .open(&path)
            .map_err(file_err)?;
        match connect(&path) {
            Ok(conn) => Ok((StateDb::new(path, conn), None)),
            Err(StateError::Open { source, .. }) if is_not_a_database(&source) => {
                let reason = source.to_string();
                for side in ["-wal", "-shm"] {
                    let extra = PathBuf::from(format!("{}{side}", path.display()));
                    if extra.exists() {
                        persist::move_aside(&extra).map_err(file_err)?;
                    }
                }
                let moved = persist::set_aside(&path, StateFile::StateDatabase, reason)
                    .map_err(file_err)?;
                let conn = connect(&path)?;
                Ok((StateDb::new(path, conn), Some(moved)))
            }
            Err(err) => Err(err),
        }
    }

    /// An in-memory database, for tests of the stores built on it.
    pub fn in_memory() -> StateDb {
        let conn = Connection::open_in_memory().expect("in-memory SQLite opens");
        conn.execute_batch(SCHEMA).expect("schema applies");
        StateDb::new(PathBuf::from(":memory:"), conn)
    }

    fn new(path: PathBuf, conn: Connection) -> StateDb {
        StateDb {
            path,
            conn: Mutex::new(conn),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `step` in one transaction: committed (durably) when it returns `Ok`, rolled
    /// back otherwise.
    pub fn write<T>(
        &self,
        step: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = step(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `step` in one transaction committed without its own fsync. In WAL mode such a
    /// commit survives a crash of the process, and a power cut once any later full commit
    /// (or checkpoint) has synced the log, which covers every frame before it ("WAL mode is
    /// always consistent with synchronous=NORMAL, but WAL mode does lose durability":
    /// <https://www.sqlite.org/pragma.html#pragma_synchronous>). For records whose loss on a
    /// power cut is harmless because a full commit of the same text follows (a send's end,
    /// the tokens spent).
    pub fn write_relaxed<T>(
        &self,
        step: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut conn = self.lock();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let result: rusqlite::Result<T> = (|| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = step(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        let restored = conn.pragma_update(None, "synchronous", "FULL");
        let out = result?;
        restored?;
        Ok(out)
    }

    /// Runs `query` on the connection (no transaction: one statement reads consistently).
    pub fn read<T>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        query(&self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        crate::mutex::lock(&self.conn)
    }
}

/// Opens the file and sets it up: WAL, full sync, the schema.
fn connect(path: &Path) -> Result<Connection, StateError> {
    let open = |source| StateError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(open)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(path = ?path, mode, "the state database is not in WAL mode");
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open)?;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(open)?;
    if found > SCHEMA_VERSION {
        return Err(StateError::Newer {
            path: path.to_path_buf(),
            found,
        });
    }
    conn.execute_batch(SCHEMA).map_err(open)?;
    if found < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(open)?;
    }
    Ok(conn)
}

fn is_not_a_database(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(db: &StateDb) -> (String, i64) {
        db.read(|c| {
            let mode = c.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            let sync = c.pragma_query_value(None, "synchronous", |r| r.get(0))?;
            Ok((mode, sync))
        })
        .unwrap()
    }

    #[test]
    fn a_new_database_is_wal_with_full_sync_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(FILE);
        let (db, moved) = StateDb::open(path.clone()).unwrap();
        assert!(moved.is_none());
        // synchronous: 2 is FULL.
        assert_eq!(journal(&db), ("wal".to_string(), 2));
        db.write(|tx| tx.execute("INSERT INTO meta VALUES ('k', 'v')", []))
            .unwrap();
        drop(db);
        let (db, _) = StateDb::open(path.clone()).unwrap();
        let value: String = db
            .read(|c| c.query_row("SELECT value FROM meta WHERE key = 'k'", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(value, "v");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(
                mode(&PathBuf::from(format!("{}-wal", path.display()))),
                0o600
            );
        }
    }

    #[test]
    fn a_relaxed_step_is_kept_and_full_sync_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (db, _) = StateDb::open(path.clone()).unwrap();
        db.write_relaxed(|tx| tx.execute("INSERT INTO meta VALUES ('k', 'relaxed')", []))
            .unwrap();
        assert_eq!(journal(&db).1, 2, "FULL again for the next step");
        let failed = db.write_relaxed(|tx| tx.execute("INSERT INTO meta VALUES ('k', 'x')", []));
        assert!(failed.is_err());
        assert_eq!(journal(&db).1, 2, "FULL again after a failed step too");
        drop(db);
        let (db, _) = StateDb::open(path).unwrap();
        let value: String = db
            .read(|c| c.query_row("SELECT value FROM meta WHERE key = 'k'", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(value, "relaxed");
    }

    #[test]
    fn a_failed_step_is_rolled_back() {
        let db = StateDb::in_memory();
        let err = db.write(|tx| {
            tx.execute("INSERT INTO meta VALUES ('a', '1')", [])?;
            tx.execute("INSERT INTO meta VALUES ('a', '2')", [])
        });
        assert!(err.is_err(), "the primary key refuses the second row");
        let rows: i64 = db
            .read(|c| c.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let junk =
            b"this is not an SQLite database, it is a sentence long enough to read".repeat(20);
        std::fs::write(&path, &junk).unwrap();
        let (db, moved) = StateDb::open(path.clone()).unwrap();
        let moved = moved.expect("moved aside");
        assert_eq!(std::fs::read(&moved.moved_to).unwrap(), junk);
        let sentence = moved.to_string();
        assert!(
            sentence.starts_with("state database did not parse (")
                && sentence.contains("; kept as "),
            "{sentence}"
        );
        assert_eq!(journal(&db).0, "wal");
    }

    #[test]
    fn a_newer_schema_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        drop(StateDb::open(path.clone()).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 9).unwrap();
        drop(conn);
        let err = StateDb::open(path).unwrap_err();
        assert!(matches!(err, StateError::Newer { found: 9, .. }), "{err}");
    }
}
