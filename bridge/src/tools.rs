//! The agent's tools: `vault_write`, `vault_read`, `vault_list`, `log_interaction` and
//! `send_message` here, `vault_search` in [`crate::search::tool`], and the reminders' and
//! `vault_move` in [`crate::reminders::tool`], carried out for one run of one conversation.
//!
//! Invariants: every input is validated strictly (JSON types, required and unknown fields,
//! sizes, NUL bytes) and a bad one becomes an error result for the model, never a panic;
//! replies go only to the chat the [`Tools`] were built for (the agent cannot name a
//! recipient); vault work runs on the blocking pool; [`Tools::record`] tells what the run
//! actually did. Replies go through the [`Outbox`], so a text handled again after a crash
//! never gets the same reply twice. A `vault_write` may carry its `reply`, sent (through the
//! same outbox, counted in the same cap) only once the note is on disk, with `{path}` in it
//! replaced by the note's vault path: a whole capture in one model turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::Local;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::agent::{Phase, ToolOutput, ToolRunner};
use crate::chatdb::Chat;
use crate::outbox::Outbox;
use crate::reminders::tool as reminders;
use crate::vault::{self, Folder, ListQuery, LogEntry, NewNote, Vault};

/// Longest reply `send_message` accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 20_000;
/// Largest `limit` `vault_list` accepts.
pub const MAX_LIST_LIMIT: usize = 100;
/// Most `send_message` calls one text may make; more get a tool error.
pub const MAX_REPLIES_PER_TEXT: usize = 3;
/// What a `vault_write` reply has replaced by the note's vault path.
pub const PATH_PLACEHOLDER: &str = "{path}";
/// Longest `filepath` `vault_read` accepts, in bytes.
const MAX_PATH_BYTES: usize = 4096;

/// Why a tool call failed. Its message is what the model sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model named a tool that does not exist.
    #[error(
        "unknown tool {name:?}; use vault_write, vault_read, vault_list, vault_search, \
         log_interaction, send_message, vault_set_reminder, vault_list_reminders or vault_move"
    )]
    UnknownTool {
        /// The name it used.
        name: String,
    },
    /// The input did not match the tool's schema.
    #[error("invalid input for {tool}: {reason}")]
    Input {
        /// The tool called.
        tool: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The vault refused or failed.
    #[error("{tool} failed: {source}")]
    Vault {
        /// The tool called.
        tool: &'static str,
        /// The vault's error.
        source: vault::Error,
    },
    /// This text has had its replies already.
    #[error(
        "send_message refused: at most {MAX_REPLIES_PER_TEXT} replies per text, and this text has \
         had them; end your turn"
    )]
    TooManyReplies,
    /// The note was written, but the reply it carried could not be sent.
    #[error(
        "the note was written to {path}, but its reply could not be sent ({source}); do not \
         write the note again"
    )]
    ReplyFailed {
        /// The note's vault path.
        path: String,
        /// The sender's error.
        source: crate::sender::SendError,
    },
    /// The reply could not be sent.
    #[error("send_message failed: {source}")]
    Send {
        /// The chat the reply was for.
        chat: String,
        /// The sender's error.
        source: crate::sender::SendError,
    },
}

/// What one run's tool calls did; the conversation decides the outcome from it (a note
/// written means the capture is complete).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolRecord {
    /// Vault-relative paths returned by successful `vault_write` calls, in order.
    pub notes_written: Vec<String>,
    /// Texts successfully sent by `send_message`, in order.
    pub messages_sent: Vec<String>,
    /// Number of successful `log_interaction` calls.
    pub logged: usize,
    /// Whether the text was logged as a question about the vault (category `query`):
    /// answered, nothing to capture.
    pub answered: bool,
}

/// The tools for one agent run, bound to one conversation.
#[derive(Debug)]
pub struct Tools {
    vault: Vault,
    outbox: Outbox,
    chat: Chat,
    source: Option<String>,
    record: Mutex<ToolRecord>,
    /// `send_message` calls that reached the outbox.
    replies: AtomicUsize,
    /// The text's attachments: their embeds are added to the note where the model left them
    /// out, and copies that wait for the note's folder are made there.
    attachments: tokio::sync::Mutex<crate::attachments::Prepared>,
    /// The link the text carried: a Reference note gets it as `url:` in its frontmatter.
    link_url: Option<String>,
    /// Whether the model may read linked pages (the API's server-side web fetch).
    web_fetch: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WriteInput {
    folder: String,
    title: String,
    content: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    confidence: i64,
    /// Sent once the note is written, `{path}` replaced by its path.
    #[serde(default)]
    reply: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadInput {
    filepath: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListInput {
    #[serde(default)]
    folder: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogInput {
    input: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    confidence: Option<i64>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    stored_path: Option<String>,
    #[serde(default)]
    clarification: Option<String>,
    #[serde(default)]
    user_response: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendInput {
    message: String,
}

impl Tools {
    /// Tools that write to `vault` and reply to `chat` through `outbox` (or a bare
    /// [`Sender`](crate::sender::Sender), which records nothing). `source` is the guid of the message being
    /// handled; notes are stamped `imessage:<guid>` with it, and replies are recorded
    /// under it.
    pub fn new(
        vault: Vault,
        outbox: impl Into<Outbox>,
        chat: Chat,
        source: Option<String>,
    ) -> Tools {
        Tools {
            vault,
            outbox: outbox.into(),
            chat,
            source,
            record: Mutex::default(),
            replies: AtomicUsize::new(0),
            attachments: tokio::sync::Mutex::default(),
            link_url: None,
            web_fetch: false,
        }
    }

    /// These tools with the text's link, given to Reference notes as `url:`.
    pub fn with_link_url(mut self, url: Option<String>) -> Tools {
        self.link_url = url;
        self
    }

    /// These tools with the API's server-side web fetch offered too, when `on` (the
    /// "Read linked pages" setting).
    pub fn with_web_fetch(mut self, on: bool) -> Tools {
        self.web_fetch = on;
        self
    }

    /// These tools with the text's `attachments`: the note `vault_write` writes gets their
    /// embeds (each unless the model's content already holds it), and copies that wait for
    /// the note's folder are made there.
    pub fn with_attachments(mut self, attachments: crate::attachments::Prepared) -> Tools {
        self.attachments = tokio::sync::Mutex::new(attachments);
        self
    }

    /// The embeds of the text's attachments for a note in `folder`, their copies made
    /// there if they waited for it.
    pub async fn attachment_embeds(&self, folder: Folder) -> Vec<String> {
        crate::attachments::place_off_runtime(&self.vault, &self.attachments, folder.as_str()).await
    }

    /// The vault copies (path, MIME type) of the text's attachments shown to the model, in
    /// the order of their blocks.
    pub async fn shown_copies(&self) -> Vec<(Option<String>, Option<String>)> {
        self.attachments.lock().await.shown_copies()
    }

    /// What this run's tool calls have done so far.
    pub fn record(&self) -> ToolRecord {
        self.record_mut().clone()
    }

    /// Held only to copy or push, never across an `.await`.
    fn record_mut(&self) -> MutexGuard<'_, ToolRecord> {
        crate::mutex::lock(&self.record)
    }

    /// Runs vault work off the runtime's workers ([`Vault::off_runtime`]): it does
    /// file-system calls and fsyncs, and a stuck one must not hold up shutdown.
    async fn blocking<T: Send + 'static>(
        &self,
        tool: &'static str,
        work: impl FnOnce(&Vault) -> Result<T, vault::Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.vault
            .off_runtime(work)
            .await
            .map_err(|source| Error::Vault { tool, source })
    }

    async fn dispatch(&self, name: &str, input: &Value) -> Result<String, Error> {
        match name {
            "vault_write" => self.vault_write(input).await,
            "vault_read" => self.vault_read(input).await,
            "vault_list" => self.vault_list(input).await,
            "log_interaction" => self.log_interaction(input).await,
            "send_message" => self.send_message(input).await,
            crate::search::tool::NAME => crate::search::tool::call(&self.vault, input).await,
            reminders::SET => reminders::set(&self.vault, &self.chat, input).await,
            reminders::LIST => reminders::list(&self.vault, input).await,
            reminders::MOVE => reminders::move_note(&self.vault, input).await,
            _ => Err(Error::UnknownTool {
                name: name.chars().take(60).collect(),
            }),
        }
    }

    async fn vault_write(&self, input: &Value) -> Result<String, Error> {
        const TOOL: &str = "vault_write";
        let mut input: WriteInput = parse(TOOL, input)?;
        let folder = parse_folder(TOOL, &input.folder)?;
        let confidence = parse_confidence(TOOL, Some(input.confidence))?.unwrap_or_default();
        let reply = input.reply.take();
        if let Some(reply) = &reply {
            check_message(TOOL, "reply", reply)?;
            self.take_reply_slot()?;
        }
        let source = self.source.as_ref().map(|guid| format!("imessage:{guid}"));
        let embeds = self.attachment_embeds(folder).await;
        input.content = crate::attachments::with_embeds(&input.content, &embeds);
        let url = self
            .link_url
            .clone()
            .filter(|_| folder == Folder::Reference);
        let written = self
            .blocking(TOOL, move |vault| {
                let tags = input.tags.unwrap_or_default();
                let note = NewNote {
                    folder,
                    title: &input.title,
                    content: &input.content,
                    tags: &tags,
                    confidence,
                    source: source.as_deref(),
                };
                vault.write_note_with_url(&note, url.as_deref(), Local::now())
            })
            .await;
        let path = match written {
            Ok(path) => path,
            Err(err) => {
                if reply.is_some() {
                    self.replies.fetch_sub(1, Ordering::Relaxed); // no reply went out
                }
                return Err(err);
            }
        };
        tracing::debug!(chat = ?self.chat.guid, path = ?path, "note written");
        self.record_mut().notes_written.push(path.clone());
        let Some(reply) = reply else {
            return Ok(path);
        };
        let message = reply.replace(PATH_PLACEHOLDER, &path);
        let delivery = self
            .outbox
            .send(&self.chat, self.source.as_deref(), &message)
            .await
            .map_err(|source| Error::ReplyFailed {
                path: path.clone(),
                source,
            })?;
        tracing::debug!(chat = ?self.chat.guid, ?delivery, "note's reply handled");
        self.record_mut().messages_sent.push(message);
        Ok(format!("{path}\nreply: {}", delivery.for_model()))
    }

    /// Counts one reply against [`MAX_REPLIES_PER_TEXT`], or refuses it.
    fn take_reply_slot(&self) -> Result<(), Error> {
        if self.replies.fetch_add(1, Ordering::Relaxed) >= MAX_REPLIES_PER_TEXT {
            return Err(Error::TooManyReplies);
        }
        Ok(())
    }

    async fn vault_read(&self, input: &Value) -> Result<String, Error> {
        const TOOL: &str = "vault_read";
        let input: ReadInput = parse(TOOL, input)?;
        if input.filepath.len() > MAX_PATH_BYTES {
            return Err(invalid(TOOL, "filepath is too long"));
        }
        self.blocking(TOOL, move |vault| vault.read_note(&input.filepath))
            .await
    }

    async fn vault_list(&self, input: &Value) -> Result<String, Error> {
        const TOOL: &str = "vault_list";
        let input: ListInput = parse(TOOL, input)?;
        let folder = input
            .folder
            .as_deref()
            .map(|f| parse_folder(TOOL, f))
            .transpose()?;
        let limit = match input.limit {
            None => vault::DEFAULT_LIST_LIMIT,
            Some(n) if (1..=MAX_LIST_LIMIT as i64).contains(&n) => n as usize,
            Some(_) => {
                return Err(invalid(
                    TOOL,
                    format!("limit must be from 1 to {MAX_LIST_LIMIT}"),
                ));
            }
        };
        let tags = vault::normalize_tags(&input.tags.unwrap_or_default())
            .map_err(|source| Error::Vault { tool: TOOL, source })?;
        let notes = self
            .blocking(TOOL, move |vault| {
                vault.list(&ListQuery {
                    folder,
                    tags: &tags,
                    limit,
                })
            })
            .await?;
        serde_json::to_string(&notes).map_err(|e| invalid(TOOL, e.to_string()))
    }

    async fn log_interaction(&self, input: &Value) -> Result<String, Error> {
        const TOOL: &str = "log_interaction";
        let input: LogInput = parse(TOOL, input)?;
        let confidence = parse_confidence(TOOL, input.confidence)?;
        let query = input.category.as_deref().map(str::trim) == Some("query");
        let path = self
            .blocking(TOOL, move |vault| {
                let entry = LogEntry {
                    input: &input.input,
                    category: input.category.as_deref(),
                    confidence,
                    reasoning: input.reasoning.as_deref(),
                    tags: input.tags.as_deref(),
                    stored_path: input.stored_path.as_deref(),
                    clarification: input.clarification.as_deref(),
                    user_response: input.user_response.as_deref(),
                };
                vault.log_interaction(&entry, Local::now())
            })
            .await?;
        let mut record = self.record_mut();
        record.logged += 1;
        record.answered |= query;
        Ok(format!("logged to {path}"))
    }

    async fn send_message(&self, input: &Value) -> Result<String, Error> {
        const TOOL: &str = "send_message";
        let input: SendInput = parse(TOOL, input)?;
        let message = input.message;
        check_message(TOOL, "message", &message)?;
        self.take_reply_slot()?;
        let delivery = self
            .outbox
            .send(&self.chat, self.source.as_deref(), &message)
            .await
            .map_err(|source| Error::Send {
                chat: self.chat.guid.clone(),
                source,
            })?;
        tracing::debug!(chat = ?self.chat.guid, ?delivery, "reply handled");
        self.record_mut().messages_sent.push(message);
        Ok(delivery.for_model().to_string())
    }
}

impl ToolRunner for Tools {
    fn definitions(&self) -> Vec<Value> {
        let mut all = definitions();
        if self.web_fetch {
            all.push(crate::anthropic::web_fetch_tool());
        }
        all
    }

    /// Reads first and together, then notes (each before its reply), then replies, then the
    /// log, so a reply never names a note not yet on disk and the log comes last.
    fn phase(&self, name: &str) -> Phase {
        match name {
            "vault_read" | "vault_list" | crate::search::tool::NAME | reminders::LIST => {
                Phase::Read
            }
            "send_message" => Phase::Reply,
            "log_interaction" => Phase::Record,
            _ => Phase::Write,
        }
    }

    /// The text is handled once a reply went out (a note's confirmation, or a question),
    /// unless the last turn also read the vault: the model has not seen what it read.
    fn is_done(&self, tools: &[&str]) -> bool {
        let read = tools.iter().any(|name| self.phase(name) == Phase::Read);
        !read && !self.record_mut().messages_sent.is_empty()
    }

    async fn call(&self, name: &str, input: &Value) -> ToolOutput {
        match self.dispatch(name, input).await {
            Ok(content) => ToolOutput::ok(content),
            Err(err) => {
                tracing::debug!(tool = ?name, chat = ?self.chat.guid, cause = %err, "tool call failed");
                ToolOutput::error(err.to_string())
            }
        }
    }
}

/// The tools as sent to the Messages API. Descriptions are short: they are sent with every
/// request.
pub fn definitions() -> Vec<Value> {
    let folders: Vec<&str> = Folder::ALL.iter().map(|f| f.as_str()).collect();
    let tags = json!({
        "type": "array",
        "items": {"type": "string"},
        "description": "Letters, digits, _ - and / (nesting), not only digits, e.g. person/sarah",
    });
    let confidence = json!({"type": "integer", "minimum": 0, "maximum": 100});
    vec![
        json!({
            "name": "vault_write",
            "description": "Create a note in the vault. Returns its path.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "folder": {"type": "string", "enum": folders},
                    "title": {"type": "string"},
                    "content": {"type": "string", "description": "Markdown body, no frontmatter"},
                    "tags": tags,
                    "confidence": confidence,
                    "reply": {"type": "string", "description": "Texted to the user once the note is saved; {path} becomes its path"},
                },
                "required": ["folder", "title", "content", "confidence"],
                "additionalProperties": false,
            },
        }),
        json!({
            "name": "vault_read",
            "description": "Read a note.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "filepath": {"type": "string", "description": "Relative to the vault"},
                },
                "required": ["filepath"],
                "additionalProperties": false,
            },
        }),
        json!({
            "name": "vault_list",
            "description": "List notes, newest first: path, title, tags, created.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "folder": {"type": "string", "enum": folders},
                    "tags": {"type": "array", "items": {"type": "string"}, "description": "All must match"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": vault::DEFAULT_LIST_LIMIT},
                },
                "additionalProperties": false,
            },
        }),
        json!({
            "name": "log_interaction",
            "description": "Record this interaction in today's log.",
            "input_schema": {
                "type": "object",
                "properties": {
                    "input": {"type": "string", "description": "The user's text"},
                    "category": {"type": "string"},
                    "confidence": confidence,
                    "reasoning": {"type": "string"},
                    "tags": tags,
                    "stored_path": {"type": "string"},
                    "clarification": {"type": "string", "description": "Question asked"},
                    "user_response": {"type": "string"},
                },
                "required": ["input"],
                "additionalProperties": false,
            },
        }),
        json!({
            "name": "send_message",
            "description": "Text the user in this conversation.",
            "input_schema": {
                "type": "object",
                "properties": {"message": {"type": "string"}},
                "required": ["message"],
                "additionalProperties": false,
            },
        }),
        crate::search::tool::definition(),
    ]
    .into_iter()
    .chain(reminders::definitions())
    .collect()
}

/// A reply's text (`field` of `tool`): not blank, not over [`MAX_MESSAGE_BYTES`], no NUL.
fn check_message(tool: &'static str, field: &str, message: &str) -> Result<(), Error> {
    if message.trim().is_empty() {
        return Err(invalid(tool, format!("{field} is empty")));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(
            tool,
            format!("{field} is longer than {MAX_MESSAGE_BYTES} bytes"),
        ));
    }
    if message.contains('\0') {
        return Err(invalid(tool, format!("{field} contains a NUL byte")));
    }
    Ok(())
}

fn invalid(tool: &'static str, reason: impl Into<String>) -> Error {
    Error::Input {
        tool,
        reason: reason.into(),
    }
}

fn parse<T: DeserializeOwned>(tool: &'static str, input: &Value) -> Result<T, Error> {
    if !input.is_object() {
        return Err(invalid(tool, "input must be a JSON object"));
    }
    T::deserialize(input).map_err(|e| invalid(tool, e.to_string()))
}

fn parse_folder(tool: &'static str, folder: &str) -> Result<Folder, Error> {
    folder
        .parse()
        .map_err(|source| Error::Vault { tool, source })
}

fn parse_confidence(tool: &'static str, confidence: Option<i64>) -> Result<Option<u8>, Error> {
    match confidence {
        None => Ok(None),
        Some(c) => match u8::try_from(c) {
            Ok(c) if c <= 100 => Ok(Some(c)),
            _ => Err(invalid(tool, "confidence must be an integer from 0 to 100")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::Sender;
    use std::cell::Cell;
    use std::fs;
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;
    use proptest::test_runner::{Config as ProptestConfig, TestRunner};

    /// The AppleScript `Sender` passes for a chat it knows by id.
    const SEND_TO_CHAT: &str = "on run argv\n\ttell application \"Messages\"\n\t\tsend (item 2 \
                                of argv) to chat id (item 1 of argv)\n\tend tell\nend run";

    fn chat() -> Chat {
        Chat {
            guid: "iMessage;-;+15551234567".into(),
            identifier: "+15551234567".into(),
            is_group: false,
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        tools: Tools,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture::with_sender(Sender::with_program("/nonexistent/osascript"))
        }

        fn with_sender(sender: Sender) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let vault = Vault::new(dir.path().join("vault"));
            fs::create_dir(vault.root()).unwrap();
            vault.check_writable().unwrap();
            let tools = Tools::new(vault, sender, chat(), Some("GUID-1".into()));
            Fixture { dir, tools }
        }

        fn root(&self) -> &Path {
            self.tools.vault.root()
        }

        async fn call(&self, name: &str, input: Value) -> ToolOutput {
            self.tools.call(name, &input).await
        }

        /// Every file under the vault, vault-relative, sorted.
        fn files(&self) -> Vec<String> {
            let mut out = Vec::new();
            let mut stack = vec![self.root().to_path_buf()];
            while let Some(dir) = stack.pop() {
                for entry in fs::read_dir(dir).unwrap() {
                    let path = entry.unwrap().path();
                    if path.is_dir() {
                        stack.push(path);
                    } else {
                        let rel = path.strip_prefix(self.root()).unwrap();
                        out.push(rel.to_str().unwrap().to_string());
                    }
                }
            }
            out.sort();
            out
        }
    }

    fn today() -> String {
        Local::now().format("%Y-%m-%d").to_string()
    }

    #[test]
    fn definitions_describe_five_strict_tools() {
        let defs = definitions();
        let names: Vec<&str> = defs.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "vault_write",
                "vault_read",
                "vault_list",
                "log_interaction",
                "send_message",
                "vault_search",
                "vault_set_reminder",
                "vault_list_reminders",
                "vault_move"
            ]
        );
        for def in &defs {
            assert!(!def["description"].as_str().unwrap().is_empty());
            assert_eq!(def["input_schema"]["type"], "object");
            assert_eq!(def["input_schema"]["additionalProperties"], false);
        }
        let write = &defs[0]["input_schema"];
        assert_eq!(
            write["required"],
            json!(["folder", "title", "content", "confidence"])
        );
        assert_eq!(
            write["properties"]["folder"]["enum"],
            json!([
                "Tasks",
                "Ideas",
                "Reference",
                "Projects",
                "Inbox",
                "Archive"
            ])
        );
        assert_eq!(
            write["properties"]["confidence"],
            json!({"type": "integer", "minimum": 0, "maximum": 100})
        );
        assert_eq!(defs[3]["input_schema"]["required"], json!(["input"]));
        let send = &defs[4]["input_schema"];
        assert_eq!(send["properties"], json!({"message": {"type": "string"}}));
        assert_eq!(send["required"], json!(["message"]));
        // They are sent with every request: keep them small (nine tools since issue 11).
        let bytes = serde_json::to_string(&defs).unwrap().len();
        assert!(bytes < 3_700, "tool definitions grew to {bytes} bytes");
    }

    #[tokio::test]
    async fn vault_write_creates_the_note_with_its_source() {
        let f = Fixture::new();
        let out = f
            .call(
                "vault_write",
                json!({
                    "folder": "Tasks",
                    "title": "Call Sarah",
                    "content": "About the deck.",
                    "tags": ["#person/sarah", "priority/high"],
                    "confidence": 90,
                }),
            )
            .await;
        let path = format!("Tasks/{}_call-sarah.md", today());
        assert_eq!(out, ToolOutput::ok(path.clone()));
        let text = fs::read_to_string(f.root().join(&path)).unwrap();
        assert!(text.starts_with("---\ncreated: "), "{text}");
        assert!(
            text.ends_with(
                "\ntags:\n- person/sarah\n- priority/high\nconfidence: 90\nsource: \
                 imessage:GUID-1\n---\n# Call Sarah\n\nAbout the deck.\n"
            ),
            "{text}"
        );
        // The same call again (a re-run after a crash) returns the same note.
        let again = f
            .call(
                "vault_write",
                json!({"folder": "Tasks", "title": "Call Sarah", "content": "x", "confidence": 1}),
            )
            .await;
        assert_eq!(again, ToolOutput::ok(path.clone()));
        assert_eq!(
            f.files().iter().filter(|p| p.starts_with("Tasks/")).count(),
            1
        );
        let record = f.tools.record();
        assert_eq!(record.notes_written, [path.clone(), path]);
        assert!(record.messages_sent.is_empty());
        assert_eq!(record.logged, 0);
    }

    #[tokio::test]
    async fn vault_write_without_a_source_and_with_null_optionals() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path());
        let tools = Tools::new(vault, Sender::default(), chat(), None);
        let input = json!({"folder": "Ideas", "title": "Solar kettle", "content": "",
                           "tags": null, "confidence": 70});
        let out = tools.call("vault_write", &input).await;
        let path = format!("Ideas/{}_solar-kettle.md", today());
        assert_eq!(out, ToolOutput::ok(path.clone()));
        let text = fs::read_to_string(dir.path().join(&path)).unwrap();
        assert!(
            text.ends_with("\ntags: []\nconfidence: 70\n---\n# Solar kettle\n"),
            "{text}"
        );
        assert!(!text.contains("source"));
    }

    #[tokio::test]
    async fn vault_write_refuses_bad_input() {
        let f = Fixture::new();
        let before = f.files();
        let ok = || json!({"folder": "Tasks", "title": "t", "content": "c", "confidence": 50});
        let with = |key: &str, value: Value| {
            let mut input = ok();
            input[key] = value;
            input
        };
        let without = |key: &str| {
            let mut input = ok();
            input.as_object_mut().unwrap().remove(key);
            input
        };
        let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
        let cases: Vec<(Value, &str)> = vec![
            (json!("Tasks"), "JSON object"),
            (json!(null), "JSON object"),
            (json!([1, 2]), "JSON object"),
            (without("title"), "missing field `title`"),
            (without("folder"), "missing field `folder`"),
            (without("content"), "missing field `content`"),
            (with("title", json!(5)), "invalid type"),
            (with("content", json!({"a": 1})), "invalid type"),
            (with("tags", json!("a,b")), "invalid type"),
            (with("tags", json!([1])), "invalid type"),
            (
                with("folder", json!("tasks")),
                "Tasks, Ideas, Reference, Projects, Inbox, Archive",
            ),
            (with("folder", json!("../Tasks")), "unknown folder"),
            (with("folder", json!("_system")), "unknown folder"),
            (with("title", json!("a\u{0}b")), "NUL"),
            (
                with("title", json!("t".repeat(1024 * 1024))),
                "invalid title",
            ),
            (with("title", json!(" \r\n ")), "invalid title: empty"),
            (
                with("content", json!("c".repeat(256 * 1024 + 1))),
                "invalid content",
            ),
            (with("tags", json!(many)), "more than 50 tags"),
            (without("confidence"), "missing field `confidence`"),
            (with("confidence", json!(null)), "invalid type"),
            (with("tags", json!(["line\nbreak"])), "whitespace"),
            (with("tags", json!(["bell\u{7}"])), "control"),
            (with("tags", json!(["a\u{2028}b"])), "whitespace"),
            (with("tags", json!(["#"])), "empty tag"),
            (with("confidence", json!(101)), "0 to 100"),
            (with("confidence", json!(-1)), "0 to 100"),
            (with("confidence", json!(50.5)), "invalid type"),
            (with("confidence", json!("85")), "invalid type"),
            (with("recipient", json!("x")), "unknown field `recipient`"),
        ];
        for (input, want) in cases {
            let out = f.call("vault_write", input.clone()).await;
            assert!(out.is_error, "{input}: {out:?}");
            assert!(
                out.content.contains(want),
                "{input}: {:?} lacks {want:?}",
                out.content
            );
            assert!(
                out.content.len() < 400,
                "short reason: {}",
                out.content.len()
            );
        }
        assert_eq!(f.files(), before, "nothing written");
        assert_eq!(f.tools.record(), ToolRecord::default());
    }

    #[tokio::test]
    async fn vault_read_returns_notes_and_refuses_the_rest() {
        let f = Fixture::new();
        fs::write(f.dir.path().join("secret.md"), "SECRET").unwrap();
        fs::write(f.root().join("Ideas/idea.md"), "# Idea\n\nשלום 🎉\r\n").unwrap();
        let out = f
            .call("vault_read", json!({"filepath": "Ideas/idea.md"}))
            .await;
        assert_eq!(out, ToolOutput::ok("# Idea\n\nשלום 🎉\r\n"));

        let cases: Vec<(Value, &str)> = vec![
            (json!({"filepath": "../secret.md"}), "outside the vault"),
            (
                json!({"filepath": "Ideas/../../secret.md"}),
                "outside the vault",
            ),
            (
                json!({"filepath": f.dir.path().join("secret.md")}),
                "outside the vault",
            ),
            (json!({"filepath": "Ideas/idea.md\u{0}"}), "NUL"),
            (json!({"filepath": "Ideas/none.md"}), "does not exist"),
            (json!({"filepath": "Ideas"}), "only .md"),
            (json!({"filepath": "a/".repeat(3000) + "x.md"}), "too long"),
            (json!({"filepath": 3}), "invalid type"),
            (json!({}), "missing field `filepath`"),
        ];
        for (input, want) in cases {
            let out = f.call("vault_read", input.clone()).await;
            assert!(out.is_error, "{input}: {out:?}");
            assert!(
                out.content.contains(want),
                "{input}: {:?} lacks {want:?}",
                out.content
            );
            assert!(!out.content.contains("SECRET"));
        }
    }

    #[tokio::test]
    async fn vault_list_returns_summaries_as_json() {
        let f = Fixture::new();
        for (folder, title, tags) in [
            ("Tasks", "First task", json!(["work"])),
            ("Tasks", "Second task", json!(["work", "priority/high"])),
            ("Ideas", "An idea", json!(["work"])),
        ] {
            let input = json!({"folder": folder, "title": title, "content": "x", "tags": tags, "confidence": 80});
            assert!(!f.tools.call("vault_write", &input).await.is_error);
        }
        let out = f
            .call("vault_list", json!({"folder": "Tasks", "tags": ["#work"]}))
            .await;
        assert!(!out.is_error, "{out:?}");
        let list: Vec<Value> = serde_json::from_str(&out.content).unwrap();
        let titles: Vec<&str> = list.iter().map(|n| n["title"].as_str().unwrap()).collect();
        assert_eq!(titles.len(), 2);
        assert!(titles.contains(&"First task") && titles.contains(&"Second task"));
        let second = list.iter().find(|n| n["title"] == "Second task").unwrap();
        assert_eq!(second["path"], format!("Tasks/{}_second-task.md", today()));
        assert_eq!(second["tags"], json!(["work", "priority/high"]));
        assert!(second["created"].as_str().unwrap().starts_with(&today()));

        let out = f
            .call("vault_list", json!({"tags": ["priority/high"]}))
            .await;
        let list: Vec<Value> = serde_json::from_str(&out.content).unwrap();
        assert_eq!(list.len(), 1);
        let out = f.call("vault_list", json!({"limit": 1})).await;
        assert_eq!(
            serde_json::from_str::<Vec<Value>>(&out.content)
                .unwrap()
                .len(),
            1
        );
        let out = f.call("vault_list", json!({})).await;
        assert_eq!(
            serde_json::from_str::<Vec<Value>>(&out.content)
                .unwrap()
                .len(),
            3
        );
        let out = f.call("vault_list", json!({"folder": "Archive"})).await;
        assert_eq!(out, ToolOutput::ok("[]"));

        for (input, want) in [
            (json!({"folder": "Nope"}), "unknown folder"),
            (json!({"limit": 0}), "1 to 100"),
            (json!({"limit": 101}), "1 to 100"),
            (json!({"limit": "5"}), "invalid type"),
            (json!({"tags": "work"}), "invalid type"),
            (json!({"tags": ["a:b"]}), "contains ':'"),
            (json!({"sort": "asc"}), "unknown field"),
        ] {
            let out = f.call("vault_list", input.clone()).await;
            assert!(
                out.is_error && out.content.contains(want),
                "{input}: {out:?}"
            );
        }
    }

    #[tokio::test]
    async fn log_interaction_appends_to_todays_log() {
        let f = Fixture::new();
        let input = json!({
            "input": "remind me to call mom",
            "category": "Tasks",
            "confidence": 95,
            "tags": ["#person/mom"],
            "stored_path": "Tasks/x.md",
        });
        let rel = format!("_system/logs/{}.md", today());
        assert_eq!(
            f.call("log_interaction", input).await,
            ToolOutput::ok(format!("logged to {rel}"))
        );
        let out = f.call(
            "log_interaction",
            json!({"input": "second", "clarification": "Which?"}),
        );
        assert!(!out.await.is_error);
        let text = fs::read_to_string(f.root().join(&rel)).unwrap();
        assert!(
            text.starts_with(&format!("# Interaction Log: {}\n\n## ", today())),
            "{text}"
        );
        assert!(
            text.contains(
                "- **Input:** remind me to call mom\n- **Category:** Tasks\n- **Confidence:** \
                 95\n- **Tags:** person/mom\n- **Stored path:** Tasks/x.md\n\n## "
            ),
            "{text}"
        );
        assert!(
            text.ends_with("- **Input:** second\n- **Clarification:** Which?\n"),
            "{text}"
        );
        assert_eq!(f.tools.record().logged, 2);

        for (input, want) in [
            (json!({}), "missing field `input`"),
            (json!({"input": "x", "confidence": 1000}), "0 to 100"),
            (json!({"input": "x", "reasoning": 7}), "invalid type"),
            (json!({"input": "x\u{0}"}), "NUL"),
            (json!({"input": "x", "mood": "good"}), "unknown field"),
        ] {
            let out = f.call("log_interaction", input.clone()).await;
            assert!(
                out.is_error && out.content.contains(want),
                "{input}: {out:?}"
            );
        }
        assert_eq!(f.tools.record().logged, 2);
    }

    #[tokio::test]
    async fn unknown_tool_is_an_error() {
        let f = Fixture::new();
        let out = f.call("delete_everything", json!({})).await;
        assert!(out.is_error);
        assert!(
            out.content.contains("unknown tool \"delete_everything\""),
            "{}",
            out.content
        );
    }

    /// A stand-in for `osascript` that writes its argv, NUL-separated, to `argv` beside it.
    #[cfg(unix)]
    fn fake_osascript(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("osascript");
        fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        // A child forked by another test thread while the script was open for writing
        // makes exec fail with ETXTBSY until that child execs; wait that out once here.
        loop {
            match std::process::Command::new(&script).arg("warm-up").output() {
                Err(e) if e.raw_os_error() == Some(26) => std::thread::yield_now(),
                Err(e) => panic!("fake osascript does not run: {e}"),
                Ok(_) => break,
            }
        }
        let _ = fs::remove_file(dir.join("argv"));
        script
    }

    #[cfg(unix)]
    fn recording_sender(dir: &Path) -> (Sender, PathBuf) {
        let argv = dir.join("argv");
        let body = format!("printf '%s\\0' \"$@\" > '{}'", argv.display());
        (Sender::with_program(fake_osascript(dir, &body)), argv)
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn send_message_passes_the_text_as_an_argument_to_this_chat() {
        let texts = [
            "Saved to Tasks ✅",
            "He said \"hi\" \\ back\\n\nnew line\r\nCRLF",
            "sep\u{2028}para\u{2029}end",
            "\" & do shell script \"touch /tmp/pwned\" & \"",
            "'; end tell; do shell script \"id\" --",
            "שלום עולם 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 %s %n $HOME `id`",
        ];
        for text in texts {
            let scripts = tempfile::tempdir().unwrap();
            let (sender, argv) = recording_sender(scripts.path());
            let f = Fixture::with_sender(sender);
            // The agent may not choose a recipient.
            let out = f.call(
                "send_message",
                json!({"message": text, "to": "+15550000000"}),
            );
            let out = out.await;
            assert!(
                out.is_error && out.content.contains("unknown field `to`"),
                "{out:?}"
            );
            assert!(!argv.exists(), "nothing sent");

            let out = f.call("send_message", json!({"message": text})).await;
            assert_eq!(out, ToolOutput::ok("sent"));
            let want = ["-e", SEND_TO_CHAT, "iMessage;-;+15551234567", text].join("\0") + "\0";
            assert_eq!(
                fs::read(&argv).unwrap(),
                want.as_bytes(),
                "argv for {text:?}"
            );
            assert_eq!(f.tools.record().messages_sent, [text]);
        }
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn send_message_refuses_bad_input_without_running_anything() {
        let scripts = tempfile::tempdir().unwrap();
        let (sender, argv) = recording_sender(scripts.path());
        let f = Fixture::with_sender(sender);
        for (input, want) in [
            (json!({}), "missing field `message`"),
            (json!({"message": 5}), "invalid type"),
            (json!({"message": ""}), "empty"),
            (json!({"message": " \n\u{2028}"}), "empty"),
            (json!({"message": "a\u{0}b"}), "NUL"),
            (
                json!({"message": "x".repeat(MAX_MESSAGE_BYTES + 1)}),
                "longer than",
            ),
            (json!({"message": "hi", "chat": "other"}), "unknown field"),
        ] {
            let out = f.call("send_message", input.clone()).await;
            assert!(
                out.is_error && out.content.contains(want),
                "{input}: {out:?}"
            );
        }
        assert!(!argv.exists(), "nothing sent");
        assert!(f.tools.record().messages_sent.is_empty());
    }

    /// Issue 9: one text led to 184 sends in 8 s. At most three `send_message` calls per
    /// text reach Messages; more get a tool error that says so.
    #[cfg(unix)]
    #[tokio::test]
    async fn ten_send_message_calls_send_three() {
        let scripts = tempfile::tempdir().unwrap();
        let count = scripts.path().join("sent");
        let body = format!(
            "[ \"$1\" = -e ] && printf '%s\\n' \"$4\" >> '{}'",
            count.display()
        );
        let f = Fixture::with_sender(Sender::with_program(fake_osascript(scripts.path(), &body)));
        let mut outs = Vec::new();
        for i in 0..10 {
            outs.push(
                f.call("send_message", json!({"message": format!("reply {i}")}))
                    .await,
            );
        }
        assert_eq!(
            fs::read_to_string(&count).unwrap(),
            "reply 0\nreply 1\nreply 2\n"
        );
        assert!(outs[..3].iter().all(|o| !o.is_error), "{outs:?}");
        for out in &outs[3..] {
            assert!(out.is_error, "{out:?}");
            assert!(
                out.content.contains("at most 3 replies per text"),
                "{}",
                out.content
            );
        }
        assert_eq!(f.tools.record().messages_sent.len(), 3);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn send_failure_is_reported_to_the_model() {
        let scripts = tempfile::tempdir().unwrap();
        let body = "echo 'execution error: Not authorized to send Apple events to Messages. \
                    (-1743)' >&2\nexit 1";
        let f = Fixture::with_sender(Sender::with_program(fake_osascript(scripts.path(), body)));
        let out = f.call("send_message", json!({"message": "hello"})).await;
        assert!(out.is_error);
        assert!(
            out.content.contains("Automation permission"),
            "{}",
            out.content
        );
        assert!(f.tools.record().messages_sent.is_empty());

        let f = Fixture::new();
        let out = f.call("send_message", json!({"message": "hello"})).await;
        assert!(
            out.is_error && out.content.contains("could not run"),
            "{out:?}"
        );
    }

    fn write_with_reply(title: &str, reply: Value) -> Value {
        json!({"folder": "Tasks", "title": title, "content": "c", "confidence": 90, "reply": reply})
    }

    /// Issue 16: `vault_write` carries its reply: sent once the note is on disk (the fake
    /// osascript finds it there), `{path}` replaced by the note's path, and counted in the
    /// per-text cap with `send_message`.
    #[cfg(unix)]
    #[tokio::test]
    async fn vault_write_sends_its_reply_naming_the_path_after_the_note_is_written() {
        let scripts = tempfile::tempdir().unwrap();
        let sent = scripts.path().join("sent");
        let f = Fixture::new();
        let note = format!("{}/Tasks/{}_call-sarah.md", f.root().display(), today());
        // The reply's osascript records its text only if the note is already there.
        let body = format!(
            "[ -f '{}' ] && printf '%s\\n' \"$4\" >> '{}'",
            note,
            sent.display()
        );
        let f = Fixture {
            tools: Tools::new(
                f.tools.vault.clone(),
                Sender::with_program(fake_osascript(scripts.path(), &body)),
                chat(),
                Some("GUID-1".into()),
            ),
            ..f
        };
        let out = f
            .call(
                "vault_write",
                write_with_reply("Call Sarah", json!("Saved to {path} ✅ ({path})")),
            )
            .await;
        let path = format!("Tasks/{}_call-sarah.md", today());
        assert_eq!(out, ToolOutput::ok(format!("{path}\nreply: sent")));
        let want = format!("Saved to {path} ✅ ({path})\n");
        assert_eq!(fs::read_to_string(&sent).unwrap(), want);
        let record = f.tools.record();
        assert_eq!(record.notes_written, [path]);
        assert_eq!(record.messages_sent, [want.trim_end()]);
        assert!(f.tools.is_done(&["vault_write", "log_interaction"]));
        assert!(!f.tools.is_done(&["vault_write", "vault_read"]));

        // Two more replies fit in the cap of three; the fourth is refused before any note.
        for title in ["Two", "Three"] {
            let out = f
                .call("vault_write", write_with_reply(title, json!("ok")))
                .await;
            assert!(!out.is_error, "{out:?}");
        }
        let out = f
            .call("vault_write", write_with_reply("Four", json!("ok")))
            .await;
        assert!(
            out.is_error && out.content.contains("at most 3 replies"),
            "{out:?}"
        );
        assert_eq!(f.files().len(), 3, "{:?}", f.files());
    }

    /// Issue 16: a `vault_write` that fails sends no reply and frees its place in the cap;
    /// a bad reply is refused before anything is written.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_failing_vault_write_sends_no_reply() {
        let scripts = tempfile::tempdir().unwrap();
        let (sender, argv) = recording_sender(scripts.path());
        let f = Fixture::with_sender(sender);
        let bad_folder = json!({"folder": "Taks", "title": "t", "content": "c", "confidence": 90, "reply": "Saved"});
        for input in [
            bad_folder,
            write_with_reply("t", json!("")),
            write_with_reply("t", json!("a\u{0}b")),
            write_with_reply("t", json!("x".repeat(MAX_MESSAGE_BYTES + 1))),
            write_with_reply("t", json!(5)),
        ] {
            let out = f.call("vault_write", input.clone()).await;
            assert!(out.is_error, "{input}: {out:?}");
        }
        assert!(!argv.exists(), "nothing sent");
        assert!(f.files().is_empty(), "{:?}", f.files());
        assert_eq!(f.tools.record(), ToolRecord::default());
        assert!(!f.tools.is_done(&["vault_write"]));
        for i in 0..3 {
            let out = f
                .call("send_message", json!({"message": format!("r{i}")}))
                .await;
            assert!(!out.is_error, "the cap is whole: {out:?}");
        }
    }

    /// Issue 16: the note is kept when its reply cannot be sent; the model is told not to
    /// write it again.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_reply_that_cannot_be_sent_keeps_the_note_and_says_so() {
        let f = Fixture::new();
        let out = f
            .call(
                "vault_write",
                write_with_reply("Call Sarah", json!("Saved")),
            )
            .await;
        assert!(out.is_error, "{out:?}");
        assert!(
            out.content.contains("the note was written to Tasks/"),
            "{}",
            out.content
        );
        assert!(
            out.content.contains("do not write the note again"),
            "{}",
            out.content
        );
        assert_eq!(f.tools.record().notes_written.len(), 1);
        assert!(f.tools.record().messages_sent.is_empty());
    }

    /// 10,000 cases; a failure is reported with its minimal input rather than saved.
    fn config() -> ProptestConfig {
        ProptestConfig {
            failure_persistence: None,
            ..ProptestConfig::with_cases(10_000)
        }
    }

    fn regex(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
        proptest::string::string_regex(pattern).unwrap()
    }

    /// Names directly inside `dir`, sorted.
    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// A vault inside a parent folder that also holds a secret note, with symlinks from the
    /// vault to it (`Projects` among them, issue 9), a secret in `.obsidian/` and a FIFO.
    /// Nothing may appear in the parent, and no secret may ever be read.
    #[cfg(unix)]
    fn confined() -> (Fixture, tokio::runtime::Runtime, Vec<String>) {
        let f = Fixture::new();
        fs::write(f.dir.path().join("secret.md"), "TOP-SECRET").unwrap();
        std::os::unix::fs::symlink(f.dir.path().join("secret.md"), f.root().join("leak.md"))
            .unwrap();
        std::os::unix::fs::symlink(f.dir.path(), f.root().join("Escape")).unwrap();
        fs::remove_dir(f.root().join("Projects")).unwrap();
        std::os::unix::fs::symlink(f.dir.path(), f.root().join("Projects")).unwrap();
        fs::create_dir(f.root().join(".obsidian")).unwrap();
        fs::write(f.root().join(".obsidian/inside.md"), "TOP-SECRET").unwrap();
        crate::vault::testing::mkfifo(&f.root().join("Ideas/pipe.md"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let parent = entries(f.dir.path());
        assert_eq!(parent, ["secret.md", "vault"]);
        (f, runtime, parent)
    }

    #[cfg(unix)]
    #[test]
    fn any_filepath_never_reads_outside_the_vault() {
        let (f, runtime, parent) = confined();
        fs::write(f.root().join("Ideas/inside.md"), "inside").unwrap();
        let parts = "(\\.\\./|\\.\\.|/|\\./|//|Escape/|Projects/|\\.obsidian/|Ideas/|leak|secret|\
                     inside|pipe|[a-z]{1,3}/|\\x00|\\\\|%2e%2e/|~/){0,6}";
        let strategy = prop_oneof![
            any::<String>(),
            regex(&format!(
                "{parts}(secret|leak|inside|pipe|x)?(\\.md|\\.txt|/)?"
            )),
            regex(&format!("{parts}(secret|leak|inside|pipe)(\\.md|\\.MD)")),
        ];
        let (read, refused_outside, cases) = (Cell::new(0), Cell::new(0), Cell::new(0));
        let mut runner = TestRunner::new(config());
        runner
            .run(&strategy, |filepath| {
                cases.set(cases.get() + 1);
                let out = runtime.block_on(f.call("vault_read", json!({ "filepath": filepath })));
                prop_assert!(
                    !out.content.contains("TOP-SECRET"),
                    "{filepath:?} read the secret"
                );
                prop_assert!(!out.content.contains("internal error"));
                if !out.is_error {
                    prop_assert_eq!(out.content.as_str(), "inside");
                    read.set(read.get() + 1);
                } else if out.content.contains("outside the vault") {
                    refused_outside.set(refused_outside.get() + 1);
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(entries(f.dir.path()), parent);
        assert_eq!(cases.get(), 10_000, "every case ran");
        // The cases reached the interesting paths, not only the input checks.
        assert!(
            read.get() > 0 && refused_outside.get() > 500,
            "{read:?} {refused_outside:?}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn any_title_folder_or_tags_never_write_outside_the_vault() {
        let (f, runtime, parent) = confined();
        let root = fs::canonicalize(f.root()).unwrap();
        let folder = prop_oneof![
            1 => proptest::sample::select(Folder::ALL.map(|f| f.as_str().to_string()).to_vec()),
            8 => any::<String>(),
            1 => "(\\.\\./|/|Escape/|Tasks/){1,3}[A-Za-z]{0,8}",
        ];
        let tags = prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<String>(), 0..4),
            proptest::collection::vec("[#a-z0-9/:._'\" @?+&!,\\[\\]-]{1,12}", 0..4),
        ];
        let title = prop_oneof![
            any::<String>(),
            "(\\.\\./|/|\\\\|\\x00|Escape|[a-z ]{1,8}){0,5}"
        ];
        let (written_count, cases) = (Cell::new(0), Cell::new(0));
        let mut runner = TestRunner::new(config());
        runner
            .run(&(folder, title, tags), |(folder, title, tags)| {
                cases.set(cases.get() + 1);
                let input = json!({"folder": folder, "title": title, "content": "c", "tags": tags, "confidence": 50});
                let out = runtime.block_on(f.call("vault_write", input));
                prop_assert!(!out.content.contains("internal error"));
                if !out.is_error {
                    written_count.set(written_count.get() + 1);
                    let written = fs::canonicalize(f.root().join(&out.content)).unwrap();
                    prop_assert!(
                        written.starts_with(&root),
                        "{:?} left the vault",
                        out.content
                    );
                    let in_folder = out.content.starts_with(&format!("{folder}/"));
                    prop_assert!(in_folder, "{:?} is not in {:?}", out.content, folder);
                    // Issue 9: every tag written is one Obsidian reads as a tag.
                    let text = fs::read_to_string(&written).unwrap();
                    let yaml = text.split("---\n").nth(1).unwrap();
                    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
                    for tag in value["tags"].as_sequence().unwrap() {
                        let tag = tag.as_str().unwrap();
                        let chars_ok = tag
                            .chars()
                            .all(|c| c.is_alphanumeric() || "_-/".contains(c) || !c.is_ascii());
                        prop_assert!(chars_ok && !tag.chars().all(|c| c.is_numeric()), "{tag:?}");
                        prop_assert!(!tag.split('/').any(str::is_empty), "{tag:?}");
                    }
                    prop_assert!(value["confidence"].as_u64() == Some(50));
                    // Keep the folder small, so that each case costs the same.
                    fs::remove_file(&written).unwrap();
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(entries(f.dir.path()), parent);
        assert_eq!(
            fs::read_to_string(f.dir.path().join("secret.md")).unwrap(),
            "TOP-SECRET"
        );
        assert_eq!(cases.get(), 10_000, "every case ran");
        assert!(
            written_count.get() > 100,
            "only {written_count:?} notes were written"
        );
    }
}
