//! The one-time move of the state files older versions wrote (`ledger.json`, `budget.json`)
//! into the state database ([`crate::state`]).
//!
//! Invariants: a file is imported in one transaction and only then renamed aside to
//! `<name>.migrated-<UTC timestamp>` (kept, never deleted), so a crash between the two
//! imports it again at the next start, which is harmless (imports skip what is stored). A
//! file that does not parse, or has an unknown version, is moved aside as corrupt and
//! reported like any state file; nothing of it is imported.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::chatdb::IncomingMessage;
use crate::ledger::{Cursor, Ledger, LedgerError, SendRecord};
use crate::limits::{self, Budget, Day, LimitsError};
use crate::persist::{self, MovedAside, StateFile};

/// The ledger file older versions wrote, inside the data directory.
pub const LEDGER_FILE: &str = "ledger.json";

/// The only `ledger.json` version there was.
const LEDGER_VERSION: u32 = 1;

/// Why an old state file could not be moved into the database.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Reading or renaming the file failed.
    #[error("could not move {path} into the state database: {source}")]
    File {
        /// The old file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The ledger refused the import.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The budget refused the import.
    #[error(transparent)]
    Budget(#[from] LimitsError),
}

/// `ledger.json` as version 1 wrote it.
#[derive(Deserialize)]
struct LedgerFile {
    version: u32,
    cursor: Option<Cursor>,
    #[serde(default)]
    claimed: Vec<IncomingMessage>,
    #[serde(default)]
    finished: Vec<String>,
    #[serde(default)]
    sends: Vec<SendRecord>,
}

/// Imports `ledger.json` and `budget.json` from `data_dir` when they are there; returns
/// the files that did not parse (moved aside, not imported).
pub fn import_old_files(
    data_dir: &Path,
    ledger: &Ledger,
    budget: &Budget,
) -> Result<Vec<MovedAside>, MigrateError> {
    let mut aside = Vec::new();
    let path = data_dir.join(LEDGER_FILE);
    if let Some(file) = load::<LedgerFile>(&path, StateFile::Ledger, &mut aside)? {
        if file.version == LEDGER_VERSION {
            ledger.blocking_import(file.cursor, &file.claimed, &file.finished, &file.sends)?;
            keep_aside(&path)?;
        } else {
            let reason = format!(
                "unsupported ledger file version {} (expected {LEDGER_VERSION})",
                file.version
            );
            aside.push(set_aside(&path, StateFile::Ledger, reason)?);
        }
    }
    let path = data_dir.join(limits::BUDGET_FILE);
    if let Some(day) = load::<Day>(&path, StateFile::TokenBudget, &mut aside)? {
        budget.blocking_import(day)?;
        keep_aside(&path)?;
    }
    Ok(aside)
}

fn load<T: serde::de::DeserializeOwned>(
    path: &Path,
    file: StateFile,
    aside: &mut Vec<MovedAside>,
) -> Result<Option<T>, MigrateError> {
    let mut moved = None;
    let value = persist::load_json::<T>(path)
        .map_err(|source| file_error(path, source))?
        .value(file, &mut moved);
    aside.extend(moved);
    Ok(value)
}

fn set_aside(path: &Path, file: StateFile, reason: String) -> Result<MovedAside, MigrateError> {
    persist::set_aside(path, file, reason).map_err(|source| file_error(path, source))
}

fn keep_aside(path: &Path) -> Result<(), MigrateError> {
    let kept =
        persist::rename_beside(path, "migrated").map_err(|source| file_error(path, source))?;
    tracing::info!(from = ?path, kept = ?kept, "moved an old state file into the state database");
    Ok(())
}

fn file_error(path: &Path, source: std::io::Error) -> MigrateError {
    MigrateError::File {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveDate;

    use super::*;
    use crate::state::StateDb;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
    }

    /// A data dir with its state database, the ledger and the budget in it.
    fn stores(dir: &Path) -> (Ledger, Budget) {
        let (db, _) = StateDb::open(dir.join(crate::state::FILE)).unwrap();
        let db = Arc::new(db);
        (
            Ledger::open(Arc::clone(&db)).unwrap(),
            Budget::open(db, 1_000, today()).unwrap(),
        )
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with(crate::state::FILE))
            .collect();
        names.sort();
        names
    }

    const OLD_LEDGER: &str = r#"{"version":1,"cursor":{"rowid":12,"date":null,"mark":{"rowid":12,"guid":"G-12"}},
        "claimed":[{"rowid":11,"guid":"G-11","chat":{"guid":"iMessage;-;+15550001111",
          "identifier":"+15550001111","is_group":false},"sender":"+15550001111",
          "text":"Buy stamps 📮","date":"2026-03-01T09:00:00Z"}],
        "finished":["G-09","G-10"],
        "sends":[{"source":"G-11","digest":"ab","state":"in_flight"}]}"#;

    #[test]
    fn old_files_are_imported_then_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEDGER_FILE), OLD_LEDGER).unwrap();
        let old_budget = r#"{"date":"2026-03-01","used":640,"notified":false}"#;
        std::fs::write(dir.path().join(limits::BUDGET_FILE), old_budget).unwrap();
        let (ledger, budget) = stores(dir.path());

        let aside = import_old_files(dir.path(), &ledger, &budget).unwrap();
        assert_eq!(aside, vec![]);
        assert_eq!(ledger.cursor().unwrap().rowid, 12);
        assert_eq!(ledger.cursor().unwrap().mark.unwrap().guid, "G-12");
        let unfinished = ledger.unfinished().unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].text, "Buy stamps 📮");
        assert!(ledger.is_finished("G-09").unwrap() && ledger.is_finished("G-10").unwrap());
        assert_eq!(
            ledger.blocking_begin_send("G-11", "ab").unwrap(),
            crate::ledger::SendStart::Unconfirmed { just_found: true }
        );
        assert_eq!(budget.used(today()), 640);
        // Kept byte for byte under a new name; nothing left to import at the next start.
        let kept = names(dir.path());
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept[0].starts_with("budget.json.migrated-"), "{kept:?}");
        assert!(kept[1].starts_with("ledger.json.migrated-"), "{kept:?}");
        let bytes = std::fs::read(dir.path().join(&kept[1])).unwrap();
        assert_eq!(bytes, OLD_LEDGER.as_bytes());
        drop((ledger, budget));
        let (ledger, budget) = stores(dir.path());
        assert_eq!(
            import_old_files(dir.path(), &ledger, &budget).unwrap(),
            vec![]
        );
        assert_eq!(names(dir.path()), kept);
        assert!(
            ledger.is_finished("G-10").unwrap(),
            "the import is in the database"
        );
    }

    #[test]
    fn unreadable_old_files_are_set_aside_and_reported() {
        let cases: &[(&str, &str, &str)] = &[
            ("{\"version\":1,\"cursor\":", "", "EOF"),
            ("{\"version\":9,\"cursor\":null}", "{}", "version 9"),
            (
                "{\"version\":1,\"cursor\":{\"rowid\":\"ten\"}}",
                "{\"date\":\"yesterday\"}",
                "invalid type",
            ),
        ];
        for (ledger_bytes, budget_bytes, reason_part) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(LEDGER_FILE), ledger_bytes).unwrap();
            std::fs::write(dir.path().join(limits::BUDGET_FILE), budget_bytes).unwrap();
            let (ledger, budget) = stores(dir.path());
            let aside = import_old_files(dir.path(), &ledger, &budget).unwrap();
            assert_eq!(aside.len(), 2, "{aside:?}");
            assert_eq!(aside[0].file, StateFile::Ledger);
            assert!(aside[0].reason.contains(reason_part), "{:?}", aside[0]);
            assert_eq!(
                std::fs::read(&aside[0].moved_to).unwrap(),
                ledger_bytes.as_bytes()
            );
            assert!(
                aside[0]
                    .to_string()
                    .starts_with("ledger file did not parse (")
            );
            assert_eq!(aside[1].file, StateFile::TokenBudget);
            assert!(
                aside[1]
                    .to_string()
                    .starts_with("token budget file did not parse (")
            );
            assert_eq!(
                std::fs::read(&aside[1].moved_to).unwrap(),
                budget_bytes.as_bytes()
            );
            assert_eq!(ledger.cursor(), None);
            assert_eq!(budget.used(today()), 0);
        }
    }
}
