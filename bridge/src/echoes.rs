//! The memory of replies sent, so that Messages' copies of them are never taken for texts.
//!
//! In a chat with yourself Messages records every reply twice: once as sent (`is_from_me =
//! 1`) and once as received from your own address (`is_from_me = 0`, a new guid), and the
//! copy is not byte for byte the reply: it may be in `attributedBody` only, with whitespace,
//! quotes and invisible characters changed. So every reply is remembered before it is sent
//! (chat, a SHA-256 digest of its [`normalise`]d text, time) in the state database
//! ([`crate::state`]; older versions kept `echoes.json`, imported once), and a row of
//! the same chat whose normalised text matches a reply sent in the last [`WINDOW`] is that
//! reply's copy. Each reply accounts for at most one received and one sent copy, so the
//! person repeating a reply's words later is still heard. The normal form follows the echo
//! key of the iMessage plugin in anthropics/claude-plugins-official
//! (`external_plugins/imessage/server.ts`, `echoKey`): drop zero-width joiners and variation
//! selectors, fold typographic quotes to straight ones, trim and collapse whitespace.
//!
//! Invariants: a reply is in the database before it is sent (so a restart between sending
//! and reading its copy still knows it), committed without its own fsync
//! ([`StateDb::write_relaxed`]): a process crash loses nothing, and the text's finish commit,
//! which follows, makes it durable (a power cut before that re-handles the text anyway); only
//! the window's replies are kept; an unreadable old file is moved aside and the memory starts
//! empty. All calls block: call them from blocking code or `spawn_blocking`.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use rusqlite::OptionalExtension;

use crate::persist::{self, Loaded};
use crate::state::StateDb;

/// The file older versions kept the memory in, in the data directory (imported once).
pub const FILE: &str = "echoes.json";

/// Its key in the state database's `meta` table.
const KEY: &str = "echoes";

/// How long a reply's copies are expected.
pub const WINDOW: TimeDelta = TimeDelta::minutes(10);

/// Which copy of a reply a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Copy {
    /// `is_from_me = 0`: Messages' "received" copy in a chat with yourself.
    Received,
    /// `is_from_me = 1`: the sent row itself.
    Sent,
}

/// One reply remembered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Reply {
    chat: String,
    digest: String,
    at: DateTime<Utc>,
    #[serde(default)]
    received_seen: bool,
    #[serde(default)]
    sent_seen: bool,
}

/// The replies of the last [`WINDOW`], saved in the state database.
#[derive(Debug)]
pub struct Echoes {
    db: Option<Arc<StateDb>>,
    replies: Mutex<Vec<Reply>>,
}

impl Echoes {
    /// Loads the memory from `db`; an `old_file` (`echoes.json` of an older version) is
    /// imported when the database holds none, then kept aside (an unreadable one is moved
    /// aside and the memory starts empty).
    pub fn open(db: Arc<StateDb>, old_file: &Path) -> io::Result<Echoes> {
        let stored: Option<String> = db
            .read(|c| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", [KEY], |r| r.get(0))
                    .optional()
            })
            .map_err(io::Error::other)?;
        let mut replies: Vec<Reply> = stored
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        let old = match persist::load_json::<Vec<Reply>>(old_file)? {
            Loaded::Ok(old) => Some(old),
            Loaded::Missing => None,
            Loaded::MovedAside { moved_to, reason } => {
                tracing::warn!(path = ?old_file, moved_to = ?moved_to, %reason,
                    "echo memory unreadable; moved aside, starting empty");
                None
            }
        };
        let echoes = Echoes {
            db: Some(db),
            replies: Mutex::new(Vec::new()),
        };
        if let Some(old) = old {
            if replies.is_empty() {
                replies = old;
                echoes.save(&replies)?;
            }
            persist::rename_beside(old_file, "migrated")?;
        }
        *echoes.lock() = replies;
        Ok(echoes)
    }

    /// A memory that is not saved (tests, and front ends that send nothing).
    pub fn in_memory() -> Echoes {
        Echoes {
            db: None,
            replies: Mutex::new(Vec::new()),
        }
    }

    /// Remembers a reply about to be sent into `chat`, durably, before it is sent.
    pub fn remember(&self, chat: &str, text: &str, now: DateTime<Utc>) -> io::Result<()> {
        let mut replies = self.lock();
        replies.retain(|r| now.signed_duration_since(r.at) <= WINDOW);
        replies.push(Reply {
            chat: chat.to_string(),
            digest: digest(text),
            at: now,
            received_seen: false,
            sent_seen: false,
        });
        self.save(&replies)
    }

    /// Whether a row of `chat` with `text` is a `copy` of a reply sent in the last
    /// [`WINDOW`] whose such copy was not seen yet; if so, that copy is marked seen.
    pub fn take(&self, chat: &str, text: &str, copy: Copy, now: DateTime<Utc>) -> bool {
        let digest = digest(text);
        let mut replies = self.lock();
        let found = replies.iter_mut().find(|r| {
            let seen = match copy {
                Copy::Received => r.received_seen,
                Copy::Sent => r.sent_seen,
            };
            r.chat == chat
                && r.digest == digest
                && !seen
                && now.signed_duration_since(r.at) <= WINDOW
        });
        let Some(reply) = found else {
            return false;
        };
        match copy {
            Copy::Received => reply.received_seen = true,
            Copy::Sent => reply.sent_seen = true,
        }
        if let Err(err) = self.save(&replies) {
            // In memory the copy is marked; only a restart could see it twice.
            tracing::warn!(cause = %err, "could not save the echo memory");
        }
        true
    }

    /// How many replies are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no reply is remembered.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn save(&self, replies: &[Reply]) -> io::Result<()> {
        let Some(db) = &self.db else {
            return Ok(());
        };
        let json = serde_json::to_string(replies).map_err(io::Error::other)?;
        db.write_relaxed(|tx| {
            tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?
                .execute([KEY, &json])
        })
        .map(drop)
        .map_err(io::Error::other)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Reply>> {
        // Every section leaves the list whole.
        crate::mutex::lock(&self.replies)
    }
}

/// The form a reply and its copies share: zero-width joiners and variation selectors
/// dropped, typographic quotes folded to straight ones, whitespace trimmed and collapsed.
pub fn normalise(text: &str) -> String {
    let folded: String = text
        .chars()
        .filter(|c| !matches!(c, '\u{200D}' | '\u{FE00}'..='\u{FE0F}'))
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201C}' | '\u{201D}' => '"',
            other => other,
        })
        .collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The hex SHA-256 of the normalised text.
fn digest(text: &str) -> String {
    let hash = Sha256::digest(normalise(text).as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = "iMessage;-;me@icloud.com";

    #[test]
    fn copies_match_through_what_messages_changes() {
        let sent = "Saved to Tasks: \"call Sam\" 👍🏽 — tagged person/sam";
        let copies = [
            sent.to_string(),
            "Saved to Tasks: \u{201C}call Sam\u{201D} 👍🏽 — tagged person/sam".to_string(),
            "  Saved to Tasks:  \"call Sam\"\n👍🏽 — tagged person/sam ".to_string(),
            "Saved to Tasks: \"call Sam\" 👍🏽\u{FE0F} — tagged\u{200D} person/sam".to_string(),
        ];
        for copy in &copies {
            assert_eq!(normalise(copy), normalise(sent), "{copy:?}");
        }
        assert_ne!(normalise("It's"), normalise("Its"));
        assert_eq!(normalise("It\u{2019}s"), "It's");
    }

    #[test]
    fn each_reply_accounts_for_one_copy_of_each_kind_within_the_window() {
        let echoes = Echoes::in_memory();
        let now = Utc::now();
        echoes.remember(CHAT, "Which day?", now).unwrap();
        assert!(!echoes.take("iMessage;-;+15550001111", "Which day?", Copy::Received, now));
        assert!(!echoes.take(CHAT, "Which week?", Copy::Received, now));
        assert!(echoes.take(CHAT, "Which  day?", Copy::Sent, now));
        assert!(echoes.take(CHAT, "Which day? ", Copy::Received, now));
        assert!(
            !echoes.take(CHAT, "Which day?", Copy::Received, now),
            "the person saying it again is heard"
        );
        echoes.remember(CHAT, "Done.", now).unwrap();
        let later = now + WINDOW + TimeDelta::seconds(1);
        assert!(!echoes.take(CHAT, "Done.", Copy::Received, later));
    }

    fn db(dir: &Path) -> Arc<StateDb> {
        Arc::new(StateDb::open(dir.join(crate::state::FILE)).unwrap().0)
    }

    #[test]
    fn the_memory_survives_a_restart_and_forgets_old_replies() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(FILE);
        let now = Utc::now();
        {
            let echoes = Echoes::open(db(dir.path()), &old).unwrap();
            echoes.remember(CHAT, "old", now - WINDOW * 2).unwrap();
            echoes.remember(CHAT, "Saved to Ideas.", now).unwrap();
            assert_eq!(echoes.len(), 1, "the old reply is pruned");
        }
        let stored: String = db(dir.path())
            .read(|c| {
                c.query_row("SELECT value FROM meta WHERE key = 'echoes'", [], |r| {
                    r.get(0)
                })
            })
            .unwrap();
        assert!(
            !stored.contains("Saved to Ideas"),
            "only a digest is stored"
        );
        let echoes = Echoes::open(db(dir.path()), &old).unwrap();
        assert!(echoes.take(CHAT, "Saved to Ideas.", Copy::Received, now));
        let reopened = Echoes::open(db(dir.path()), &old).unwrap();
        assert!(!reopened.take(CHAT, "Saved to Ideas.", Copy::Received, now));
    }

    #[test]
    fn an_old_echo_file_is_imported_then_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join(FILE);
        let now = Utc::now();
        let reply = Reply {
            chat: CHAT.into(),
            digest: digest("Saved to Ideas."),
            at: now,
            received_seen: false,
            sent_seen: false,
        };
        let bytes = serde_json::to_vec(&vec![reply]).unwrap();
        std::fs::write(&old, &bytes).unwrap();
        let echoes = Echoes::open(db(dir.path()), &old).unwrap();
        assert!(!old.exists());
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("echoes.json.migrated-"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(std::fs::read(&kept[0]).unwrap(), bytes);
        assert!(echoes.take(CHAT, "Saved to Ideas.", Copy::Received, now));

        std::fs::write(&old, b"{ not json").unwrap();
        let fresh = Echoes::open(db(dir.path()), &old).unwrap();
        assert!(!fresh.take(CHAT, "Saved to Ideas.", Copy::Sent, now + WINDOW * 2));
    }
}
