//! Waiting for effects on disk without polling: a `notify` watch on the folders where the
//! effect lands, and a check after every event (and once before the first).

use std::path::Path;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

/// Runs `check` now and after every file event under `dirs` (watched recursively; a
/// missing folder is skipped) until it returns `Some`, or `within` passes (`None`).
pub async fn until<T, P: AsRef<Path>>(
    dirs: &[P],
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + within;
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    // Reading files makes access events of their own: only changes count, or every check
    // would wake the next one.
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if !matches!(&event, Ok(e) if e.kind.is_access()) {
            let _ = tx.send(());
        }
    })
    .expect("create a file watcher");
    for dir in dirs {
        let _ = watcher.watch(dir.as_ref(), RecursiveMode::Recursive);
    }
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if tokio::time::Instant::now() >= deadline {
            return check();
        }
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(())) => {}
            Ok(None) => panic!("the file watcher stopped"),
            Err(_) => return check(),
        }
    }
}
