//! `vault_search`: full-text search over the notes of the content folders, ranked by
//! relevance (title and tags count more than the body; newer notes win ties).
//!
//! The index ([`store`]) lives in `<data dir>/search/index.sqlite`, never in the vault. It
//! follows the vault ([`follow`]: a file watch, and a sweep of file mtimes when the watch is
//! not running or every [`follow::SWEEP_EVERY`]); before each query the paths the watch
//! reported are checked against their mtimes, so a note edited in Obsidian is found by its
//! current words. A missing, deleted, truncated or corrupt index is rebuilt in the background
//! while queries are answered by a scan of the notes ([`scan`]).
//!
//! Invariants: one [`Index`] per vault, shared by its clones; the SQLite connection is used
//! under one lock, held for one query or one batch of changes, never across an `.await`
//! (all of this is blocking work, run off the runtime); an index that fails is never used
//! again until rebuilt.

pub mod follow;
pub mod note;
pub mod scan;
pub mod store;
pub mod text;
pub mod tool;
pub mod walk;

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

use serde::Serialize;

use crate::vault::{Folder, lock};
use store::{Change, Store, StoreError};
use text::Terms;
use walk::Stamp;

/// Where the index lives, relative to the data directory.
pub const INDEX_FILE: &str = "search/index.sqlite";
/// Most bytes of one note that are indexed and read for a snippet.
const MAX_NOTE_BYTES: u64 = 1024 * 1024;
/// Notes changed per transaction (and per hold of the lock) while following the vault.
const BATCH: usize = 256;

/// What a search asks.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// The words; `"…"` keeps a phrase.
    pub text: String,
    /// Which notes may match.
    pub filter: Filter,
    /// At most this many hits.
    pub limit: usize,
}

/// Which notes a search may return.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// One content folder, or all of them.
    pub folder: Option<Folder>,
    /// Tags that must all be present (compared without case).
    pub tags: Vec<String>,
}

/// One note found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hit {
    /// Vault-relative path.
    pub path: String,
    /// The first `# ` heading, else the file name.
    pub title: String,
    /// Frontmatter tags.
    pub tags: Vec<String>,
    /// Frontmatter `created`, as written.
    pub created: Option<String>,
    /// At most [`text::SNIPPET_CHARS`] characters around the best match.
    pub snippet: String,
}

/// How a search was answered (tests and the bench tell the two paths apart by it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// From the index.
    Index,
    /// By reading the notes, while the index is being built.
    Scan,
}

/// The search index of one vault. Clones share it.
#[derive(Clone)]
pub struct Index {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// The root as the file watch reports it (resolved links, e.g. `/private/var/…`).
    real_root: PathBuf,
    file: PathBuf,
    state: Mutex<State>,
    /// Paths the watch reported, not yet checked.
    dirty: Mutex<Dirty>,
    /// Wakes the follower: something is dirty, the index broke, or it must stop.
    wake: Condvar,
    /// What the follower has done so far (tests and the bench wait on it).
    progress: tokio::sync::watch::Sender<Progress>,
    /// Bumped on every change the file watch reports (the reminders follow the vault by it).
    changes: tokio::sync::watch::Sender<u64>,
}

/// What the follower has done, counted since the index was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Builds finished (the first, and one per rebuild).
    pub builds: u64,
    /// Notes put or removed after a build, as the vault changed.
    pub followed: u64,
}

#[derive(Default)]
struct Dirty {
    paths: HashSet<String>,
    /// The watch lost events (or is not running): every note must be checked.
    everything: bool,
    /// The watch is running.
    watching: bool,
    stop: bool,
}

enum State {
    /// Being built (or rebuilt): queries scan.
    Building,
    /// In use.
    Ready(Box<Live>),
}

/// The open index and what it holds, kept in memory for the freshness checks.
struct Live {
    store: Store,
    stamps: HashMap<String, Stamp>,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Index>> {
    static INDEXES: OnceLock<Mutex<HashMap<PathBuf, Index>>> = OnceLock::new();
    INDEXES.get_or_init(Mutex::default)
}

impl Index {
    /// The index of the vault at `root`, kept at `<data_dir>/`[`INDEX_FILE`]. Nothing is
    /// opened or built until [`follow::run`] runs for it; until then queries scan.
    pub fn new(root: &Path, data_dir: &Path) -> Index {
        Index {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                real_root: std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
                file: data_dir.join(INDEX_FILE),
                state: Mutex::new(State::Building),
                dirty: Mutex::default(),
                wake: Condvar::new(),
                progress: tokio::sync::watch::Sender::default(),
                changes: tokio::sync::watch::Sender::default(),
            }),
        }
    }

    /// The running index of the vault at `root`, if the bridge started one.
    pub fn of_vault(root: &Path) -> Option<Index> {
        lock(registry()).get(root).cloned()
    }

    /// The vault folder.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The index file.
    pub fn file(&self) -> &Path {
        &self.inner.file
    }

    /// What the follower has done; changes as it builds and follows.
    pub fn progress(&self) -> tokio::sync::watch::Receiver<Progress> {
        self.inner.progress.subscribe()
    }

    /// Changes whenever the file watch reports a change in the vault.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// Whether queries are answered from the index now.
    pub fn is_ready(&self) -> bool {
        matches!(*lock(&self.inner.state), State::Ready(_))
    }

    /// Searches; blocking. The notes the watch reported (all of them when it is not
    /// running) are checked against their mtimes first. Without a usable index, scans.
    pub fn search(&self, q: &Query) -> (Vec<Hit>, Answer) {
        let terms = Terms::parse(&q.text);
        if terms.is_empty() {
            return (Vec::new(), Answer::Index);
        }
        let mut state = lock(&self.inner.state);
        if let State::Ready(live) = &mut *state {
            match self.query_live(live, &terms, q) {
                Ok(rows) => {
                    drop(state);
                    return (self.hits(rows, &terms), Answer::Index);
                }
                Err(err) => {
                    tracing::warn!(cause = %err, "search index unusable; rebuilding it, scanning meanwhile");
                    *state = State::Building;
                    self.wake();
                }
            }
        }
        drop(state);
        (scan::search(&self.inner.root, &terms, q), Answer::Scan)
    }

    fn query_live(
        &self,
        live: &mut Live,
        terms: &Terms,
        q: &Query,
    ) -> Result<Vec<store::Row>, StoreError> {
        live.store.check_still_there()?;
        let (paths, everything) = self.take_dirty();
        if everything {
            let disk = on_disk(&self.inner.root, "");
            live.sync(&self.inner.root, "", &disk)?;
        }
        for rel in paths {
            let disk = on_disk(&self.inner.root, &rel);
            live.sync(&self.inner.root, &rel, &disk)?;
        }
        live.store.search(terms, &q.filter, q.limit)
    }

    /// Hits for `rows`, each with a snippet from the note as it is now.
    fn hits(&self, rows: Vec<store::Row>, terms: &Terms) -> Vec<Hit> {
        rows.into_iter()
            .map(|row| {
                let body = read_note(&self.inner.root.join(&row.path))
                    .map(|text| note::parse(&row.path, &text).body)
                    .unwrap_or_default();
                Hit {
                    snippet: text::snippet(&body, terms),
                    path: row.path,
                    title: row.title,
                    tags: row.tags,
                    created: row.created,
                }
            })
            .collect()
    }

    /// The dirty paths, and whether everything must be checked (taking both).
    fn take_dirty(&self) -> (Vec<String>, bool) {
        let mut dirty = lock(&self.inner.dirty);
        let everything = std::mem::take(&mut dirty.everything) || !dirty.watching;
        (dirty.paths.drain().collect(), everything)
    }

    fn wake(&self) {
        self.inner.wake.notify_all();
    }
}

impl Live {
    /// Makes the index agree with `disk` (the notes now under `rel`), in batches.
    fn sync(
        &mut self,
        root: &Path,
        rel: &str,
        disk: &[(String, Stamp)],
    ) -> Result<usize, StoreError> {
        let changes = self.changes(rel, disk);
        let n = changes.len();
        for batch in changes.chunks(BATCH) {
            self.apply(root, batch)?;
        }
        Ok(n)
    }

    /// Paths under `rel` that were added, changed or removed, as `(path, stamp now)`.
    fn changes(&self, rel: &str, disk: &[(String, Stamp)]) -> Vec<(String, Option<Stamp>)> {
        let on_disk: HashSet<&str> = disk.iter().map(|(p, _)| p.as_str()).collect();
        let mut changes: Vec<(String, Option<Stamp>)> = disk
            .iter()
            .filter(|(p, s)| self.stamps.get(p) != Some(s))
            .map(|(p, s)| (p.clone(), Some(*s)))
            .collect();
        if walk::is_covered(rel) && !on_disk.is_empty() {
            // A note that is still there: nothing under it to remove.
            return changes;
        }
        let prefix = format!("{rel}/");
        changes.extend(
            self.stamps
                .keys()
                .filter(|p| rel.is_empty() || *p == rel || p.starts_with(&prefix))
                .filter(|p| !on_disk.contains(p.as_str()))
                .map(|p| (p.clone(), None)),
        );
        changes
    }

    fn apply(&mut self, root: &Path, batch: &[(String, Option<Stamp>)]) -> Result<(), StoreError> {
        let changes: Vec<Change> = batch
            .iter()
            .map(|(path, stamp)| Change {
                path: path.clone(),
                note: stamp.and_then(|stamp| {
                    let text = read_note(&root.join(path))?;
                    Some((stamp, note::parse(path, &text)))
                }),
            })
            .collect();
        self.store.apply(&changes)?;
        for change in changes {
            match change.note {
                Some((stamp, _)) => self.stamps.insert(change.path, stamp),
                None => self.stamps.remove(&change.path),
            };
        }
        Ok(())
    }
}

/// The covered notes now under `rel`.
fn on_disk(root: &Path, rel: &str) -> Vec<(String, Stamp)> {
    let mut out = Vec::new();
    walk::under(root, rel, &mut out);
    out
}

/// A note's text (its first [`MAX_NOTE_BYTES`]), `None` when it cannot be read. Opened
/// without following a link and without blocking on a FIFO swapped in after the walk.
pub(crate) fn read_note(abs: &Path) -> Option<String> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(abs).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_NOTE_BYTES).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests;
