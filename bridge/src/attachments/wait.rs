//! Waits for attachments' files: Messages often writes a text's rows before its files have
//! finished downloading. A file is complete when it is a regular file at least
//! `total_bytes` long (non-empty when the size is unknown). A file whose download Messages
//! recorded as failed (`transfer_state` 6, [`Transfer::Failed`]) is not waited for: it
//! does not come without the user's doing, and the text is handled at once without it.
//!
//! Invariants: event-driven — a notify watch on the nearest existing folder above each
//! missing file wakes the check, with no polling; bounded by the limit; the watch's callback
//! never blocks (it only sends on an unbounded channel) and the watch ends with the wait.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::rows::{Attachment, Transfer};

/// How long a text waits for its files by default.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// How a wait ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Waited {
    /// Every file was complete (at once or later), or will not come.
    Complete,
    /// The limit passed; these (display names) were still incomplete.
    TimedOut(Vec<String>),
}

/// Whether `attachment`'s file is complete on disk.
pub fn is_complete(attachment: &Attachment) -> bool {
    let Some(path) = attachment.path.as_deref() else {
        return false;
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => match attachment.total_bytes {
            0 => meta.len() > 0,
            total => meta.len() >= total,
        },
        _ => false,
    }
}

/// The attachments still to come: not complete, and not failed for good.
fn incomplete(attachments: &[Attachment]) -> Vec<&Attachment> {
    attachments
        .iter()
        .filter(|a| a.transfer != Transfer::Failed && !is_complete(a))
        .collect()
}

/// Waits until every attachment still to come is complete, or `limit` passes.
pub async fn wait_for_files(attachments: &[Attachment], limit: Duration) -> Waited {
    let paths = || {
        incomplete(attachments)
            .iter()
            .filter_map(|a| a.path.clone())
            .collect::<Vec<_>>()
    };
    let done = until(limit, "attachment files", paths, || {
        incomplete(attachments).is_empty().then_some(())
    })
    .await;
    match done {
        Some(()) => Waited::Complete,
        None => Waited::TimedOut(
            incomplete(attachments)
                .iter()
                .map(|a| a.display_name())
                .collect(),
        ),
    }
}

/// Runs `check` now and after every file event near the files `watch` names (the deepest
/// existing folder above each, asked again each round: folders appear as a download
/// starts) until it gives `Some`, or `limit` passes (then `check` decides once more).
async fn until<T>(
    limit: Duration,
    what: &str,
    mut watch: impl FnMut() -> Vec<PathBuf>,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    if let Some(found) = check() {
        return Some(found);
    }
    let deadline = tokio::time::Instant::now() + limit;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(err) => {
            tracing::warn!(cause = %err, what, "cannot watch for changes; waiting until the limit");
            None
        }
    };
    let mut watched: Vec<PathBuf> = Vec::new();
    loop {
        // Watch first, then check: a change between the two is seen by one or the other.
        if let Some(w) = watcher.as_mut() {
            for dir in watch().iter().filter_map(|p| nearest_folder(p)) {
                if !watched.contains(&dir) && w.watch(&dir, RecursiveMode::Recursive).is_ok() {
                    watched.push(dir);
                }
            }
        }
        if let Some(found) = check() {
            return Some(found);
        }
        tracing::debug!("waiting for {what}");
        tokio::select! {
            // Without a watch (or once it ends) only the limit is left to wait for.
            event = rx.recv(), if watcher.is_some() => if event.is_none() { watcher = None; },
            () = tokio::time::sleep_until(deadline) => return check(),
        }
    }
}

/// The deepest existing folder above `file`.
fn nearest_folder(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .find(|dir| dir.is_dir())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(path: &Path, total_bytes: u64) -> Attachment {
        Attachment {
            guid: "g".into(),
            path: Some(path.to_path_buf()),
            total_bytes,
            transfer_name: Some("IMG_1.JPG".into()),
            ..Attachment::default()
        }
    }

    #[test]
    fn complete_means_present_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.jpg");
        assert!(!is_complete(&attachment(&file, 4)));
        std::fs::write(&file, b"ab").unwrap();
        assert!(
            !is_complete(&attachment(&file, 4)),
            "smaller than total_bytes"
        );
        assert!(is_complete(&attachment(&file, 2)));
        assert!(is_complete(&attachment(&file, 0)));
        std::fs::write(&file, b"").unwrap();
        assert!(
            !is_complete(&attachment(&file, 0)),
            "empty with an unknown size"
        );
        assert!(!is_complete(&attachment(dir.path(), 0)), "a folder");
    }

    #[tokio::test]
    async fn a_file_written_later_in_a_new_folder_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ab/cd/GUID/IMG_1.JPG");
        let list = vec![attachment(&file, 5)];
        let writer = {
            let file = file.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, b"12345").unwrap();
            })
        };
        let waited = wait_for_files(&list, Duration::from_secs(20)).await;
        writer.await.unwrap();
        assert_eq!(waited, Waited::Complete);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_that_never_comes_ends_the_wait_at_the_limit_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let list = vec![attachment(&dir.path().join("never.jpg"), 5)];
        let waited = wait_for_files(&list, Duration::from_secs(120)).await;
        assert_eq!(waited, Waited::TimedOut(vec!["IMG_1.JPG".into()]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_messages_gave_up_on_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut failed = attachment(&dir.path().join("failed.jpg"), 5);
        failed.transfer = Transfer::Failed;
        let start = tokio::time::Instant::now();
        assert_eq!(
            wait_for_files(&[failed.clone()], Duration::from_secs(120)).await,
            Waited::Complete
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait at all");
        let pending = attachment(&dir.path().join("pending.jpg"), 5);
        assert_eq!(
            wait_for_files(&[failed, pending], Duration::from_secs(120)).await,
            Waited::TimedOut(vec!["IMG_1.JPG".into()]),
            "the other one is still waited for"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(120));
    }
}
