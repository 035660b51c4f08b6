//! Intake: notices new rows in chat.db, admits allowed senders, claims their texts in the
//! ledger and hands them to the router.
//!
//! Invariants: a text is claimed durably before any work on it starts; the cursor moves past
//! a row only once it is claimed or skipped; strangers never reach the router. The database
//! is reopened when its file is replaced; a database rebuilt with lower ROWIDs re-seeds the
//! cursor instead of stalling. Reading and claiming run on the blocking pool (SQLite and fsync).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::allowlist::Allowlist;
use crate::chatdb::{self, ChatDb, IncomingMessage};
use crate::ledger::{Cursor, Ledger};
use crate::router::{Handler, Job, Router};
use crate::status::{State, StatusBoard};
use crate::watcher::Watcher;

/// The intake loop's inputs.
pub struct Intake<H> {
    /// Messages' database.
    pub chat_db: PathBuf,
    /// Safety-net poll interval.
    pub poll: std::time::Duration,
    /// Claimed and finished texts, and the cursor.
    pub ledger: Arc<Ledger>,
    /// Who may reach the agent (shared so the app can change it live).
    pub allowlist: Arc<RwLock<Allowlist>>,
    /// Where admitted texts go.
    pub router: Router<H>,
    /// What the tray shows.
    pub status: StatusBoard,
    /// `true` while the user has paused the bridge.
    pub paused: watch::Receiver<bool>,
}

/// An open database and the identity of the file it was opened from.
struct Open {
    db: ChatDb,
    identity: Option<(u64, u64)>,
}

impl<H: Handler> Intake<H> {
    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut watcher = Watcher::new(&self.chat_db, self.poll);
        let mut open: Option<Open> = None;
        let mut announced = false;
        loop {
            if !*self.paused.borrow_and_update() {
                open = self.read_new(open).await;
                self.status.update(|s| {
                    if open.is_some() && !matches!(s.state, State::Running) {
                        s.state = State::Running;
                    }
                });
            } else {
                self.status.update(|s| s.state = State::Paused);
            }
            if !announced {
                info!(chat_db = %self.chat_db.display(), "ready: watching for new texts");
                announced = true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = watcher.changed() => {}
                changed = self.paused.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Reads and dispatches everything new; returns the connection to keep.
    async fn read_new(&self, open: Option<Open>) -> Option<Open> {
        let path = self.chat_db.clone();
        let ledger = Arc::clone(&self.ledger);
        let allowlist = Arc::clone(&self.allowlist);
        let result =
            tokio::task::spawn_blocking(move || read_and_claim(&path, open, &ledger, &allowlist))
                .await;
        let (open, outcome) = match result {
            Ok(pair) => pair,
            Err(err) => {
                warn!(cause = %err, "chat.db reader task failed");
                return None;
            }
        };
        match outcome {
            Ok(Admitted {
                messages,
                strangers,
            }) => {
                for (handle, at) in strangers {
                    self.status.saw_stranger(&handle, at);
                }
                for message in messages {
                    self.router.dispatch(Job::Message(message));
                }
            }
            Err(err) => {
                let reason = match &err {
                    chatdb::Error::PermissionDenied { .. } => "Full Disk Access".to_string(),
                    chatdb::Error::NotFound { .. } => {
                        "Messages is not set up (no chat.db)".to_string()
                    }
                    other => other.to_string(),
                };
                warn!(cause = %err, "cannot read chat.db; will keep checking");
                self.status.update(|s| {
                    s.state = State::NeedsSetup(reason);
                    s.last_error = Some(err.to_string());
                });
            }
        }
        open
    }
}

struct Admitted {
    messages: Vec<IncomingMessage>,
    strangers: Vec<(String, chrono::DateTime<Utc>)>,
}

/// Blocking: (re)opens the database when needed, reads every row past the cursor, admits
/// allowed senders and claims their texts.
fn read_and_claim(
    path: &Path,
    open: Option<Open>,
    ledger: &Ledger,
    allowlist: &RwLock<Allowlist>,
) -> (Option<Open>, Result<Admitted, chatdb::Error>) {
    let identity = file_identity(path);
    let open = match open {
        Some(open) if open.identity == identity => open,
        previous => {
            if previous.is_some() {
                info!("chat.db was replaced; reopening");
            }
            match ChatDb::open(path) {
                Ok(db) => Open { db, identity },
                Err(err) => return (None, Err(err)),
            }
        }
    };
    let result = read_all(&open.db, ledger, allowlist);
    (Some(open), result)
}

fn read_all(
    db: &ChatDb,
    ledger: &Ledger,
    allowlist: &RwLock<Allowlist>,
) -> Result<Admitted, chatdb::Error> {
    let mut admitted = Admitted {
        messages: Vec::new(),
        strangers: Vec::new(),
    };
    let newest = db.newest()?;
    let mut cursor = match (ledger.cursor(), &newest) {
        (None, newest) => {
            // First start: begin at the newest row; history is not replayed.
            let seed = newest.as_ref().map_or(
                Cursor {
                    rowid: 0,
                    date: None,
                },
                |p| Cursor {
                    rowid: p.rowid,
                    date: Some(p.date),
                },
            );
            info!(
                rowid = seed.rowid,
                "first start: beginning at the newest text"
            );
            persist_cursor(ledger, seed);
            return Ok(admitted);
        }
        (Some(cursor), Some(newest)) if newest.rowid < cursor.rowid => {
            warn!(
                cursor = cursor.rowid,
                newest = newest.rowid,
                "chat.db was rebuilt; re-seeding"
            );
            let seed = Cursor {
                rowid: newest.rowid,
                date: Some(newest.date),
            };
            persist_cursor(ledger, seed);
            return Ok(admitted);
        }
        (Some(cursor), _) => cursor,
    };
    loop {
        let batch = db.read_after(cursor.rowid, Utc::now())?;
        let mut claim = Vec::new();
        {
            let allowlist = allowlist.read().expect("allowlist lock");
            for message in batch.messages {
                if allowlist.is_allowed(&message.sender) {
                    claim.push(message);
                } else {
                    info!(sender = %message.sender, rowid = message.rowid, "ignored a text from a sender not on the allowlist");
                    admitted.strangers.push((message.sender, message.date));
                }
            }
        }
        let date = claim.last().map(|m| m.date).or(cursor.date);
        let next = Cursor {
            rowid: batch.next_after,
            date,
        };
        if next.rowid != cursor.rowid || !claim.is_empty() {
            match ledger.claim(&claim, next) {
                Ok(fresh) => {
                    debug!(
                        read = claim.len(),
                        fresh = fresh.len(),
                        cursor = next.rowid,
                        "claimed"
                    );
                    admitted.messages.extend(fresh);
                }
                Err(err) => {
                    // Not claimed, so not dispatched: the same rows are read again next time.
                    warn!(cause = %err, "could not record claimed texts");
                    return Ok(admitted);
                }
            }
        }
        cursor = next;
        if !batch.more {
            return Ok(admitted);
        }
    }
}

fn persist_cursor(ledger: &Ledger, cursor: Cursor) {
    if let Err(err) = ledger.advance(cursor) {
        warn!(cause = %err, "could not record the chat.db cursor");
    }
}

/// The file's identity (device, inode): a replaced database has a new one.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .map(|t| {
            let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (d.as_secs(), u64::from(d.subsec_nanos()))
        })
}
