//! The index on disk: one SQLite database with an FTS5 table, in the data directory.
//!
//! Why SQLite FTS5: it is already in the tree (`rusqlite` with the bundled SQLite 3.50, built
//! with `SQLITE_ENABLE_FTS5`: libsqlite3-sys-0.35.0/build.rs:132), so no new dependency; it
//! is one file, safe against a process crash (WAL), and ranks with BM25 per column.
//!
//! Invariants: the FTS table is contentless (`content=''`, `contentless_delete=1`): it keeps
//! only the words, and snippets come from the note itself; every note has one row in `notes`
//! and one in `fts` under the same id, changed together in one transaction; the schema's
//! version is `PRAGMA user_version`, and a file of another version is not used.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use super::text::{Terms, spaced};
use super::walk::Stamp;
use super::{Filter, note::Parsed};

/// Bump when the schema or what is indexed changes: an older file is then rebuilt.
const VERSION: i64 = 1;

/// BM25 weights of the columns `title`, `tags`, `body`: a word in the title counts most.
/// FTS5's `bm25()` takes one weight per column, in order, and better matches get lower
/// values (<https://sqlite.org/fts5.html#the_bm25_function>).
const RANKING: &str = "bm25(fts, 10.0, 5.0, 1.0)";

/// Extra candidates ranked before recency breaks ties among the best.
const TIE_ROOM: usize = 50;

const SCHEMA: &str = "
    CREATE TABLE notes (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        folder TEXT NOT NULL,
        title TEXT NOT NULL,
        tags TEXT NOT NULL,
        tag_key TEXT NOT NULL,
        created TEXT,
        sort_time INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        size INTEGER NOT NULL
    );
    CREATE VIRTUAL TABLE fts USING fts5(
        title, tags, body,
        content = '', contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 2'
    );
";

/// A row of a search's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Vault-relative path.
    pub path: String,
    /// Title as indexed.
    pub title: String,
    /// Tags as indexed.
    pub tags: Vec<String>,
    /// `created` as written.
    pub created: Option<String>,
}

/// Why the index file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (a corrupt or truncated file shows up here).
    #[error("search index {path}: {source}")]
    Sqlite {
        /// The index file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The file is from another version, or failed its check.
    #[error("search index {path}: {reason}")]
    Unusable {
        /// The index file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file went away (or was replaced) under the open index.
    #[error("search index {path} was removed")]
    Gone {
        /// The index file.
        path: PathBuf,
    },
}

/// The open index.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    identity: Option<FileId>,
}

type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.len(), 0))
}

impl Store {
    /// Opens the index at `path`, creating it when missing. A file that fails SQLite's
    /// `quick_check` or has another version is an error: the caller removes it and builds
    /// anew.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let sqlite = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        // Derived data, never synced: with `synchronous=OFF` a process crash still loses
        // nothing committed, and only an OS crash or power cut may damage the file
        // (sqlite.org/pragma.html#pragma_synchronous) — which the check below finds, and the
        // index is then rebuilt from the notes. The texts' own state is synced in state.db.
        conn.pragma_update(None, "synchronous", "OFF")
            .map_err(sqlite)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(sqlite)?;
        if check != "ok" {
            return Err(StoreError::Unusable {
                path: path.to_path_buf(),
                reason: format!("check failed: {check}"),
            });
        }
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite)?;
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(sqlite)?;
        match (version, tables) {
            (0, 0) => {
                conn.execute_batch(SCHEMA).map_err(sqlite)?;
                conn.pragma_update(None, "user_version", VERSION)
                    .map_err(sqlite)?;
            }
            (VERSION, _) => {}
            (other, _) => {
                return Err(StoreError::Unusable {
                    path: path.to_path_buf(),
                    reason: format!("version {other}, not {VERSION}"),
                });
            }
        }
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            identity: file_id(path),
        })
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Fails when the file was deleted or replaced since it was opened.
    pub fn check_still_there(&self) -> Result<(), StoreError> {
        if file_id(&self.path) == self.identity {
            Ok(())
        } else {
            Err(StoreError::Gone {
                path: self.path.clone(),
            })
        }
    }

    /// Every indexed note's path and stamp.
    pub fn stamps(&self) -> Result<HashMap<String, Stamp>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, mtime_ns, size FROM notes")
            .map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Stamp {
                        mtime_ns: r.get(1)?,
                        size: r.get(2)?,
                    },
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// Applies `changes` in one transaction: `Some` puts the note, `None` removes it.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(sqlite)?;
        for change in changes {
            let old: Option<i64> = tx
                .query_row(
                    "SELECT id FROM notes WHERE path = ?1",
                    [&change.path],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sqlite)?;
            if let Some(id) = old {
                tx.execute("DELETE FROM fts WHERE rowid = ?1", [id])
                    .map_err(sqlite)?;
                tx.execute("DELETE FROM notes WHERE id = ?1", [id])
                    .map_err(sqlite)?;
            }
            let Some((stamp, note)) = &change.note else {
                continue;
            };
            let folder = change.path.split('/').next().unwrap_or_default();
            let tags = note.tags.join("\n");
            tx.execute(
                "INSERT INTO notes (path, folder, title, tags, tag_key, created, sort_time, \
                 mtime_ns, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    change.path,
                    folder,
                    note.title,
                    tags,
                    tag_key(&note.tags),
                    note.created,
                    sort_time(note.created.as_deref(), stamp),
                    stamp.mtime_ns,
                    stamp.size,
                ],
            )
            .map_err(sqlite)?;
            tx.execute(
                "INSERT INTO fts (rowid, title, tags, body) VALUES (last_insert_rowid(), ?1, ?2, ?3)",
                params![spaced(&note.title), spaced(&note.tags.join(" ")), spaced(&note.body)],
            )
            .map_err(sqlite)?;
        }
        tx.commit().map_err(sqlite)
    }

    /// The best `limit` notes for `terms` under `filter`: all phrases required, and when
    /// none has them all, any one.
    pub fn search(
        &self,
        terms: &Terms,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let rows = self.ranked(&terms.to_fts(true), filter, limit)?;
        if !rows.is_empty() || terms.0.len() < 2 {
            return Ok(rows);
        }
        self.ranked(&terms.to_fts(false), filter, limit)
    }

    fn ranked(&self, fts: &str, filter: &Filter, limit: usize) -> Result<Vec<Row>, StoreError> {
        let mut args: Vec<String> = vec![fts.to_string()];
        let sql = if filter.folder.is_none() && filter.tags.is_empty() {
            // Unfiltered: rank inside FTS5 and join only the best few (plus room for ties
            // that recency breaks), not every match.
            format!(
                "SELECT n.path, n.title, n.tags, n.created FROM (SELECT rowid AS id, {RANKING} \
                 AS score FROM fts WHERE fts MATCH ? ORDER BY score LIMIT {}) AS top JOIN notes \
                 n ON n.id = top.id ORDER BY top.score, n.sort_time DESC LIMIT {limit}",
                limit + TIE_ROOM
            )
        } else {
            let mut sql = String::from(
                "SELECT n.path, n.title, n.tags, n.created FROM fts JOIN notes n ON n.id = \
                 fts.rowid WHERE fts MATCH ?",
            );
            if let Some(folder) = filter.folder {
                sql.push_str(" AND n.folder = ?");
                args.push(folder.as_str().to_string());
            }
            for tag in &filter.tags {
                sql.push_str(" AND instr(n.tag_key, ?) > 0");
                args.push(format!("\n{}\n", tag.to_lowercase()));
            }
            sql.push_str(&format!(
                " ORDER BY {RANKING}, n.sort_time DESC LIMIT {limit}"
            ));
            sql
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.sqlite(e))?;
        let rows = stmt
            .query_map(params_from_iter(args.iter()), |r| {
                let tags: String = r.get(2)?;
                Ok(Row {
                    path: r.get(0)?,
                    title: r.get(1)?,
                    tags: tags
                        .split('\n')
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect(),
                    created: r.get(3)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }
}

/// One note to put (with what was read) or remove (`note: None`).
pub struct Change {
    /// Vault-relative path.
    pub path: String,
    /// The note's stamp and contents, or `None` when it is gone.
    pub note: Option<(Stamp, Parsed)>,
}

/// Tags lower-cased, each between line feeds, for an exact match with `instr`.
fn tag_key(tags: &[String]) -> String {
    let mut key = String::from("\n");
    for tag in tags {
        key.push_str(&tag.to_lowercase());
        key.push('\n');
    }
    key
}

/// Seconds since the epoch of `created` (RFC 3339 or a bare date), else of the mtime.
pub fn sort_time(created: Option<&str>, stamp: &Stamp) -> i64 {
    use chrono::{DateTime, NaiveDate};
    let parsed = created.and_then(|c| {
        let c = c.trim();
        DateTime::parse_from_rfc3339(c)
            .map(|t| t.timestamp())
            .ok()
            .or_else(|| {
                NaiveDate::parse_from_str(c, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
                    .map(|t| t.and_utc().timestamp())
            })
    });
    parsed.unwrap_or(stamp.mtime_ns / 1_000_000_000)
}
