//! Durable files: atomic replacement, and moving aside a file that does not parse.
//!
//! Invariants: a reader (or a restart after `kill -9`) sees either the old or the new
//! contents of a file, never a mix: write a temporary file in the same directory, flush it,
//! rename it over the target, flush the directory. State is private to the user whatever
//! the umask: files are created 0600 and folders 0700 (they hold private texts).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

/// Makes temporary names unique within the process, so that two writers never share one.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically and durably. Creates the parent directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    swap_in(path, bytes, true)
}

/// Replaces `path` with `bytes` atomically but not durably (no fsync): for files derived
/// from memory and rewritten at every start (`status.json`), where a reader must never see
/// half a file but a power cut may cost the last version. Creates the parent directory.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    swap_in(path, bytes, false)
}

/// Writes `bytes` under a temporary name beside `path` and renames it over `path`; with
/// `durable`, the file and then its directory are fsynced too.
fn swap_in(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    let dir = parent(path);
    create_private_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let result = (|| {
        let mut file =
            private(OpenOptions::new().write(true).create(true).truncate(true)).open(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        if durable { sync_dir(dir) } else { Ok(()) }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its missing parents 0700.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes `dir` (the data directory) 0700, creating it if missing: it holds private texts,
/// whatever the umask was when it was made.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    create_private_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            match fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
                // A folder someone else owns (a shared data dir set up by an administrator)
                // cannot be tightened by us; its owner chose its mode. Files in it are 0600.
                Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                    tracing::warn!(dir = ?dir, "the data directory is not ours to make private; leaving its mode");
                }
                other => other?,
            }
        }
    }
    Ok(())
}

/// `options` creating the file 0600 (on Unix).
pub fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Flushes a directory entry change (a rename or a create) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // Directories cannot be opened as files on every platform; where they can, fsync them.
    match File::open(dir) {
        Ok(d) => d
            .sync_all()
            .or_else(|e| if cfg!(windows) { Ok(()) } else { Err(e) }),
        Err(e) if cfg!(windows) => {
            let _ = e;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The outcome of loading a JSON state file.
#[derive(Debug)]
pub enum Loaded<T> {
    /// The file does not exist yet.
    Missing,
    /// The file parsed.
    Ok(T),
    /// The file did not parse; it was renamed to `moved_to` and kept.
    MovedAside {
        /// Where the unreadable file now is.
        moved_to: PathBuf,
        /// Why it did not parse.
        reason: String,
    },
}

/// Reads a JSON state file. One that does not parse is renamed aside with a timestamped
/// name (never deleted) so that the caller can start without it and report it.
pub fn load_json<T: DeserializeOwned>(path: &Path) -> io::Result<Loaded<T>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice(&bytes) {
        Ok(value) => Ok(Loaded::Ok(value)),
        Err(err) => {
            let moved_to = move_aside(path)?;
            Ok(Loaded::MovedAside {
                moved_to,
                reason: err.to_string(),
            })
        }
    }
}

/// A state file of the bridge, named as the status reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StateFile {
    /// `sessions.json`.
    Sessions,
    /// `ledger.json` (before the state database).
    Ledger,
    /// `budget.json` (before the state database).
    TokenBudget,
    /// `settings.json`.
    Settings,
    /// `state.db`.
    StateDatabase,
}

impl StateFile {
    /// How a sentence names it ("ledger file").
    pub fn name(self) -> &'static str {
        match self {
            StateFile::Sessions => "sessions file",
            StateFile::Ledger => "ledger file",
            StateFile::TokenBudget => "token budget file",
            StateFile::Settings => "settings file",
            StateFile::StateDatabase => "state database",
        }
    }
}

/// A state file that did not parse, renamed aside and kept. Its `Display` is the sentence
/// the status shows: "ledger file did not parse (EOF …); kept as /…/ledger.json.corrupt-…".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedAside {
    /// Which file.
    pub file: StateFile,
    /// Where it now is.
    pub moved_to: PathBuf,
    /// Why it did not parse.
    pub reason: String,
}

impl std::fmt::Display for MovedAside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} did not parse ({}); kept as {}",
            self.file.name(),
            self.reason,
            self.moved_to.display()
        )
    }
}

impl<T> Loaded<T> {
    /// The parsed value, or `None` for a missing file; a file that did not parse is
    /// reported through `aside` as `file`.
    pub fn value(self, file: StateFile, aside: &mut Option<MovedAside>) -> Option<T> {
        match self {
            Loaded::Missing => None,
            Loaded::Ok(value) => Some(value),
            Loaded::MovedAside { moved_to, reason } => {
                *aside = Some(MovedAside {
                    file,
                    moved_to,
                    reason,
                });
                None
            }
        }
    }
}

/// Moves `path` (a state file that cannot be used, for `reason`) aside and says so: the one
/// way every state file is set aside. Logs the move.
pub fn set_aside(path: &Path, file: StateFile, reason: String) -> io::Result<MovedAside> {
    let moved_to = move_aside(path)?;
    let moved = MovedAside {
        file,
        moved_to,
        reason,
    };
    tracing::warn!(path = ?path, problem = %moved, "state file moved aside");
    Ok(moved)
}

/// Renames `path` to `<name>.corrupt-<UTC timestamp>` beside it and returns the new path.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    rename_beside(path, "corrupt")
}

/// Renames `path` to `<name>.<tag>-<UTC timestamp>` beside it (durably) and returns the new
/// path: how state files are kept aside, never deleted.
pub fn rename_beside(path: &Path, tag: &str) -> io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let target = parent(path).join(format!("{name}.{tag}-{stamp}"));
    fs::rename(path, &target)?;
    sync_dir(parent(path))?;
    Ok(target)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the target remains: {names:?}");
    }

    #[test]
    fn unparsable_file_is_moved_aside_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        fs::write(&path, b"{ not json").unwrap();
        let loaded: Loaded<Vec<u32>> = load_json(&path).unwrap();
        let Loaded::MovedAside { moved_to, .. } = loaded else {
            panic!("not moved: {loaded:?}")
        };
        assert!(!path.exists());
        assert_eq!(fs::read(&moved_to).unwrap(), b"{ not json");
        assert!(
            moved_to
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("sessions.json.corrupt-")
        );
    }

    #[test]
    fn missing_file_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let loaded: Loaded<u32> = load_json(&dir.path().join("none.json")).unwrap();
        assert!(matches!(loaded, Loaded::Missing));
    }

    /// Issue 9: state files were 0644 and the data dir 0755, depending on the umask.
    #[cfg(unix)]
    #[test]
    fn state_files_are_0600_and_the_data_dir_0700() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&data).unwrap();
        write_atomic(&data.join("sessions.json"), b"{}").unwrap();
        write_atomic(&data.join("new/state.json"), b"{}").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("new")), 0o700);
        assert_eq!(mode(&data.join("sessions.json")), 0o600);
        assert_eq!(mode(&data.join("new/state.json")), 0o600);
    }
}
