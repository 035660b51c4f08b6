//! Handles one conversation's jobs: runs the agent inside the session and decides the
//! outcome (SPEC §1.5–§1.6).
//!
//! Invariants: each text's [`Outcome`] is decided once and applied in one place
//! ([`Conversations::apply`]: session, ledger, status, the log line). A note written ends the
//! session; a reply without a note leaves the session [`SessionState::Waiting`] with the
//! original text; an agent failure files the raw text to `Inbox/` and tells the user, so
//! nothing is lost. A text over [`MODEL_TEXT_LIMIT`] is saved whole to Inbox (in parts if
//! need be), the model gets its start, the user is told, and the session keeps one copy. A text is marked finished in the ledger
//! only once its outcome is on disk. While the vault cannot be written, texts are not given
//! to the agent: they wait (claimed, not finished), in order, and are handled when a later
//! job or the retry tick finds the vault writable again. Texts over the sender's rate limit
//! are not handled; once the daily token budget is used up, texts go to `Inbox/`
//! unprocessed; either way the user is told once per limit window, not once per text. Every
//! reply goes through the [`Outbox`], so a text handled again after a crash is not answered
//! twice. Idle sessions are ended through the same per-chat queue as texts, so an answer
//! arriving meanwhile is neither lost nor handled twice.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{Local, Utc};
use tracing::{debug, error, info, warn};

use crate::agent::{Agent, AgentError, RunReport};
use crate::attachments::{self, Voice};
use crate::chatdb::{Chat, IncomingMessage};
use crate::ledger::Ledger;
use crate::limits::{Budget, LimitsError, Rate, RateLimiter, Spend};
use crate::outbox::Outbox;
use crate::router::{Handler, Job};
use crate::sessions::{Session, SessionState, SessionStore};
use crate::status::{ApiProblem, StatusBoard, VaultProblem};
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
    /// How long a text waits for its attachments' files (and a voice message for its
    /// transcript).
    pub attachment_wait: Duration,
    /// Messages' database, read again for a voice transcript written after its row.
    pub chat_db: std::path::PathBuf,
    /// Whether the model may read linked pages ("Read linked pages").
    pub read_linked_pages: bool,
}

/// Texts claimed while the vault could not be written, in the order they came.
#[derive(Debug, Default)]
pub struct Waiting {
    texts: Mutex<Vec<IncomingMessage>>,
    /// How many wait, for whoever retries them only while some do.
    count: tokio::sync::watch::Sender<usize>,
}

impl Waiting {
    /// How many texts wait, now and at every change.
    pub fn count(&self) -> tokio::sync::watch::Receiver<usize> {
        self.count.subscribe()
    }

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
        self.count.send_replace(texts.len());
        texts.len()
    }

    /// Removes and returns the chat's waiting texts, oldest first.
    fn take(&self, chat: &str) -> Vec<IncomingMessage> {
        let mut texts = self.lock();
        let (taken, kept) = std::mem::take(&mut *texts)
            .into_iter()
            .partition(|t| t.chat.guid == chat);
        *texts = kept;
        self.count.send_replace(texts.len());
        taken
    }

    fn lock(&self) -> MutexGuard<'_, Vec<IncomingMessage>> {
        // Pushes and partitions leave the list whole at every step.
        crate::mutex::lock(&self.texts)
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
        if self
            .ledger
            .is_finished(&message.guid)
            .unwrap_or_else(|err| {
                warn!(cause = %err, "could not read the ledger; handling the text");
                false
            })
        {
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
                Some(VaultProblem::NotWritable {
                    reason: err.to_string(),
                }),
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
        let (outcome, session, requests) = match self.limits(&message).await {
            Some(outcome) => (outcome, None, None),
            None => {
                let (outcome, session, requests) = self.run_agent(&message).await;
                (outcome, Some(session), requests)
            }
        };
        self.apply(&message, outcome, session, requests).await;
    }

    /// The rate limit and the token budget: `Some` when the text is not given to the agent.
    async fn limits(&self, message: &IncomingMessage) -> Option<Outcome> {
        if let Rate::Limited { notify } = self.rate.check(&message.sender, message.date) {
            warn!(chat = ?message.chat.guid, rowid = message.rowid, sender = ?message.sender,
                "sender is over the rate limit; text not handled");
            if notify {
                let notice = rate_notice(self.rate.per_minute());
                self.reply(&message.chat, Some(&message.guid), &notice)
                    .await;
            }
            return Some(Outcome::RateLimited);
        }
        if let Spend::Exhausted { notify } = self.budget_check().await {
            self.over_budget(message, notify).await;
            return Some(Outcome::OverBudget);
        }
        None
    }

    /// Runs the agent on the text inside its session and decides the outcome. A text over
    /// [`MODEL_TEXT_LIMIT`] is saved whole to Inbox first and the agent gets its start.
    /// Also returns the model requests the run made, when it ended well enough to say.
    async fn run_agent(&self, message: &IncomingMessage) -> (Outcome, Session, Option<u32>) {
        let now = Utc::now();
        let mut session = self
            .sessions
            .get(&message.chat.guid)
            .unwrap_or_else(|| Session::new(message.chat.clone(), message.sender.clone(), now));
        let earlier = session.state.original().map(str::to_owned);
        let answer = earlier.is_some().then_some(message.text.as_str());
        session.state = SessionState::Working {
            original: earlier.clone(),
        };
        session.last_activity = now;
        session.message_count += 1;
        // Not saved on its own: a crash re-runs the text from the ledger and its saved session.
        self.sessions.put_unsaved(session.clone());
        info!(chat = ?message.chat.guid, rowid = message.rowid, "handling text");

        let input = self.model_input(message).await;
        let (attached, voice) = self.attachments(message).await;
        if voice == Some(Voice::NoTranscript) {
            let outcome = self.voice_to_inbox(message, earlier, &attached).await;
            return (outcome, session, None);
        }
        let plain = attached.input(&attachments::voice::with_voice(
            &input.original,
            voice.as_ref(),
        ));
        let (tools, text) = self.tools_and_text(message, &input, &attached, voice.as_ref());
        // Earlier media (a clarification) shown again from their vault copies, as sent first.
        let mut copies =
            attachments::restore_off_runtime(&self.vault, &mut session.transcript).await;
        let result = self
            .agent
            .run_with(&mut session.transcript, &text, attached.blocks, &tools)
            .await;
        self.after_run(&result).await;
        let requests = result.as_ref().ok().map(|report| report.turns);
        let record = tools.record();
        let source = Some(message.guid.as_str());
        let captured = !record.notes_written.is_empty();
        // What a question keeps and Inbox files: the text, its attachments and their embeds
        // (copies that waited for a note's folder go where an Inbox note's would).
        let original = match earlier {
            Some(original) => original,
            None if captured => plain,
            None => attachments::with_embeds(&plain, &tools.attachment_embeds(Folder::Inbox).await),
        };
        // sessions.json never holds media bytes: each block names its vault copy instead.
        copies.extend(tools.shown_copies().await);
        attachments::strip_media(&mut session.transcript, &copies);
        let outcome = match result {
            Ok(_) if captured => Outcome::Captured,
            Ok(_) if record.answered && !record.messages_sent.is_empty() => Outcome::Answered,
            Err(err) if captured => {
                warn!(chat = ?message.chat.guid, cause = %err, "agent failed after writing its note");
                Outcome::Captured
            }
            Ok(report) => {
                session.input_tokens += report.usage.input_tokens;
                session.output_tokens += report.usage.output_tokens;
                let question = self
                    .ensure_reply(&message.chat, source, &record, &report.final_text)
                    .await;
                Outcome::Asked { original, question }
            }
            Err(err) => {
                self.agent_failed(&message.chat, &original, answer, source, &err)
                    .await;
                Outcome::FiledToInbox
            }
        };
        (outcome, session, requests)
    }

    /// The run's tools for `message`, and the text the model gets: its words (a voice
    /// message's transcript), its attachments' summary and its link's preview.
    fn tools_and_text(
        &self,
        message: &IncomingMessage,
        input: &ModelInput,
        attached: &attachments::Prepared,
        voice: Option<&Voice>,
    ) -> (Tools, String) {
        let link = message.extra.as_deref().and_then(|e| e.link.as_ref());
        let tools = Tools::new(
            self.vault.clone(),
            self.outbox.clone(),
            message.chat.clone(),
            Some(message.guid.clone()),
        )
        .with_attachments(attached.without_blocks())
        .with_web_fetch(self.read_linked_pages)
        .with_link_url(link.and_then(|l| l.url.clone()));
        let mut text = attached.input(&attachments::voice::with_voice(&input.text, voice));
        if let Some(link) = link {
            text = format!("{text}\n\n{}", link.describe());
        }
        (tools, text)
    }

    /// The text's attachments once their files are complete (or the wait limit passed),
    /// copied and prepared, and its voice message once its transcript is written (or the
    /// same limit passed); the user is told at once which files could not be read.
    async fn attachments(
        &self,
        message: &IncomingMessage,
    ) -> (attachments::Prepared, Option<Voice>) {
        let extra = message.extra.as_deref();
        let files = extra.map_or(&[][..], |e| e.attachments.as_slice());
        let voice = async {
            match extra.and_then(|e| e.voice.clone()) {
                Some(Voice::NoTranscript) => Some(
                    attachments::voice::wait_for_transcript(
                        &self.chat_db,
                        message.rowid,
                        self.attachment_wait,
                    )
                    .await,
                ),
                voice => voice,
            }
        };
        let mut files = files.to_vec();
        let rows = attachments::RowsOf {
            chat_db: self.chat_db.clone(),
            rowid: message.rowid,
        };
        let awaits = attachments::any_to_come(&files)
            || matches!(
                extra.and_then(|e| e.voice.as_ref()),
                Some(Voice::NoTranscript)
            );
        if awaits {
            self.status.update(|s| s.awaiting_attachments += 1);
        }
        let (waited, voice) = tokio::join!(
            attachments::wait_for_files(&mut files, self.attachment_wait, Some(rows)),
            voice
        );
        if awaits {
            self.status
                .update(|s| s.awaiting_attachments = s.awaiting_attachments.saturating_sub(1));
        }
        if let attachments::Waited::TimedOut(missing) = waited {
            warn!(chat = ?message.chat.guid, rowid = message.rowid, missing = missing.len(),
                "attachment files did not arrive in time; handling the text without them");
        }
        let prepared = attachments::prepare_off_runtime(&self.vault, files).await;
        if let Some(notice) = prepared.unreadable_notice() {
            self.reply(&message.chat, Some(&message.guid), &notice)
                .await;
        }
        (prepared, voice)
    }

    /// A voice message whose transcript never came: Inbox gets a note embedding its audio
    /// (with the question it answers, if any), and the user is told.
    async fn voice_to_inbox(
        &self,
        message: &IncomingMessage,
        earlier: Option<String>,
        attached: &attachments::Prepared,
    ) -> Outcome {
        warn!(chat = ?message.chat.guid, rowid = message.rowid,
            "no transcript of the voice message in time; filing its audio to Inbox");
        let voice = attachments::voice::with_voice(&message.text, Some(&Voice::NoTranscript));
        let copies = tokio::sync::Mutex::new(attached.without_blocks());
        let embeds =
            attachments::place_off_runtime(&self.vault, &copies, Folder::Inbox.as_str()).await;
        let voice = attachments::with_embeds(&voice, &embeds);
        let (original, answer) = match &earlier {
            Some(original) => (original.as_str(), Some(voice.as_str())),
            None => (voice.as_str(), None),
        };
        let filed = self
            .write_inbox_titled(
                &message.chat,
                VOICE_INBOX_TITLE.to_string(),
                original,
                answer,
                Some(&message.guid),
                "Messages wrote no transcript of the voice message",
            )
            .await;
        let notice = match filed {
            Some(_) => {
                "I got no transcript of that voice message, so I saved the audio to \
                        Inbox. Nothing is lost."
            }
            None => {
                "I got no transcript of that voice message, and could not save it to the \
                     vault. Please send it again as text."
            }
        };
        self.reply(&message.chat, Some(&message.guid), notice).await;
        Outcome::FiledToInbox
    }

    /// What the model is given for a text: the text itself, or, over
    /// [`MODEL_TEXT_LIMIT`], its start with a note that it was cut; the whole text is then
    /// saved to Inbox and the user told. `original` is what the session keeps of it: the
    /// text, or (when cut) a pointer to the Inbox note, so a session never holds a second
    /// copy of a long text.
    async fn model_input(&self, message: &IncomingMessage) -> ModelInput {
        let text = &message.text;
        if text.len() <= MODEL_TEXT_LIMIT {
            return ModelInput {
                text: text.clone(),
                original: text.clone(),
            };
        }
        let size = human_size(text.len());
        let saved = self
            .write_inbox(
                &message.chat,
                text,
                None,
                Some(&message.guid),
                &format!("the text is {size} long; the AI was given only its first 64 KB"),
            )
            .await;
        let whereabouts = match &saved {
            Some(path) => format!("saved whole in {path}"),
            None => "which could not be saved to the vault".to_string(),
        };
        warn!(chat = ?message.chat.guid, rowid = message.rowid, bytes = text.len(), "text over the model's limit; cut for the model");
        self.status.update(|s| s.oversized += 1);
        let notice = match &saved {
            Some(_) => format!(
                "That text is very long ({size}), so I read only its first 64 KB. The whole \
                 text is saved in Inbox."
            ),
            None => format!(
                "That text is very long ({size}), so I read only its first 64 KB, and I could \
                 not save the whole of it to the vault."
            ),
        };
        self.reply(&message.chat, Some(&message.guid), &notice)
            .await;
        let start = &text[..floor_char_boundary(text, MODEL_TEXT_LIMIT)];
        ModelInput {
            text: format!(
                "{start}\n\n[Cut here: this text is {size} long and only its first 64 KB are \
                 shown; the whole text is {whereabouts}.]"
            ),
            original: format!(
                "{}… ({size} in all, {whereabouts})",
                &text[..floor_char_boundary(text, 200)]
            ),
        }
    }

    /// Applies an outcome, in one place: the session ends or waits, the text is finished
    /// in the ledger, the status counts it (with the model requests it took), and one line
    /// is logged.
    async fn apply(
        &self,
        message: &IncomingMessage,
        outcome: Outcome,
        session: Option<Session>,
        requests: Option<u32>,
    ) {
        let chat = &message.chat.guid;
        match (&outcome, session) {
            (Outcome::RateLimited, _) => {}
            (Outcome::Asked { original, question }, Some(mut session)) => {
                session.state = SessionState::Waiting {
                    original: original.clone(),
                    question: question.clone(),
                };
                session.last_activity = Utc::now();
                self.sessions.put(session);
            }
            _ => {
                self.sessions.remove(chat);
            }
        }
        self.finish(message).await;
        self.status.update(|s| {
            match outcome {
                Outcome::RateLimited => s.rate_limited += 1,
                Outcome::OverBudget => s.over_budget += 1,
                Outcome::Captured => s.captured += 1,
                Outcome::Asked { .. } => s.asked += 1,
                Outcome::FiledToInbox => s.failed += 1,
                Outcome::Answered => s.answered += 1,
            }
            if outcome.ran_the_agent() {
                s.handled += 1;
            }
            if let Some(requests) = requests {
                s.model_requests += u64::from(requests);
                s.model_runs += 1;
                s.last_text_requests = Some(requests);
            }
            s.sessions = self.sessions.len();
        });
        match requests {
            Some(turns) => {
                info!(chat = ?chat, rowid = message.rowid, outcome = outcome.name(), turns, "text handled")
            }
            None => {
                info!(chat = ?chat, rowid = message.rowid, outcome = outcome.name(), "text handled")
            }
        }
    }

    /// Marks the text finished in the ledger.
    async fn finish(&self, message: &IncomingMessage) {
        if let Err(err) = self.ledger.finish(&message.guid).await {
            error!(chat = ?message.chat.guid, cause = %err, "could not mark text finished");
        }
    }

    /// Whether the day's token budget allows a run.
    async fn budget_check(&self) -> Spend {
        match self.budget.check(Local::now().date_naive()).await {
            Ok(spend) => spend,
            Err(LimitsError::Interrupted { .. }) => Spend::Allowed,
            Err(err) => {
                // The notice flag could not be saved: say so once more rather than never.
                warn!(cause = %err, "could not save the token budget");
                Spend::Exhausted { notify: true }
            }
        }
    }

    /// Counts a run's tokens and keeps the API-key problem in the status current.
    async fn after_run(&self, result: &Result<RunReport, AgentError>) {
        match result {
            Ok(report) => {
                let today = Local::now().date_naive();
                let used = match self.budget.spend(today, &report.usage).await {
                    Ok(used) => Some(used),
                    Err(err) => {
                        warn!(cause = %err, "could not save the token budget");
                        Some(self.budget.used(today))
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
                self.status.update(|s| {
                    s.api_problem = Some(ApiProblem::KeyRejected {
                        detail: err.to_string(),
                    })
                });
            }
            Err(_) => {}
        }
    }

    /// The budget is used up: the text (with the question it answers, if any) goes to
    /// Inbox unprocessed, and the user is told once a day.
    async fn over_budget(&self, message: &IncomingMessage, notify: bool) {
        let chat = &message.chat;
        warn!(chat = ?chat.guid, rowid = message.rowid, "daily token budget used up; filing the text to Inbox unprocessed");
        let pending = self
            .sessions
            .get(&chat.guid)
            .and_then(|s| s.state.original().map(str::to_owned));
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
            .await
            .is_some();
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
        let Some(original) = session.state.original().map(str::to_owned) else {
            info!(chat = ?chat, "idle session ended");
            self.end_session(chat);
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
            if filed.is_some() {
                self.end_session(chat);
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
        self.end_session(chat);
    }

    /// Ends a chat's session outside [`Conversations::apply`] (idle, timed out).
    fn end_session(&self, chat: &str) {
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
            .await
            .is_some();
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
        self.status.update(|s| s.last_error = Some(err.to_string()));
        self.reply(chat, source, &reply).await;
    }

    /// Writes the raw text (and the answer it got, if any) to `Inbox/`, noting `why`;
    /// returns the (first) note's path. A text longer than one note may hold is written in
    /// parts, so the Inbox never loses one.
    async fn write_inbox(
        &self,
        chat: &Chat,
        original: &str,
        answer: Option<&str>,
        source: Option<&str>,
        why: &str,
    ) -> Option<String> {
        let title = inbox_title(original);
        self.write_inbox_titled(chat, title, original, answer, source, why)
            .await
    }

    /// [`Conversations::write_inbox`] under `title`.
    async fn write_inbox_titled(
        &self,
        chat: &Chat,
        title: String,
        original: &str,
        answer: Option<&str>,
        source: Option<&str>,
        why: &str,
    ) -> Option<String> {
        let mut content = original.to_string();
        if let Some(answer) = answer {
            content.push_str(&format!(
                "\n\nFollow-up from the same conversation: {answer}"
            ));
        }
        let source = source.map(|s| format!("imessage:{s}"));
        let why = why.to_string();
        let written = self
            .vault
            .off_runtime(move |vault| {
                let parts = parts(&content, INBOX_PART_BYTES);
                let count = parts.len();
                let mut first = None;
                for (i, part) in parts.into_iter().enumerate() {
                    let (title, footer) = match count {
                        1 => (
                            title.clone(),
                            format!("_Filed unprocessed by Second Brain: {why}._"),
                        ),
                        n => (
                            format!("{title} (part {} of {n})", i + 1),
                            format!(
                                "_Part {} of {n}. Filed unprocessed by Second Brain: {why}._",
                                i + 1
                            ),
                        ),
                    };
                    let content = format!("{part}\n\n{footer}");
                    let note = NewNote {
                        folder: Folder::Inbox,
                        title: &title,
                        content: &content,
                        tags: &[],
                        // Filed by the bridge, unread by the agent: no confidence in any filing.
                        confidence: 0,
                        source: source.as_deref(),
                    };
                    let path = vault.write_note(&note, Local::now())?;
                    first.get_or_insert(path);
                }
                // `parts` gives at least one part.
                Ok::<_, crate::vault::Error>(first.unwrap_or_default())
            })
            .await;
        match written {
            Ok(path) => {
                info!(chat = ?chat.guid, note = ?path, "filed to Inbox");
                Some(path)
            }
            Err(write_err) => {
                error!(chat = ?chat.guid, cause = %write_err, "could not write to Inbox");
                None
            }
        }
    }
}

/// What becomes of one text: decided once per text, applied in one place
/// ([`Conversations::apply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The sender is over the rate limit: not handled (told once a minute).
    RateLimited,
    /// The day's token budget is used up: filed to Inbox unprocessed (told once a day).
    OverBudget,
    /// The agent wrote a note: the capture is complete and the session ends.
    Captured,
    /// The agent replied without a note: it asked a question about `original`, and the
    /// session waits for the answer (`question` is what the user was last told, if anything).
    Asked {
        /// The text the question is about.
        original: String,
        /// The question.
        question: Option<String>,
    },
    /// The agent failed: the raw text went to Inbox, the user was told, the session ends.
    FiledToInbox,
    /// The text was a question about the vault and the agent texted the answer: nothing to
    /// capture, the session ends.
    Answered,
}

impl Outcome {
    /// The outcome's name in the log.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::RateLimited => "rate limited",
            Outcome::OverBudget => "over budget",
            Outcome::Captured => "captured",
            Outcome::Asked { .. } => "waiting for an answer",
            Outcome::FiledToInbox => "filed to Inbox",
            Outcome::Answered => "answered",
        }
    }

    /// Whether the agent ran on the text.
    pub fn ran_the_agent(&self) -> bool {
        matches!(
            self,
            Outcome::Captured | Outcome::Asked { .. } | Outcome::FiledToInbox | Outcome::Answered
        )
    }
}

/// The title of the Inbox note for a voice message without a transcript.
const VOICE_INBOX_TITLE: &str = "Voice message (no transcript)";

/// The most of a text the model is given (UTF-8 bytes); longer texts are cut, and saved
/// whole to Inbox.
pub const MODEL_TEXT_LIMIT: usize = 64 * 1024;

/// One Inbox part's share of a long text, leaving room for the footer under the vault's
/// cap on a note's content.
const INBOX_PART_BYTES: usize = crate::vault::MAX_CONTENT_BYTES - 1024;

/// What the model is given for a text, and what the session keeps of it.
struct ModelInput {
    text: String,
    original: String,
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
fn parts(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let cut = floor_char_boundary(rest, max);
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    out.push(rest);
    out
}

/// The largest index `<= at` that is a character boundary of `text`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// A size for people: `1.0 MB`, `70 KB`.
fn human_size(bytes: usize) -> String {
    if bytes >= 1024 * 1024 {
        format!("{:.1} MB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{} KB", bytes.div_ceil(1024))
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
            origin: Default::default(),
            extra: None,
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
        assert_eq!(*waiting.count().borrow(), 0, "the count follows");
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
