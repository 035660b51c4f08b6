//! Keeps the index of one vault built and current, on a thread of its own: opens it (or
//! builds it when missing, unreadable or of another version), then follows the vault
//! through a file watch, with a sweep of every note's mtime every [`SWEEP_WATCHED_EVERY`]
//! in case the watch missed something (every [`SWEEP_EVERY`] when the vault cannot be
//! watched).
//!
//! Invariants: the build holds the index lock one batch at a time, so a query waits at most
//! one batch; a broken index file is removed (it is a cache of the vault, rebuilt from it)
//! and rebuilt, while queries scan; the thread stops at cancellation, between batches.

use std::path::Path;
use std::time::{Duration, Instant};

use notify::{Event, RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;

use super::store::{Store, StoreError};
use super::{Index, Live, State, on_disk, registry, walk};
use crate::vault::lock;

/// How often every note's mtime is checked while the vault cannot be watched.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How often while it is watched, in case the watch missed something it did not report
/// (lost events are reported, and then everything is checked at once: `need_rescan`, or an
/// error). Rare, so an idle bridge is hardly woken.
pub const SWEEP_WATCHED_EVERY: Duration = Duration::from_secs(15 * 60);
/// How long to wait before trying again after a failed build.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// Registers `index` as its vault's, builds and follows it until `cancel` fires, then
/// unregisters it and returns once its thread has stopped.
pub async fn run(index: Index, cancel: CancellationToken) {
    lock(registry()).insert(index.root().to_path_buf(), index.clone());
    let (done, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = index.clone();
    let spawned = std::thread::Builder::new()
        .name("search-index".into())
        .spawn(move || {
            worker.follow();
            let _ = done.send(());
        });
    if let Err(err) = spawned {
        tracing::warn!(cause = %err, "could not start the search index; searches scan the vault");
    }
    cancel.cancelled().await;
    lock(&index.inner.dirty).stop = true;
    index.wake();
    let _ = stopped.await;
    lock(registry()).remove(index.root());
}

impl Index {
    fn stopping(&self) -> bool {
        lock(&self.inner.dirty).stop
    }

    /// The follower's loop (blocking).
    fn follow(&self) {
        let _watch = self.watch();
        let mut last_sweep = Instant::now();
        loop {
            if self.stopping() {
                return;
            }
            let building = matches!(*lock(&self.inner.state), State::Building);
            if building {
                match self.build() {
                    Ok(Some(live)) => {
                        *lock(&self.inner.state) = State::Ready(Box::new(live));
                        last_sweep = Instant::now();
                        self.inner.progress.send_modify(|p| p.builds += 1);
                    }
                    Ok(None) => return,
                    Err(err) => {
                        tracing::warn!(cause = %err, "could not build the search index; searches scan the vault");
                        self.wait(RETRY_AFTER);
                    }
                }
                continue;
            }
            let every = if lock(&self.inner.dirty).watching {
                SWEEP_WATCHED_EVERY
            } else {
                SWEEP_EVERY
            };
            self.wait(every.saturating_sub(last_sweep.elapsed()));
            let sweep = last_sweep.elapsed() >= every;
            if sweep {
                last_sweep = Instant::now();
            }
            if let Err(err) = self.catch_up(sweep) {
                tracing::warn!(cause = %err, "search index unusable; rebuilding it");
                *lock(&self.inner.state) = State::Building;
            }
        }
    }

    /// Sleeps until woken (dirty paths, a broken index, stop) or `at_most` has passed.
    fn wait(&self, at_most: Duration) {
        let dirty = lock(&self.inner.dirty);
        if dirty.stop || !dirty.paths.is_empty() || dirty.everything {
            return;
        }
        let _ = self
            .inner
            .wake
            .wait_timeout(dirty, at_most)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    /// Applies what the watch reported (everything when `sweep`), one path per lock hold.
    fn catch_up(&self, sweep: bool) -> Result<(), StoreError> {
        let (mut paths, everything) = self.take_dirty();
        if sweep || everything {
            paths = vec![String::new()];
        }
        for rel in paths {
            let disk = on_disk(&self.inner.root, &rel);
            let mut state = lock(&self.inner.state);
            match &mut *state {
                State::Ready(live) => {
                    live.store.check_still_there()?;
                    let n = live.sync(&self.inner.root, &rel, &disk)? as u64;
                    if n > 0 {
                        self.inner.progress.send_modify(|p| p.followed += n);
                    }
                }
                State::Building => return Ok(()),
            }
        }
        Ok(())
    }

    /// Opens the index file (removing one that cannot be used) and brings it up to date
    /// with the vault. `None` when stopped meanwhile.
    fn build(&self) -> Result<Option<Live>, StoreError> {
        let started = Instant::now();
        let store = match Store::open(self.file()) {
            Ok(store) => store,
            Err(err) => {
                tracing::warn!(cause = %err, "search index unusable; removing it and building it anew");
                remove_index(self.file());
                Store::open(self.file())?
            }
        };
        let stamps = match store.stamps() {
            Ok(stamps) => stamps,
            Err(err) => {
                drop(store);
                remove_index(self.file());
                return Err(err);
            }
        };
        let mut live = Live { store, stamps };
        // Taken before the walk: a change reported during the build is applied after it.
        let _ = self.take_dirty();
        let disk = on_disk(&self.inner.root, "");
        let changes = live.changes("", &disk);
        for batch in changes.chunks(super::BATCH) {
            if self.stopping() {
                return Ok(None);
            }
            live.apply(&self.inner.root, batch)?;
            // Low priority: let the bridge's own threads run between batches.
            std::thread::yield_now();
        }
        tracing::info!(
            notes = live.stamps.len(),
            changed = changes.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "search index built"
        );
        Ok(Some(live))
    }

    /// Watches the vault; events under the content folders mark their paths dirty.
    fn watch(&self) -> Option<notify::RecommendedWatcher> {
        let inner = std::sync::Arc::downgrade(&self.inner);
        let started = notify::recommended_watcher(move |res: notify::Result<Event>| {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let index = Index { inner };
            let mut dirty = lock(&index.inner.dirty);
            match res {
                Ok(event) if event.need_rescan() => dirty.everything = true,
                // Reads (our own included: the walk opens folders, a snippet reads a note)
                // change nothing; following them would loop.
                Ok(event) if event.kind.is_access() => return,
                Ok(event) => {
                    for path in &event.paths {
                        if let Some(rel) = index.relative(path) {
                            dirty.paths.insert(rel);
                        }
                    }
                }
                // Events may have been lost: check everything.
                Err(_) => dirty.everything = true,
            }
            drop(dirty);
            index.wake();
            index.inner.changes.send_modify(|n| *n += 1);
        })
        .and_then(|mut w| {
            w.watch(&self.inner.root, RecursiveMode::Recursive)?;
            Ok(w)
        });
        match started {
            Ok(w) => {
                lock(&self.inner.dirty).watching = true;
                Some(w)
            }
            Err(err) => {
                tracing::warn!(cause = %err, "cannot watch the vault; every search checks every note");
                None
            }
        }
    }

    /// `path` relative to the vault, when it is inside a content folder and not hidden.
    fn relative(&self, path: &Path) -> Option<String> {
        let rel = path
            .strip_prefix(&self.inner.real_root)
            .or_else(|_| path.strip_prefix(&self.inner.root))
            .ok()?;
        let rel = rel.to_str()?.replace('\\', "/");
        // A note, or a folder inside a content folder (a rename moves many notes at once).
        walk::is_covered(&format!("{rel}/x.md")).then_some(rel)
    }
}

/// Removes the index file and SQLite's companions.
fn remove_index(file: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = file.as_os_str().to_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(&name);
    }
}
