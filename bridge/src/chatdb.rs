//! Reads incoming texts from Messages' `chat.db`, read-only.
//!
//! Invariants: the database is never written; rows are read strictly above a ROWID cursor;
//! a row whose chat join is not committed yet is left for the next read, never dropped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A conversation in Messages, identified by its chat `guid`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Chat {
    /// `chat.guid`, e.g. `iMessage;-;+15551234567`; replies are addressed to it.
    pub guid: String,
    /// `chat.chat_identifier`: the other person's handle in a direct chat, a `chat…` id in a group.
    pub identifier: String,
    /// `chat.style` 43 (group) rather than 45 (direct).
    pub is_group: bool,
}

/// One incoming text, as read from `chat.db`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingMessage {
    /// `message.ROWID`.
    pub rowid: i64,
    /// `message.guid`, unique per message.
    pub guid: String,
    /// The conversation it belongs to.
    pub chat: Chat,
    /// `handle.id` of the sender: a phone number or an email address.
    pub sender: String,
    /// The body: `text`, else the decoded `attributedBody`, attachment placeholders removed.
    pub text: String,
    /// When Messages received it.
    pub date: DateTime<Utc>,
}
