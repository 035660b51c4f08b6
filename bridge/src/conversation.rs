//! Handles one conversation's jobs: runs the agent inside the session and decides the
//! outcome (SPEC §1.5–§1.6).
//!
//! Invariants: a note written ends the session; a reply without a note leaves the session
//! waiting with the original text in `pending_input`; an agent failure files the raw text to
//! `Inbox/` and tells the user, so nothing is lost. A text is marked finished in the ledger
//! only once its outcome is on disk. While the vault cannot be written, texts are not given
//! to the agent: they wait (claimed, not finished), in order, and are handled when a later
//! job or the retry tick finds the vault writable again. Texts over the sender's rate limit
//! are not handled; once the daily token budget is used up, texts go to `Inbox/`
//! unprocessed; either way the user is told once per limit window, not once per text. Every
//! reply goes through the [`Outbox`], so a text handled again after a crash is not answered
//! twice. Idle sessions are ended through the same per-chat queue as texts, so an answer
//! arriving meanwhile is neither lost nor handled twice.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{Local, Utc};
use tracing::{debug, error, info, warn};

use crate::agent::{Agent, AgentError, RunReport};
use crate::chatdb::{Chat, IncomingMessage};
use crate::ledger::Ledger;
use crate::limits::{Budget, Rate, RateLimiter, Spend};
use crate::outbox::Outbox;
use crate::router::{Handler, Job};
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
    /// Replies, recorded in the ledger.
    pub outbox: Outbox,
    /// Conversation state.
    pub sessions: SessionStore,
    /// Claimed and finished texts.
    pub ledger: Arc<Ledger>,
    /// What the tray shows.
    pub status: StatusBoard,
    /// Idle time after which a session ends.
    pub timeout: Duration,
    /// Texts per sender per minute.
    pub rate: RateLimiter,
    /// Tokens per day.
    pub budget: Arc<Budget>,
    /// Texts waiting for the vault.
    pub waiting: Waiting,
}

/// Texts claimed while the vault could not be written, in the order they came.
#[derive(Debug, Default)]
pub struct Waiting {
    texts: Mutex<Vec<IncomingMessage>>,
}

impl Waiting {
    /// How many texts wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The chats with waiting texts, each once, in the order their first text came.
    pub fn chats(&self) -> Vec<String> {
        let mut chats: Vec<String> = Vec::new();
        for text in self.lock().iter() {
            if !chats.contains(&text.chat.guid) {
                chats.push(text.chat.guid.clone());
            }
        }
        chats
    }

    fn push(&self, text: IncomingMessage) -> usize {
        let mut texts = self.lock();
        if !texts.iter().any(|t| t.guid == text.guid) {
            texts.push(text);
        }
        texts.len()
    }

    /// Removes and returns the chat's waiting texts, oldest first.
    fn take(&self, chat: &str) -> Vec<IncomingMessage> {
        let mut texts = self.lock();
        let (taken, kept) = std::mem::take(&mut *texts)
            .into_iter()
            .partition(|t| t.chat.guid == chat);
        *texts = kept;
        taken
    }

    fn lock(&self) -> MutexGuard<'_, Vec<IncomingMessage>> {
        // Pushes and partitions leave the list whole at every step.
        self.texts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handler for Arc<Conversations> {
    async fn handle(&self, job: Job) {
        match job {
            Job::Message(message) => self.on_message(message).await,
            Job::Timeout { chat } => self.on_timeout(&chat).await,
            Job::Resume { chat } => self.on_resume(&chat).await,
        }
    }
}

/// Told once per minute to a sender over the rate limit.
fn rate_notice(per_minute: usize) -> String {
    format!(
        "You're sending texts faster than I can file them (more than {per_minute} a minute), so \
         I skipped some. Please send those again in a minute."
    )
}

/// Told once per day when the token budget is used up.
const BUDGET_NOTICE: &str = "I've used up today's AI budget, so until tomorrow I'm saving your \
                             texts to Inbox as they are. Nothing is lost.";

impl Conversations {
    async fn on_message(&self, message: IncomingMessage) {
        if self.ledger.is_finished(&message.guid) {
            debug!(rowid = message.rowid, guid = ?message.guid, "text already finished");
            return;
        }
        let chat = message.chat.guid.clone();
        if !self.vault_ready().await {
            let waiting = self.waiting.push(message.clone());
            self.status.update(|s| s.waiting = waiting);
            info!(chat = ?chat, rowid = message.rowid, waiting, "vault unavailable; the text waits for it");
            return;
        }
        // Texts that waited for the vault go first: one chat is handled strictly in order.
        for earlier in self.take_waiting(&chat) {
            self.handle_text(earlier).await;
        }
        self.handle_text(message).await;
    }

    /// Handles the chat's texts that waited for the vault, if it is back.
    async fn on_resume(&self, chat: &str) {
        if !self.waiting.chats().iter().any(|c| c == chat) || !self.vault_ready().await {
            return;
        }
        let texts = self.take_waiting(chat);
        info!(chat = ?chat, count = texts.len(), "vault is back; handling texts that waited");
        for text in texts {
            self.handle_text(text).await;
        }
    }

    fn take_waiting(&self, chat: &str) -> Vec<IncomingMessage> {
        let texts = self.waiting.take(chat);
        if !texts.is_empty() {
            let left = self.waiting.len();
            self.status.update(|s| s.waiting = left);
        }
        texts
    }

    /// Whether the vault can be written now; the status says why not, until it can.
    async fn vault_ready(&self) -> bool {
        let checked = self.vault.off_runtime(|v| v.check_writable()).await;
        let (problem, outside) = match checked {
            Ok(layout) => (None, layout.outside),
            Err(err) => (
                Some(format!("cannot write to the vault: {err}")),
                Vec::new(),
            ),
        };
        if outside != self.status.get().vault_folders_outside {
            for folder in &outside {
                warn!(
                    ?folder,
                    "a vault folder points outside the vault; not writing there"
                );
            }
            self.status.update(|s| s.vault_folders_outside = outside);
        }
        let ready = problem.is_none();
        let was = self.status.get().vault_problem;
        if was.is_some() && ready {
            info!("the vault can be written again");
        } else if was.is_none()
            && let Some(problem) = &problem
        {
            warn!(problem = %problem, "vault unavailable; texts wait for it");
        }
        self.status.update(|s| s.vault_problem = problem);
        ready
    }

    /// One text, from limits to outcome; the text is finished at the end.
    async fn handle_text(&self, message: IncomingMessage) {
        let chat = message.chat.guid.clone();
        if let Rate::Limited { notify } = self.rate.check(&message.sender, message.date) {
            warn!(chat = ?chat, rowid = message.rowid, sender = ?message.sender,
                "sender is over the rate limit; text not handled");
            self.status.update(|s| s.rate_limited += 1);
            if notify {
                let notice = rate_notice(self.rate.per_minute());
                self.reply(&message.chat, Some(&message.guid), &notice)
                    .await;
            }
            self.finish(&message).await;
            return;
        }
        if let Spend::Exhausted { notify } = self.budget_check().await {
            self.over_budget(&message, notify).await;
            self.finish(&message).await;
            return;
        }

        let now = Utc::now();
        let mut session = self
            .sessions
            .get(&chat)
            .unwrap_or_else(|| Session::new(message.chat.clone(), message.sender.clone(), now));
        session.state = SessionState::Working;
        session.last_activity = now;
        session.message_count += 1;
        self.sessions.put(session.clone());
        info!(chat = ?chat, rowid = message.rowid, "handling text");

        let tools = Tools::new(
            self.vault.clone(),
            self.outbox.clone(),
            message.chat.clone(),
            Some(message.guid.clone()),
        );
        let result = self
            .agent
            .run(&mut session.transcript, &message.text, &tools)
            .await;
        self.after_run(&result).await;
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
                        .ensure_reply(
                            &message.chat,
                            Some(&message.guid),
                            &record,
                            &report.final_text,
                        )
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
                warn!(chat = ?chat, cause = %err, "agent failed after writing its note");
                self.sessions.remove(&chat);
                "captured"
            }
            Err(err) => {
                self.agent_failed(&message.chat, &original, answer, Some(&message.guid), &err)
                    .await;
                self.sessions.remove(&chat);
                "filed to Inbox"
            }
        };
        self.finish(&message).await;
        self.status.update(|s| {
            s.handled += 1;
            s.sessions = self.sessions.len();
        });
        info!(chat = ?chat, rowid = message.rowid, outcome, "text handled");
    }

    /// Marks the text finished in the ledger.
    async fn finish(&self, message: &IncomingMessage) {
        let ledger = Arc::clone(&self.ledger);
        let guid = message.guid.clone();
        let chat = &message.chat.guid;
        match tokio::task::spawn_blocking(move || ledger.finish(&guid)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => error!(chat = ?chat, cause = %err, "could not mark text finished"),
            Err(err) => error!(chat = ?chat, cause = %err, "ledger task failed"),
        }
    }

    /// Whether the day's token budget allows a run.
    async fn budget_check(&self) -> Spend {
        let budget = Arc::clone(&self.budget);
        let today = Local::now().date_naive();
        match tokio::task::spawn_blocking(move || budget.check(today)).await {
            Ok(Ok(spend)) => spend,
            Ok(Err(err)) => {
                // The notice flag could not be saved: say so once more rather than never.
                warn!(cause = %err, "could not save the token budget");
                Spend::Exhausted { notify: true }
            }
            Err(err) => {
                warn!(cause = %err, "budget task failed; running anyway");
                Spend::Allowed
            }
        }
    }

    /// Counts a run's tokens and keeps the API-key problem in the status current.
    async fn after_run(&self, result: &Result<RunReport, AgentError>) {
        match result {
            Ok(report) => {
                let budget = Arc::clone(&self.budget);
                let usage = report.usage;
                let today = Local::now().date_naive();
                let spent = tokio::task::spawn_blocking(move || budget.spend(today, &usage)).await;
                let used = match spent {
                    Ok(Ok(used)) => Some(used),
                    Ok(Err(err)) => {
                        warn!(cause = %err, "could not save the token budget");
                        Some(self.budget.used(today))
                    }
                    Err(err) => {
                        warn!(cause = %err, "budget task failed");
                        None
                    }
                };
                self.status.update(|s| {
                    s.api_problem = None;
                    if let Some(used) = used {
                        s.tokens_today = used;
                    }
                });
            }
            Err(err) if err.is_auth() => {
                error!(cause = %err, "the API rejected the key; texts go to Inbox until it is fixed");
                // The message starts "API key rejected (HTTP 401): …".
                self.status
                    .update(|s| s.api_problem = Some(err.to_string()));
            }
            Err(_) => {}
        }
    }

    /// The budget is used up: the text (with the question it answers, if any) goes to
    /// Inbox unprocessed, and the user is told once a day.
    async fn over_budget(&self, message: &IncomingMessage, notify: bool) {
        let chat = &message.chat;
        warn!(chat = ?chat.guid, rowid = message.rowid, "daily token budget used up; filing the text to Inbox unprocessed");
        let pending = self.sessions.get(&chat.guid).and_then(|s| s.pending_input);
        let (original, answer) = match &pending {
            Some(original) => (original.as_str(), Some(message.text.as_str())),
            None => (message.text.as_str(), None),
        };
        let filed = self
            .write_inbox(
                chat,
                original,
                answer,
                Some(&message.guid),
                "today's token budget is used up",
            )
            .await;
        self.sessions.remove(&chat.guid);
        self.status.update(|s| {
            s.over_budget += 1;
            s.sessions = self.sessions.len();
        });
        if notify {
            let notice = if filed {
                BUDGET_NOTICE.to_string()
            } else {
                "I've used up today's AI budget and could not save your text to the vault. \
                 Please send it again tomorrow."
                    .to_string()
            };
            self.reply(chat, Some(&message.guid), &notice).await;
        }
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
            info!(chat = ?chat, "idle session ended");
            self.sessions.remove(chat);
            self.status.update(|s| s.sessions = self.sessions.len());
            return;
        };
        if !self.vault_ready().await {
            // Kept: the next sweep tries again, so the pending text is never dropped.
            return;
        }
        if let Spend::Exhausted { .. } = self.budget_check().await {
            info!(chat = ?chat, "no answer in time and no budget left; filing to Inbox unprocessed");
            let filed = self
                .write_inbox(
                    &session.chat,
                    &original,
                    None,
                    None,
                    "no answer came, and today's token budget is used up",
                )
                .await;
            if filed {
                self.sessions.remove(chat);
                self.status.update(|s| s.sessions = self.sessions.len());
            }
            return;
        }
        info!(chat = ?chat, "no answer in time; filing to Inbox");
        let notice = crate::prompt::timeout_notice(&original);
        let tools = Tools::new(
            self.vault.clone(),
            self.outbox.clone(),
            session.chat.clone(),
            None,
        );
        let result = self
            .agent
            .run(&mut session.transcript, &notice, &tools)
            .await;
        self.after_run(&result).await;
        let record = tools.record();
        match result {
            Ok(report) if !record.notes_written.is_empty() => {
                self.ensure_reply(&session.chat, None, &record, &report.final_text)
                    .await;
            }
            Ok(_) => {
                let err = AgentError::Stopped("the agent did not file the text".into());
                self.agent_failed(&session.chat, &original, None, None, &err)
                    .await;
            }
            Err(err) if record.notes_written.is_empty() => {
                self.agent_failed(&session.chat, &original, None, None, &err)
                    .await;
            }
            Err(err) => warn!(chat = ?chat, cause = %err, "agent failed after filing the text"),
        }
        self.sessions.remove(chat);
        self.status.update(|s| s.sessions = self.sessions.len());
    }

    /// Always reply: when the agent sent nothing, its final words (if any) go out instead.
    /// Returns what the user was last told.
    async fn ensure_reply(
        &self,
        chat: &Chat,
        source: Option<&str>,
        record: &ToolRecord,
        final_text: &str,
    ) -> Option<String> {
        if let Some(last) = record.messages_sent.last() {
            return Some(last.clone());
        }
        let text = final_text.trim();
        if text.is_empty() {
            warn!(chat = ?chat.guid, "the agent neither wrote a note nor replied");
            return None;
        }
        self.reply(chat, source, text).await;
        Some(text.to_string())
    }

    /// Sends a reply of the bridge's own through the outbox; a failure is logged and shown.
    async fn reply(&self, chat: &Chat, source: Option<&str>, text: &str) {
        if let Err(err) = self.outbox.send(chat, source, text).await {
            error!(chat = ?chat.guid, cause = %err, "reply failed");
            self.status.update(|s| s.last_error = Some(err.to_string()));
        }
    }

    /// The agent failed: keep the raw text in `Inbox/` and tell the user so.
    async fn agent_failed(
        &self,
        chat: &Chat,
        original: &str,
        answer: Option<&str>,
        source: Option<&str>,
        err: &AgentError,
    ) {
        error!(chat = ?chat.guid, cause = %err, "agent failed; filing the raw text to Inbox");
        let filed = self
            .write_inbox(chat, original, answer, source, &err.to_string())
            .await;
        let reply = if filed {
            format!(
                "I couldn't file that properly just now ({}), so I saved your text to Inbox. \
                 Nothing is lost.",
                err.short_reason()
            )
        } else {
            format!(
                "I couldn't file that just now ({}), and the vault could not be written. \
                 Please send it again later.",
                err.short_reason()
            )
        };
        self.status.update(|s| {
            s.failed += 1;
            s.last_error = Some(err.to_string());
        });
        self.reply(chat, source, &reply).await;
    }

    /// Writes the raw text (and the answer it got, if any) to `Inbox/`, noting `why`;
    /// returns whether it was written.
    async fn write_inbox(
        &self,
        chat: &Chat,
        original: &str,
        answer: Option<&str>,
        source: Option<&str>,
        why: &str,
    ) -> bool {
        let mut content = original.to_string();
        if let Some(answer) = answer {
            content.push_str(&format!(
                "\n\nFollow-up from the same conversation: {answer}"
            ));
        }
        content.push_str(&format!("\n\n_Filed unprocessed by Second Brain: {why}._"));
        let title = inbox_title(original);
        let source = source.map(|s| format!("imessage:{s}"));
        let written = self
            .vault
            .off_runtime(move |vault| {
                let note = NewNote {
                    folder: Folder::Inbox,
                    title: &title,
                    content: &content,
                    tags: &[],
                    // Filed by the bridge, unread by the agent: no confidence in any filing.
                    confidence: 0,
                    source: source.as_deref(),
                };
                vault.write_note(&note, Local::now())
            })
            .await;
        match written {
            Ok(path) => {
                info!(chat = ?chat.guid, note = ?path, "filed to Inbox");
                true
            }
            Err(write_err) => {
                error!(chat = ?chat.guid, cause = %write_err, "could not write to Inbox");
                false
            }
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
    use super::{Waiting, inbox_title, rate_notice};
    use crate::chatdb::{Chat, IncomingMessage};

    fn text(rowid: i64, chat: &str) -> IncomingMessage {
        IncomingMessage {
            rowid,
            guid: format!("GUID-{rowid}"),
            chat: Chat {
                guid: chat.into(),
                identifier: chat.into(),
                is_group: false,
            },
            sender: "+15551234567".into(),
            text: format!("text {rowid}"),
            date: chrono::Utc::now(),
        }
    }

    #[test]
    fn waiting_texts_come_back_per_chat_in_order_and_once() {
        let waiting = Waiting::default();
        for (rowid, chat) in [(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "a")] {
            waiting.push(text(rowid, chat));
        }
        assert_eq!(waiting.push(text(3, "a")), 5, "a text waits once");
        assert_eq!(waiting.chats(), ["a", "b", "c"]);
        let a: Vec<i64> = waiting.take("a").iter().map(|t| t.rowid).collect();
        assert_eq!(a, [1, 3, 5]);
        assert_eq!(waiting.chats(), ["b", "c"]);
        assert!(waiting.take("a").is_empty());
        assert_eq!(waiting.len(), 2);
        waiting.take("b");
        waiting.take("c");
        assert!(waiting.is_empty());
    }

    #[test]
    fn the_rate_notice_names_the_limit_and_no_text() {
        assert!(rate_notice(30).contains("more than 30 a minute"));
    }

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
