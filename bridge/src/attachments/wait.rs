//! Waits for attachments' files: Messages often writes a text's rows before its files have
//! finished downloading. A file is complete when it is a regular file at least
//! `total_bytes` long (non-empty when the size is unknown). A file whose download Messages
//! recorded as failed (`transfer_state` 6, [`Transfer::Failed`]) is not waited for: it
//! does not come without the user's doing, and the text is handled at once without it.
//!
//! Messages updates a waiting text's attachment rows in place as the download goes on (the
//! file's name, its size, `transfer_state`): given the row ([`RowsOf`]), the wait reads
//! them again at its start and on every change to `chat.db`'s files, and ends with them as
//! they then stand.
//!
//! Invariants: event-driven — a notify watch on the nearest existing folder above each
//! missing file, and intake's watch of `chat.db`, wake the check, with no polling but that
//! watch's slow safety net; bounded by the limit; the file watch's callback never blocks (it
//! only sends on an unbounded channel) and both watches end with the wait.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use rusqlite::Connection;
use tokio::sync::mpsc;

use super::rows::{self, Attachment, Transfer};

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

/// The message whose attachment rows a wait reads again: its row in the `chat.db` intake
/// reads.
#[derive(Clone, Debug)]
pub struct RowsOf {
    /// Messages' database.
    pub chat_db: PathBuf,
    /// The message's ROWID.
    pub rowid: i64,
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

/// Whether some of `attachments` are still to come, so that [`wait_for_files`] would wait.
pub fn any_to_come(attachments: &[Attachment]) -> bool {
    !incomplete(attachments).is_empty()
}

/// Waits until every attachment still to come is complete, or `limit` passes. With `of`,
/// `attachments` are read again from `chat.db` as the wait goes, and left as last read.
pub async fn wait_for_files(
    attachments: &mut Vec<Attachment>,
    limit: Duration,
    of: Option<RowsOf>,
) -> Waited {
    if incomplete(attachments).is_empty() {
        return Waited::Complete;
    }
    let mut reread = of.and_then(Reread::open);
    if let Some(reread) = &reread {
        reread.refresh(attachments);
        if incomplete(attachments).is_empty() {
            return Waited::Complete;
        }
    }
    let deadline = tokio::time::Instant::now() + limit;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |_event| {
        let _ = tx.send(());
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(err) => {
            tracing::warn!(cause = %err, "cannot watch for attachment files; waiting on chat.db and the limit");
            None
        }
    };
    let mut watched: Vec<PathBuf> = Vec::new();
    loop {
        if let Some(w) = watcher.as_mut() {
            let dirs = incomplete(attachments)
                .iter()
                .filter_map(|a| a.path.as_deref().and_then(nearest_folder))
                .collect::<Vec<_>>();
            for dir in dirs {
                if !watched.contains(&dir) && w.watch(&dir, RecursiveMode::Recursive).is_ok() {
                    watched.push(dir);
                }
            }
        }
        if incomplete(attachments).is_empty() {
            return Waited::Complete;
        }
        tracing::debug!("waiting for attachment files");
        let db_changed = async {
            match reread.as_mut() {
                Some(r) => r.changes.changed().await,
                None => std::future::pending().await,
            }
        };
        let mut read_rows = false;
        tokio::select! {
            event = rx.recv(), if watcher.is_some() => if event.is_none() { watcher = None; },
            () = db_changed => read_rows = true,
            () = tokio::time::sleep_until(deadline) => break,
        }
        if let (true, Some(reread)) = (read_rows, &reread) {
            reread.refresh(attachments);
        }
    }
    match incomplete(attachments).as_slice() {
        [] => Waited::Complete,
        left => Waited::TimedOut(left.iter().map(|a| a.display_name()).collect()),
    }
}

/// A waiting text's attachment rows, read again on every change to `chat.db`'s files.
struct Reread {
    conn: Connection,
    rowid: i64,
    home: Option<PathBuf>,
    changes: crate::watcher::Watcher,
}

impl Reread {
    fn open(of: RowsOf) -> Option<Reread> {
        Some(Reread {
            conn: rows::open_read_only(&of.chat_db)?,
            rowid: of.rowid,
            home: dirs::home_dir(),
            changes: crate::watcher::Watcher::new(&of.chat_db, rows::SAFETY_POLL),
        })
    }

    /// `attachments` as the rows now stand; left as they are when the read fails or finds
    /// none (a row deleted meanwhile: what was read before is still what the text had).
    fn refresh(&self, attachments: &mut Vec<Attachment>) {
        match rows::read(&self.conn, self.rowid, self.home.as_deref()) {
            Ok(now) if !now.is_empty() => *attachments = now,
            Ok(_) => {}
            Err(err) => tracing::debug!(cause = %err, "could not read the attachment rows again"),
        }
    }
}

/// The nearest folder above `file` that exists (the one a download's folder appears in).
fn nearest_folder(file: &Path) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .find(|dir| dir.is_dir())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use util::chatdb::{FileRow, FixtureDb, Msg};

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
        let mut list = vec![attachment(&file, 5)];
        let writer = {
            let file = file.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, b"12345").unwrap();
            })
        };
        let waited = wait_for_files(&mut list, Duration::from_secs(20), None).await;
        writer.await.unwrap();
        assert_eq!(waited, Waited::Complete);
    }

    #[tokio::test(start_paused = true)]
    async fn a_file_that_never_comes_ends_the_wait_at_the_limit_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = vec![attachment(&dir.path().join("never.jpg"), 5)];
        let waited = wait_for_files(&mut list, Duration::from_secs(120), None).await;
        assert_eq!(waited, Waited::TimedOut(vec!["IMG_1.JPG".into()]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_download_messages_gave_up_on_is_not_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let mut failed = attachment(&dir.path().join("failed.jpg"), 5);
        failed.transfer = Transfer::Failed;
        let start = tokio::time::Instant::now();
        assert_eq!(
            wait_for_files(&mut vec![failed.clone()], Duration::from_secs(120), None).await,
            Waited::Complete
        );
        assert_eq!(start.elapsed(), Duration::ZERO, "no wait at all");
        let pending = attachment(&dir.path().join("pending.jpg"), 5);
        assert_eq!(
            wait_for_files(&mut vec![failed, pending], Duration::from_secs(120), None).await,
            Waited::TimedOut(vec!["IMG_1.JPG".into()]),
            "the other one is still waited for"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(120));
    }

    /// A text with one attachment row in a fixture chat.db of the real schema, its file
    /// meant for `file`: the database, the message's row and the row as first read.
    fn one_row(dir: &Path, file: &Path) -> (FixtureDb, RowsOf, Vec<Attachment>) {
        let db = FixtureDb::create(&dir.join("chat.db"));
        let msg = Msg::new("iMessage;-;+15551234567", "+15551234567").text("\u{FFFC}");
        let (inserted, _) = db.insert_with_files(
            &msg,
            &[FileRow::new("IMG_2.JPG", "image/jpeg", 5).downloading()],
            dir,
        );
        db.conn()
            .execute(
                "UPDATE attachment SET filename = ?1",
                [file.to_string_lossy()],
            )
            .unwrap();
        let of = RowsOf {
            chat_db: db.path().to_path_buf(),
            rowid: inserted.rowid,
        };
        let first = rows::read(
            &rows::open_read_only(db.path()).unwrap(),
            inserted.rowid,
            None,
        );
        (db, of, first.unwrap())
    }

    /// Messages names the file only once its download starts (the row updated in place):
    /// the wait reads the row again on chat.db's change and ends when that file is whole,
    /// leaving the row as it now stands.
    #[tokio::test]
    async fn a_row_that_names_its_file_later_is_read_again_and_its_file_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("Attachments/ab/GUID/IMG_2.JPG");
        let (db, of, mut list) = one_row(dir.path(), &file);
        db.conn()
            .execute("UPDATE attachment SET filename = NULL", [])
            .unwrap();
        list[0].path = None;
        let writer = {
            let file = file.clone();
            let chat_db = db.path().to_path_buf();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                let db = FixtureDb::open(&chat_db);
                db.conn()
                    .execute(
                        "UPDATE attachment SET filename = ?1, transfer_state = 5",
                        [file.to_string_lossy()],
                    )
                    .unwrap();
                std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                std::fs::write(&file, b"12345").unwrap();
            })
        };
        let waited = wait_for_files(&mut list, Duration::from_secs(20), Some(of)).await;
        writer.await.unwrap();
        assert_eq!(waited, Waited::Complete);
        assert_eq!(list[0].path.as_deref(), Some(file.as_path()));
        assert_eq!(list[0].transfer, Transfer::Finished);
    }

    /// A download that fails while the text waits (`transfer_state` set to 6 in place) ends
    /// the wait then, not at the limit.
    #[tokio::test]
    async fn a_download_that_fails_while_waited_for_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (db, of, mut list) = one_row(dir.path(), &dir.path().join("never/IMG_2.JPG"));
        assert_eq!(list[0].transfer, Transfer::Pending);
        let failer = {
            let chat_db = db.path().to_path_buf();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                FixtureDb::open(&chat_db)
                    .conn()
                    .execute("UPDATE attachment SET transfer_state = 6", [])
                    .unwrap();
            })
        };
        let waited = wait_for_files(&mut list, Duration::from_secs(20), Some(of)).await;
        failer.await.unwrap();
        assert_eq!(waited, Waited::Complete);
        assert_eq!(list[0].transfer, Transfer::Failed);
    }
}
