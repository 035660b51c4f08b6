//! The memory of replies sent, so that Messages' copies of them are never taken for texts.
//!
//! In a chat with yourself Messages records every reply twice: once as sent (`is_from_me =
//! 1`) and once as received from your own address (`is_from_me = 0`, a new guid), and the
//! copy is not byte for byte the reply: it may be in `attributedBody` only, with whitespace,
//! quotes and invisible characters changed. So every reply is remembered before it is sent
//! (chat, a SHA-256 digest of its [`normalise`]d text, time) in `echoes.json`, and a row of
//! the same chat whose normalised text matches a reply sent in the last [`WINDOW`] is that
//! reply's copy. Each reply accounts for at most one received and one sent copy, so the
//! person repeating a reply's words later is still heard. The normal form follows the echo
//! key of the iMessage plugin in anthropics/claude-plugins-official
//! (`external_plugins/imessage/server.ts`, `echoKey`): drop zero-width joiners and variation
//! selectors, fold typographic quotes to straight ones, trim and collapse whitespace.
//!
//! Invariants: a reply is on disk before it is sent (so a restart between sending and
//! reading its copy still knows it); the file holds only the window's replies; it is written
//! atomically ([`persist::write_atomic`]); an unreadable file is moved aside and the memory
//! starts empty. All calls block (fsync): call them from blocking code or `spawn_blocking`.

use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::persist::{self, Loaded};

/// The file in the data directory.
pub const FILE: &str = "echoes.json";

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

/// The replies of the last [`WINDOW`], saved in one file.
#[derive(Debug)]
pub struct Echoes {
    path: Option<PathBuf>,
    replies: Mutex<Vec<Reply>>,
}

impl Echoes {
    /// Loads `path` (a missing file is an empty memory; an unreadable one is moved aside).
    pub fn open(path: PathBuf) -> io::Result<Echoes> {
        let replies = match persist::load_json::<Vec<Reply>>(&path)? {
            Loaded::Ok(replies) => replies,
            Loaded::Missing => Vec::new(),
            Loaded::MovedAside { moved_to, reason } => {
                tracing::warn!(path = ?path, moved_to = ?moved_to, %reason,
                    "echo memory unreadable; moved aside, starting empty");
                Vec::new()
            }
        };
        Ok(Echoes {
            path: Some(path),
            replies: Mutex::new(replies),
        })
    }

    /// A memory that is not saved (tests, and front ends that send nothing).
    pub fn in_memory() -> Echoes {
        Echoes {
            path: None,
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
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec_pretty(replies).map_err(io::Error::other)?;
        persist::write_atomic(path, &bytes)
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

    #[test]
    fn the_memory_survives_a_restart_and_forgets_old_replies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("echoes.json");
        let now = Utc::now();
        {
            let echoes = Echoes::open(path.clone()).unwrap();
            echoes.remember(CHAT, "old", now - WINDOW * 2).unwrap();
            echoes.remember(CHAT, "Saved to Ideas.", now).unwrap();
            assert_eq!(echoes.len(), 1, "the old reply is pruned");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("Saved to Ideas"), "only a digest is stored");
        let echoes = Echoes::open(path.clone()).unwrap();
        assert!(echoes.take(CHAT, "Saved to Ideas.", Copy::Received, now));
        let reopened = Echoes::open(path.clone()).unwrap();
        assert!(!reopened.take(CHAT, "Saved to Ideas.", Copy::Received, now));

        std::fs::write(&path, b"{ not json").unwrap();
        let fresh = Echoes::open(path).unwrap();
        assert!(fresh.is_empty());
    }
}
