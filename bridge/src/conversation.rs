//! Handles one conversation's jobs: runs the agent inside the session and decides the
//! outcome (SPEC §1.5–§1.6).
//!
//! Invariants: a note written ends the session; a reply without a note leaves the session
//! waiting with the original text in `pending_input`; an agent failure files the raw text to
//! `Inbox/` and tells the user, so nothing is lost. A text is marked finished in the ledger
//! only once its outcome is on disk. Idle sessions are ended through the same per-chat queue
//! as texts, so an answer arriving meanwhile is neither lost nor handled twice.

use std::sync::Arc;
use std::time::Duration;

use chrono::{Local, Utc};
use tracing::{error, info, warn};

use crate::agent::{Agent, AgentError};
use crate::chatdb::{Chat, IncomingMessage};
use crate::ledger::Ledger;
use crate::router::{Handler, Job};
use crate::sender::Sender;
use crate::sessions::{Session, SessionState, SessionStore};
use crate::status::StatusBoard;
use crate::tools::{ToolRecord, Tools};
use crate::vault::{Folder, NewNote, Vault};

/// Everything a conversation needs; shared by all of them.
pub struct Conversations {
    /// The LLM tool loop.
    pub agent: Agent,
    /// The user's notes.
    pub vault: Vault,
    /// Replies.
    pub sender: Sender,
    /// Conversation state.
    pub sessions: SessionStore,
    /// Claimed and finished texts.
    pub ledger: Arc<Ledger>,
    /// What the tray shows.
    pub status: StatusBoard,
    /// Idle time after which a session ends.
    pub timeout: Duration,
}

impl Handler for Arc<Conversations> {
    async fn handle(&self, job: Job) {
        match job {
            Job::Message(message) => self.on_message(message).await,
            Job::Timeout { chat } => self.on_timeout(&chat).await,
        }
    }
}

impl Conversations {
    async fn on_message(&self, message: IncomingMessage) {
        let now = Utc::now();
        let chat = message.chat.guid.clone();
        let mut session = self
            .sessions
            .get(&chat)
            .unwrap_or_else(|| Session::new(message.chat.clone(), message.sender.clone(), now));
        session.state = SessionState::Working;
        session.last_activity = now;
        session.message_count += 1;
        self.sessions.put(session.clone());
        info!(chat = %chat, rowid = message.rowid, "handling text");

        let tools = Tools::new(
            self.vault.clone(),
            self.sender.clone(),
            message.chat.clone(),
            Some(message.guid.clone()),
        );
        let result = self
            .agent
            .run(&mut session.transcript, &message.text, &tools)
            .await;
        let record = tools.record();
        let original = session
            .pending_input
            .clone()
            .unwrap_or_else(|| message.text.clone());
        let answer = session
            .pending_input
            .is_some()
            .then_some(message.text.as_str());
        let outcome = match result {
            Ok(report) => {
                session.input_tokens += report.usage.input_tokens;
                session.output_tokens += report.usage.output_tokens;
                if !record.notes_written.is_empty() {
                    self.sessions.remove(&chat);
                    "captured"
                } else {
                    let question = self
                        .ensure_reply(&message.chat, &record, &report.final_text)
                        .await;
                    session.pending_input = Some(original);
                    session.question = question;
                    session.state = SessionState::Waiting;
                    session.last_activity = Utc::now();
                    self.sessions.put(session);
                    "waiting for an answer"
                }
            }
            Err(err) if !record.notes_written.is_empty() => {
                warn!(chat = %chat, cause = %err, "agent failed after writing its note");
                self.sessions.remove(&chat);
                "captured"
            }
            Err(err) => {
                self.file_to_inbox(&message.chat, &original, answer, Some(&message.guid), &err)
                    .await;
                self.sessions.remove(&chat);
                "filed to Inbox"
            }
        };
        let ledger = Arc::clone(&self.ledger);
        let guid = message.guid.clone();
        match tokio::task::spawn_blocking(move || ledger.finish(&guid)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => error!(chat = %chat, cause = %err, "could not mark text finished"),
            Err(err) => error!(chat = %chat, cause = %err, "ledger task failed"),
        }
        self.status.update(|s| {
            s.handled += 1;
            s.sessions = self.sessions.len();
        });
        info!(chat = %chat, rowid = message.rowid, outcome, "text handled");
    }

    /// Ends a session idle longer than the timeout; a pending question is filed to Inbox first.
    async fn on_timeout(&self, chat: &str) {
        let Some(mut session) = self.sessions.get(chat) else {
            return;
        };
        let idle = Utc::now().signed_duration_since(session.last_activity);
        if idle.to_std().unwrap_or_default() < self.timeout {
            return; // the user wrote meanwhile
        }
        let Some(original) = session.pending_input.clone() else {
            info!(chat = %chat, "idle session ended");
            self.sessions.remove(chat);
            self.status.update(|s| s.sessions = self.sessions.len());
            return;
        };
        info!(chat = %chat, "no answer in time; filing to Inbox");
        let notice = crate::prompt::timeout_notice(&original);
        let tools = Tools::new(
            self.vault.clone(),
            self.sender.clone(),
            session.chat.clone(),
            None,
        );
        let result = self
            .agent
            .run(&mut session.transcript, &notice, &tools)
            .await;
        let record = tools.record();
        match result {
            Ok(report) if !record.notes_written.is_empty() => {
                self.ensure_reply(&session.chat, &record, &report.final_text)
                    .await;
            }
            Ok(_) => {
                let err = AgentError::Stopped("the agent did not file the text".into());
                self.file_to_inbox(&session.chat, &original, None, None, &err)
                    .await;
            }
            Err(err) if record.notes_written.is_empty() => {
                self.file_to_inbox(&session.chat, &original, None, None, &err)
                    .await;
            }
            Err(err) => warn!(chat = %chat, cause = %err, "agent failed after filing the text"),
        }
        self.sessions.remove(chat);
        self.status.update(|s| s.sessions = self.sessions.len());
    }

    /// Always reply: when the agent sent nothing, its final words (if any) go out instead.
    /// Returns what the user was last told.
    async fn ensure_reply(
        &self,
        chat: &Chat,
        record: &ToolRecord,
        final_text: &str,
    ) -> Option<String> {
        if let Some(last) = record.messages_sent.last() {
            return Some(last.clone());
        }
        let text = final_text.trim();
        if text.is_empty() {
            warn!(chat = %chat.guid, "the agent neither wrote a note nor replied");
            return None;
        }
        if let Err(err) = self.sender.send(chat, text).await {
            error!(chat = %chat.guid, cause = %err, "reply failed");
            self.status.update(|s| s.last_error = Some(err.to_string()));
        }
        Some(text.to_string())
    }

    /// The agent failed: keep the raw text in `Inbox/` and tell the user so.
    async fn file_to_inbox(
        &self,
        chat: &Chat,
        original: &str,
        answer: Option<&str>,
        source: Option<&str>,
        err: &AgentError,
    ) {
        error!(chat = %chat.guid, cause = %err, "agent failed; filing the raw text to Inbox");
        let mut content = original.to_string();
        if let Some(answer) = answer {
            content.push_str(&format!(
                "\n\nFollow-up from the same conversation: {answer}"
            ));
        }
        content.push_str(&format!("\n\n_Filed unprocessed by Second Brain: {err}._"));
        let title = inbox_title(original);
        let vault = self.vault.clone();
        let source = source.map(|s| format!("imessage:{s}"));
        let written = tokio::task::spawn_blocking(move || {
            let note = NewNote {
                folder: Folder::Inbox,
                title: &title,
                content: &content,
                tags: &[],
                confidence: None,
                source: source.as_deref(),
            };
            vault.write_note(&note, Local::now())
        })
        .await;
        let reply = match written {
            Ok(Ok(path)) => {
                info!(chat = %chat.guid, note = %path, "filed to Inbox");
                format!(
                    "I couldn't file that properly just now ({}), so I saved your text to Inbox. \
                     Nothing is lost.",
                    err.short_reason()
                )
            }
            Ok(Err(write_err)) => {
                error!(chat = %chat.guid, cause = %write_err, "could not write to Inbox either");
                format!(
                    "I couldn't file that just now ({}), and the vault could not be written. \
                     Please send it again later.",
                    err.short_reason()
                )
            }
            Err(join_err) => {
                error!(chat = %chat.guid, cause = %join_err, "Inbox write task failed");
                "Something went wrong filing that; please send it again later.".to_string()
            }
        };
        self.status.update(|s| {
            s.failed += 1;
            s.last_error = Some(err.to_string());
        });
        if let Err(send_err) = self.sender.send(chat, &reply).await {
            error!(chat = %chat.guid, cause = %send_err, "could not tell the user about the failure");
        }
    }
}

/// A title for an unprocessed text: its first words.
fn inbox_title(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().take(8).collect();
    let title = words.join(" ");
    let title: String = title.chars().take(60).collect();
    if title.is_empty() {
        "Unfiled text".into()
    } else {
        title
    }
}

#[cfg(test)]
mod tests {
    use super::inbox_title;

    #[test]
    fn inbox_titles_are_the_first_words() {
        assert_eq!(
            inbox_title("buy milk\nand eggs tomorrow"),
            "buy milk and eggs tomorrow"
        );
        assert_eq!(inbox_title("   "), "Unfiled text");
        assert_eq!(
            inbox_title("one two three four five six seven eight nine"),
            "one two three four five six seven eight"
        );
        assert_eq!(inbox_title(&"é".repeat(100)).chars().count(), 60);
    }
}
