//! The Obsidian vault: creates notes ([`write`]), reads them back ([`read`]), lists them
//! ([`list`]) and keeps the daily interaction log ([`log`]); tags follow [`tags`].
//!
//! Invariants: nothing is ever read or written outside the vault root (relative paths only,
//! no `..`, canonical paths checked against the canonical root, symlinks never followed when
//! listing); a note is written whole and never replaces another; log appends are serialised
//! by a lock held by the [`Vault`] (shared by its clones), so none is lost. Everything here
//! is blocking file-system work: async callers run it off the runtime's workers.

mod attach;
mod confine;
mod list;
mod log;
mod moving;
mod read;
mod tags;
mod write;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use confine::check_vault_place;
pub use list::{ListQuery, NoteSummary};
pub(crate) use list::{yaml_scalar as frontmatter_scalar, yaml_tags as frontmatter_tags};
pub use log::{LogEntry, MAX_LOG_FIELD_BYTES};
pub use moving::{Moved, archived};
pub use tags::{normalize_tag, normalize_tags};
pub use write::NewNote;

/// Largest note [`Vault::read_note`] returns.
pub const MAX_READ_BYTES: u64 = 1024 * 1024;
/// Longest title accepted, in bytes.
pub const MAX_TITLE_BYTES: usize = 1024;
/// Largest note body (and largest log field) accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;
/// Most tags on one note.
pub const MAX_TAGS: usize = 50;
/// Longest tag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 200;
/// Number of notes [`ListQuery::default`] asks for.
pub const DEFAULT_LIST_LIMIT: usize = 20;

/// Where the interaction logs live, relative to the root.
const LOG_DIR: &str = "_system/logs";

/// Makes probe-file names unique within the process.
static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a vault operation failed. Every message is short enough to hand back to the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path leaves the vault (absolute, `..`, or a symlink that points out of it).
    #[error("{path:?} is outside the vault")]
    Outside {
        /// The path as it was asked for.
        path: String,
    },
    /// Something that is not a regular file: a link, a folder, a FIFO, a socket, a device.
    #[error("{path:?} is {kind}; only regular files are read or written")]
    NotRegular {
        /// The path as it was asked for.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// A folder of the vault is a link to a folder outside it: nothing is written there.
    #[error(
        "{folder} points outside the vault; notes are not written there until it is a folder \
         inside the vault"
    )]
    FolderOutside {
        /// The folder, vault-relative (`Projects`, `_system/logs`).
        folder: String,
    },
    /// The thread doing the file work ended without an answer (it panicked).
    #[error("the file operation stopped unexpectedly")]
    Stopped,
    /// Nothing at that path.
    #[error("{path:?} does not exist in the vault")]
    NotFound {
        /// The path as it was asked for (vault-relative), or the missing vault root.
        path: String,
    },
    /// An input was refused before touching the disk.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending input field (`title`, `folder`, `filepath`, …).
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The file system failed.
    #[error("file error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// macOS refused access to the vault folder.
    #[error(
        "permission denied on {}: allow Second Brain in System Settings › Privacy & Security › \
         Files and Folders (or Full Disk Access), or pick another vault folder",
        path.display()
    )]
    PermissionDenied {
        /// The file or directory involved.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                path: path.to_path_buf(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The vault's content folders; the agent files every note into one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Folder {
    /// Things to do.
    Tasks,
    /// Ideas to keep.
    Ideas,
    /// Links, facts and things to look up later.
    Reference,
    /// Notes about an ongoing project.
    Projects,
    /// Still ambiguous, or filed without an answer.
    Inbox,
    /// Done or no longer relevant.
    Archive,
}

impl Folder {
    /// Every content folder, in the order they are documented.
    pub const ALL: [Folder; 6] = [
        Folder::Tasks,
        Folder::Ideas,
        Folder::Reference,
        Folder::Projects,
        Folder::Inbox,
        Folder::Archive,
    ];

    /// The folder's name on disk, which is also its name in tool inputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Tasks => "Tasks",
            Folder::Ideas => "Ideas",
            Folder::Reference => "Reference",
            Folder::Projects => "Projects",
            Folder::Inbox => "Inbox",
            Folder::Archive => "Archive",
        }
    }
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Folder {
    type Err = Error;

    /// Exact, case-sensitive names only.
    fn from_str(s: &str) -> Result<Folder, Error> {
        Folder::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = Folder::ALL.iter().map(|f| f.as_str()).collect();
                Error::invalid(
                    "folder",
                    format!(
                        "unknown folder {:?}; use one of {}",
                        preview(s),
                        valid.join(", ")
                    ),
                )
            })
    }
}

/// An Obsidian vault on disk. Clones share the listing cache and the log lock.
#[derive(Clone, Debug)]
pub struct Vault {
    root: PathBuf,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// What a listing learnt about each note, valid while its mtime and length are unchanged.
    headers: Mutex<HashMap<PathBuf, list::Cached>>,
    /// Serialises log appends (read, extend, replace).
    log_lock: Mutex<()>,
    /// Serialises the idempotency check and name reservation of note writes.
    write_lock: Mutex<()>,
    /// How many note headers were read from disk (the cache's effect, seen by tests).
    header_reads: AtomicU64,
}

/// The sections here are short and never span an `.await` ([`crate::mutex`]).
pub(crate) use crate::mutex::lock;

impl Vault {
    /// A vault rooted at `root` (the folder the user picked). Touches nothing on disk.
    pub fn new(root: impl Into<PathBuf>) -> Vault {
        Vault {
            root: root.into(),
            shared: Arc::default(),
        }
    }

    /// The vault's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the layout (`Tasks/ Ideas/ Reference/ Projects/ Inbox/ Archive/
    /// _system/logs/`) where missing and proves that a file can be created and removed.
    /// The root itself must already exist (a vault on an unmounted disk is not recreated)
    /// and be a real folder that is not `/`, the home folder or a system folder. A folder
    /// that is a link leaving the vault is not created through, and is named in the
    /// returned [`Layout`].
    pub fn check_writable(&self) -> Result<Layout, Error> {
        let root = confine::real_root(&self.root)?;
        let mut outside = Vec::new();
        for rel in Folder::ALL.map(Folder::as_str).into_iter().chain([LOG_DIR]) {
            match confine::folder(&root, rel, true) {
                Ok(_) => {}
                Err(Error::FolderOutside { folder }) => outside.push(folder),
                Err(e) => return Err(e),
            }
        }
        let n = PROBE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let probe = root.join(format!(".write-check-{}-{n}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| Error::io(&probe, e))?;
        fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
        Ok(Layout { outside })
    }

    /// Runs `work` on this vault on a thread of its own and waits for it without holding
    /// a runtime worker. The runtime never waits for that thread: whatever system call a
    /// file operation is stuck in (a FIFO, a hung network volume), stopping the bridge is
    /// not held up by it — unlike `spawn_blocking`, whose threads a runtime waits for when
    /// it shuts down (tokio `Runtime` drop: "blocks until all spawned work has been
    /// stopped"). A thread stuck for good ends with the process.
    pub async fn off_runtime<T, F>(&self, work: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Vault) -> Result<T, Error> + Send + 'static,
    {
        let vault = self.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("vault".into())
            .spawn(move || {
                let _ = tx.send(work(&vault));
            })
            .map_err(|e| Error::io(&self.root, e))?;
        rx.await.unwrap_or(Err(Error::Stopped))
    }
}

/// What [`Vault::check_writable`] found besides the vault being writable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Folders (vault-relative: `Projects`, `_system/logs`) that are links leaving the
    /// vault: not written to, not listed.
    pub outside: Vec<String>,
}

impl Layout {
    /// One sentence per folder that points outside the vault, for the status.
    pub fn problems(&self) -> Vec<String> {
        self.outside
            .iter()
            .map(|f| format!("{f} points outside the vault"))
            .collect()
    }
}

/// Refuses NUL bytes and texts over `max` bytes.
pub(crate) fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), Error> {
    if text.len() > max {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    if text.contains('\0') {
        return Err(Error::invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

pub(crate) fn check_confidence(c: u8) -> Result<(), Error> {
    if c > 100 {
        return Err(Error::invalid("confidence", "must be from 0 to 100"));
    }
    Ok(())
}

/// At most 60 characters of `s`, for error messages.
pub(crate) fn preview(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Helpers shared by the vault's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::fs;
    use std::path::Path;

    /// Makes a FIFO at `path` (mkfifo(1), as a user or a sync tool would).
    #[cfg(unix)]
    pub(crate) fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("run mkfifo");
        assert!(status.success(), "mkfifo {}", path.display());
    }

    use chrono::{DateTime, Local, TimeZone};

    use super::{Folder, NewNote, Vault};

    pub(crate) fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .earliest()
            .expect("valid local time")
    }

    pub(crate) fn now() -> DateTime<Local> {
        at(2024, 5, 1, 14, 3, 22)
    }

    pub(crate) fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("vault"));
        fs::create_dir(vault.root()).unwrap();
        (dir, vault)
    }

    pub(crate) fn note<'a>(title: &'a str) -> NewNote<'a> {
        NewNote {
            folder: Folder::Tasks,
            title,
            content: "body",
            tags: &[],
            confidence: 70,
            source: None,
        }
    }

    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn folder_names_are_exact() {
        for f in Folder::ALL {
            assert_eq!(f.as_str().parse::<Folder>().unwrap(), f);
        }
        let err = "tasks".parse::<Folder>().unwrap_err().to_string();
        assert!(
            err.contains("Tasks, Ideas, Reference, Projects, Inbox, Archive"),
            "error lists the valid folders: {err}"
        );
        assert!(" Tasks".parse::<Folder>().is_err());
    }

    #[test]
    fn check_writable_creates_the_layout_and_leaves_no_probe() {
        let (_dir, vault) = vault();
        vault.check_writable().unwrap();
        for f in Folder::ALL {
            assert!(vault.root().join(f.as_str()).is_dir(), "{f}");
        }
        assert!(names(&vault.root().join("_system/logs")).is_empty());
        vault.check_writable().unwrap();

        let missing = Vault::new(vault.root().join("not-there"));
        assert!(matches!(
            missing.check_writable(),
            Err(Error::NotFound { .. })
        ));
        assert!(!missing.root().exists(), "a missing vault is not created");
    }

    /// Issue 9: a settings save could set the vault to `/`. The vault must be a real folder
    /// that is not the disk, the home folder or a system folder.
    #[test]
    fn the_vault_is_not_the_disk_the_home_folder_or_a_system_folder() {
        let home = Path::new("/Users/ann");
        let refused = [
            "/",
            "/Users/ann",
            "/Users/ann/Library",
            "/Users",
            "/System/Library",
            "/usr/share/doc",
            "/etc",
            "/private/var",
            "/tmp",
            "/Volumes",
        ];
        for path in refused {
            let err = check_vault_place(Path::new(path), Some(home)).unwrap_err();
            assert!(err.contains("not a vault"), "{path}: {err}");
        }
        for path in [
            "/Users/ann/Documents/Notes",
            "/Volumes/Disk/Vault",
            "/tmp/x/vault",
            "/home/ann/notes",
        ] {
            assert_eq!(
                check_vault_place(Path::new(path), Some(home)),
                Ok(()),
                "{path}"
            );
        }
        let err = Vault::new("/").check_writable().unwrap_err();
        assert!(err.to_string().contains("whole disk"), "{err}");
    }

    /// Issue 9: SIGTERM logged "stopped" but the process stayed alive while a worker was
    /// blocked in `open` on a FIFO, because a runtime waits for its blocking threads when it
    /// shuts down. Vault work runs on threads the runtime does not wait for.
    #[test]
    fn a_stuck_vault_call_does_not_hold_up_the_runtime_shutdown() {
        let (_dir, vault) = vault();
        let (stuck_tx, stuck_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.spawn(async move {
            let _ = vault
                .off_runtime(move |_| {
                    started_tx.send(()).unwrap();
                    let _ = stuck_rx.recv(); // stuck until the test ends
                    Ok(())
                })
                .await;
        });
        started_rx.recv().unwrap();
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(runtime);
            dropped_tx.send(()).unwrap();
        });
        assert!(
            dropped_rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .is_ok(),
            "the runtime waited for a stuck vault call"
        );
        drop(stuck_tx);
    }
}
