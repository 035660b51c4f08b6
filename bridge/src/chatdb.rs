//! Reads incoming texts from Messages' `chat.db`, read-only.
//!
//! Invariants: the database is never written (opened `SQLITE_OPEN_READ_ONLY`, never created);
//! rows are read strictly above a ROWID cursor, in ROWID order; a row whose chat join is not
//! committed yet is left for the next read, never dropped, unless it is old enough to be
//! malformed; one bad row is logged and skipped, never an error. Message bodies are never
//! logged. All calls block: callers run them in `spawn_blocking`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags, Row};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::allowlist::Handle;
use crate::typedstream;

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
    /// Where it came from: service, and whether it is a row of a chat with yourself.
    #[serde(default)]
    pub origin: Origin,
    /// What came with the words: attachments, a voice message's transcript, a link's
    /// preview (boxed: most texts have none, and a message moves through queues).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Box<crate::attachments::Extras>>,
}

/// `message.service`: how a text travelled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Service {
    /// `iMessage`: end-to-end encrypted, the sender's address is verified by Apple.
    #[default]
    IMessage,
    /// `SMS`: the sender's number is easy to spoof.
    Sms,
    /// `RCS`: carrier messaging, like SMS for this purpose.
    Rcs,
    /// Anything else Messages may write.
    Other(String),
}

impl Service {
    /// Maps a `message.service` value (NULL counts as iMessage, as on old databases).
    pub fn parse(raw: Option<&str>) -> Service {
        match raw {
            None | Some("iMessage") => Service::IMessage,
            Some("SMS") => Service::Sms,
            Some("RCS") => Service::Rcs,
            Some(other) => Service::Other(other.to_string()),
        }
    }

    /// Whether this is iMessage.
    pub fn is_imessage(&self) -> bool {
        *self == Service::IMessage
    }
}

/// Facts about a row that decide whether it may reach the agent (see `intake`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// `message.service`.
    #[serde(default)]
    pub service: Service,
    /// The row is `is_from_me = 1`: delivered only in a chat with yourself, where it may be
    /// your own text (some macOS versions record those only as sent) or one of our replies.
    #[serde(default)]
    pub from_me: bool,
    /// The chat is a direct chat with the account's own address.
    #[serde(default)]
    pub self_chat: bool,
    /// `chat.display_name`, for a group.
    #[serde(default)]
    pub chat_name: Option<String>,
}

/// Table and column names of `chat.db`, in one place.
mod names {
    /// Table `message`: one row per message.
    pub const MESSAGE: &str = "message";
    /// Table `handle`: one row per address (phone number or email) per service.
    pub const HANDLE: &str = "handle";
    /// Table `chat`: one row per conversation.
    pub const CHAT: &str = "chat";
    /// Table `chat_message_join`: which chat a message belongs to.
    pub const CHAT_MESSAGE_JOIN: &str = "chat_message_join";

    /// The implicit row id of every table.
    pub const ROWID: &str = "ROWID";
    /// `message.guid` and `chat.guid`.
    pub const GUID: &str = "guid";
    /// `message.text`: the body, often NULL on recent macOS.
    pub const TEXT: &str = "text";
    /// `message.attributedBody`: the body as a typedstream.
    pub const ATTRIBUTED_BODY: &str = "attributedBody";
    /// `message.handle_id`: the sender's `handle.ROWID` (0 for none).
    pub const HANDLE_ID: &str = "handle_id";
    /// `message.is_from_me`.
    pub const IS_FROM_ME: &str = "is_from_me";
    /// `message.associated_message_type`: non-zero for tapbacks and other reactions.
    pub const ASSOCIATED_MESSAGE_TYPE: &str = "associated_message_type";
    /// `message.date`: Apple epoch, nanoseconds (seconds on old databases).
    pub const DATE: &str = "date";
    /// `handle.id`: the address itself.
    pub const HANDLE_ADDRESS: &str = "id";
    /// `chat.chat_identifier`.
    pub const CHAT_IDENTIFIER: &str = "chat_identifier";
    /// `chat.style`: 43 group, 45 direct.
    pub const STYLE: &str = "style";
    /// `chat_message_join.chat_id`.
    pub const JOIN_CHAT_ID: &str = "chat_id";
    /// `chat_message_join.message_id`.
    pub const JOIN_MESSAGE_ID: &str = "message_id";
    /// `message.service`: `iMessage`, `SMS`, `RCS`.
    pub const SERVICE: &str = "service";
    /// `message.account`: the account's own address on sent rows, `E:me@icloud.com` or
    /// `p:+15551234567`.
    pub const ACCOUNT: &str = "account";
    /// `message.destination_caller_id`: the account's address a received row came to.
    pub const DESTINATION_CALLER_ID: &str = "destination_caller_id";
    /// `chat.display_name`: a group's name.
    pub const DISPLAY_NAME: &str = "display_name";
    /// Table `chat_handle_join`: a chat's participants.
    pub const CHAT_HANDLE_JOIN: &str = "chat_handle_join";
    /// `chat_handle_join.handle_id`.
    pub const JOIN_HANDLE_ID: &str = "handle_id";
    /// `message.cache_has_attachments`: 1 when attachment rows are joined to it.
    pub const CACHE_HAS_ATTACHMENTS: &str = "cache_has_attachments";
    /// `message.is_audio_message`: 1 for a voice message.
    pub const IS_AUDIO_MESSAGE: &str = "is_audio_message";
    /// `message.payload_data`: a rich link's preview, an NSKeyedArchiver plist.
    pub const PAYLOAD_DATA: &str = "payload_data";
}

/// `chat.style` of a group conversation.
const STYLE_GROUP: i64 = 43;
/// At most this many rows are dealt with per [`ChatDb::read_after`] call.
pub const BATCH_LIMIT: usize = 500;
/// A row without its chat join is waited for while its date is this close to now.
const JOIN_GRACE: TimeDelta = TimeDelta::seconds(60);
/// How long a read waits for a lock held by Messages before it fails (WAL readers rarely wait).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// Seconds from the Unix epoch to Apple's (2001-01-01T00:00:00Z).
const APPLE_EPOCH_UNIX_SECS: i64 = 978_307_200;
/// `message.date` values smaller than this (in magnitude) are seconds, not nanoseconds.
const SECONDS_LIMIT: u64 = 100_000_000_000;
/// The attachment placeholder Messages puts in a body where each attachment sits.
const OBJECT_REPLACEMENT: char = '\u{FFFC}';

/// Why `chat.db` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no database at the path.
    #[error(
        "no Messages database at {}: Messages is not set up on this Mac (sign in to iMessage in \
         Messages first)",
        .path.display()
    )]
    NotFound {
        /// The `chat.db` path that was tried.
        path: PathBuf,
    },
    /// macOS refused to let this app read the database.
    #[error(
        "cannot read {}: allow this app in System Settings › Privacy & Security › Full Disk Access",
        .path.display()
    )]
    PermissionDenied {
        /// The `chat.db` path that was refused.
        path: PathBuf,
    },
    /// SQLite failed to open or query the database.
    #[error("reading {}: {source}", .path.display())]
    Sqlite {
        /// The `chat.db` path.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
}

/// Converts a raw `message.date` to UTC: nanoseconds since 2001-01-01 UTC, or seconds on old
/// databases (values below ~1e11 in magnitude).
pub fn apple_time(raw: i64) -> DateTime<Utc> {
    let (secs, nanos) = if raw.unsigned_abs() < SECONDS_LIMIT {
        (raw, 0)
    } else {
        (raw.div_euclid(1_000_000_000), raw.rem_euclid(1_000_000_000))
    };
    let nanos = u32::try_from(nanos).unwrap_or(0);
    // Every i64 input is within chrono's range; the fallback is never reached.
    DateTime::from_timestamp(APPLE_EPOCH_UNIX_SECS + secs, nanos).unwrap_or_default()
}

/// The newest message row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Its `message.ROWID`.
    pub rowid: i64,
    /// Its date.
    pub date: DateTime<Utc>,
}

/// The result of one [`ChatDb::read_after`] call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The incoming texts, in ROWID order.
    pub messages: Vec<IncomingMessage>,
    /// The new cursor: the highest ROWID dealt with (delivered or skipped). Rows above it are
    /// read next time.
    pub next_after: i64,
    /// How many rows were skipped (sent by this account, reactions, empty, malformed).
    pub skipped: usize,
    /// Whether more rows are waiting past this batch's limit: read again at once.
    pub more: bool,
}

/// A read-only connection to `chat.db`.
///
/// Holds one SQLite connection: `Send` but not `Sync`, and every call blocks.
#[derive(Debug)]
pub struct ChatDb {
    path: PathBuf,
    conn: Connection,
    read_sql: String,
    newest_sql: String,
    /// The account's own addresses (normal form), from the `account` of rows it sent;
    /// grows as rows are read (a `RefCell`: the connection makes this type `!Sync` anyway).
    own: RefCell<BTreeSet<String>>,
}

impl ChatDb {
    /// Opens `path` read-only (never creating it) and reads its schema once, so that a missing
    /// file, a missing Full Disk Access grant or a file that is not a Messages database is
    /// reported here rather than at the first read.
    pub fn open(path: &Path) -> Result<ChatDb, Error> {
        // SQLite reports every open failure as "unable to open"; the file system says why.
        if let Err(err) = File::open(path) {
            match err.kind() {
                io::ErrorKind::NotFound => return Err(Error::NotFound { path: path.into() }),
                io::ErrorKind::PermissionDenied => {
                    return Err(Error::PermissionDenied { path: path.into() });
                }
                _ => {}
            }
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| classify(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| classify(path, e))?;
        let mut db = ChatDb {
            path: path.into(),
            conn,
            read_sql: read_after_sql(),
            newest_sql: newest_sql(),
            own: RefCell::new(BTreeSet::new()),
        };
        // Preparing reads the schema (the first read of the file) and checks every column.
        for sql in [&db.read_sql, &db.newest_sql] {
            db.conn.prepare_cached(sql).map_err(|e| classify(path, e))?;
        }
        db.own = RefCell::new(db.own_addresses()?);
        Ok(db)
    }

    /// The account's own addresses, from the `account` values (`E:…`, `p:…`) of rows it
    /// sent, as the iMessage plugin of anthropics/claude-plugins-official does
    /// (`external_plugins/imessage/server.ts`), and not from `chat.last_addressed_handle`,
    /// which SMS short codes and other people's numbers pollute. Once per open (a scan of
    /// `message`); rows read later add to it.
    fn own_addresses(&self) -> Result<BTreeSet<String>, Error> {
        use names::*;
        let sql = format!(
            "SELECT DISTINCT {ACCOUNT} FROM {MESSAGE} WHERE {IS_FROM_ME} = 1 AND {ACCOUNT} IS NOT \
             NULL AND {ACCOUNT} != '' LIMIT 50"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, Option<String>>(0))
            .map_err(|e| self.error(e))?;
        let mut own = BTreeSet::new();
        for account in rows.flatten().flatten() {
            own.extend(account_address(&account));
        }
        Ok(own)
    }

    /// The account's own addresses known so far, in normal form.
    pub fn own(&self) -> BTreeSet<String> {
        self.own.borrow().clone()
    }

    /// The handles of a chat's participants (`chat_handle_join`), for the settings window.
    pub fn members(&self, chat_guid: &str) -> Result<Vec<String>, Error> {
        use names::*;
        let sql = format!(
            "SELECT h.{HANDLE_ADDRESS} FROM {CHAT} AS c \
             JOIN {CHAT_HANDLE_JOIN} AS j ON j.{JOIN_CHAT_ID} = c.{ROWID} \
             JOIN {HANDLE} AS h ON h.{ROWID} = j.{JOIN_HANDLE_ID} \
             WHERE c.{GUID} = ?1 ORDER BY h.{HANDLE_ADDRESS}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.error(e))?;
        let rows = stmt
            .query_map([chat_guid], |row| row.get::<_, String>(0))
            .map_err(|e| self.error(e))?;
        Ok(rows.flatten().collect())
    }

    /// The path this database was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The newest message row, if there is any.
    pub fn newest(&self) -> Result<Option<Position>, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&self.newest_sql)
            .map_err(|e| self.error(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.error(e))?;
        let Some(row) = rows.next().map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        let rowid = integer(row, 0).unwrap_or(0);
        let date = apple_time(integer(row, 1).unwrap_or(0));
        Ok(Some(Position { rowid, date }))
    }

    /// Reads the rows above `after`, in ROWID order, at most [`BATCH_LIMIT`] of them.
    ///
    /// Rows sent by this account, reactions, rows without a sender and rows without words are
    /// skipped. A row whose chat join is not committed yet ends the batch before it if it is
    /// dated within 60 s of `now` (it is read again next time), and is skipped as malformed if
    /// it is older.
    pub fn read_after(&self, after: i64, now: DateTime<Utc>) -> Result<Batch, Error> {
        let mut stmt = self
            .conn
            .prepare_cached(&self.read_sql)
            .map_err(|e| self.error(e))?;
        // One row more than the limit tells whether more are waiting.
        let limit = i64::try_from(BATCH_LIMIT + 1).unwrap_or(i64::MAX);
        let mut rows = stmt.query((after, limit)).map_err(|e| self.error(e))?;
        let mut batch = Batch {
            next_after: after,
            ..Batch::default()
        };
        let mut dealt = 0;
        while let Some(row) = rows.next().map_err(|e| self.error(e))? {
            if dealt == BATCH_LIMIT {
                batch.more = true;
                break;
            }
            let Some(rowid) = integer(row, col::ROWID) else {
                // ROWID is always an integer; nothing to skip past without one.
                continue;
            };
            if integer(row, col::IS_FROM_ME).unwrap_or(0) != 0
                && let Some(account) = text(row, col::ACCOUNT)
            {
                self.own.borrow_mut().extend(account_address(account));
            }
            match classify_row(row, rowid, now, &self.own.borrow()) {
                Verdict::Deliver(mut message) => {
                    if integer(row, col::HAS_ATTACHMENTS).unwrap_or(0) != 0 {
                        let found = self.attachments(rowid)?;
                        if !found.is_empty() {
                            message.extra.get_or_insert_default().attachments = found;
                        }
                    }
                    if message.text.is_empty() && message.extra.is_none() {
                        debug!(rowid, "skipping chat.db row: no text and no attachments");
                        batch.skipped += 1;
                    } else {
                        batch.messages.push(message);
                    }
                }
                Verdict::Skip(reason) => {
                    debug!(rowid, reason, "skipping chat.db row");
                    batch.skipped += 1;
                }
                Verdict::Malformed(reason) => {
                    warn!(rowid, reason, "skipping malformed chat.db row");
                    batch.skipped += 1;
                }
                Verdict::Wait => {
                    debug!(
                        rowid,
                        "chat.db row has no chat join yet (or no attachment rows yet); reading it next time"
                    );
                    batch.next_after = rowid - 1;
                    return Ok(batch);
                }
            }
            batch.next_after = rowid;
            dealt += 1;
        }
        Ok(batch)
    }

    fn error(&self, source: rusqlite::Error) -> Error {
        classify(&self.path, source)
    }

    /// The visible attachments of message `rowid` (see [`crate::attachments::rows`]).
    fn attachments(&self, rowid: i64) -> Result<Vec<crate::attachments::Attachment>, Error> {
        let home = dirs::home_dir();
        crate::attachments::rows::read(&self.conn, rowid, home.as_deref())
            .map_err(|e| self.error(e))
    }
}

/// What to do with one row.
enum Verdict {
    Deliver(IncomingMessage),
    Skip(&'static str),
    Malformed(&'static str),
    Wait,
}

/// Column positions in [`read_after_sql`].
mod col {
    pub const ROWID: usize = 0;
    pub const GUID: usize = 1;
    pub const TEXT: usize = 2;
    pub const ATTRIBUTED_BODY: usize = 3;
    pub const IS_FROM_ME: usize = 4;
    pub const ASSOCIATED_MESSAGE_TYPE: usize = 5;
    pub const DATE: usize = 6;
    pub const SENDER: usize = 7;
    pub const CHAT_GUID: usize = 8;
    pub const CHAT_IDENTIFIER: usize = 9;
    pub const CHAT_STYLE: usize = 10;
    pub const SERVICE: usize = 11;
    pub const ACCOUNT: usize = 12;
    pub const DESTINATION_CALLER_ID: usize = 13;
    pub const CHAT_NAME: usize = 14;
    pub const HAS_ATTACHMENTS: usize = 15;
    pub const IS_AUDIO_MESSAGE: usize = 16;
    pub const PAYLOAD_DATA: usize = 17;
}

/// The batch query: message columns by ROWID range (the primary key), the sender through
/// `handle`'s primary key, and the message's chat (the lowest `chat_id` if it has several)
/// through the `chat_message_join.message_id` index and `chat`'s primary key.
fn read_after_sql() -> String {
    use names::*;
    format!(
        "SELECT m.{ROWID}, m.{GUID}, m.{TEXT}, m.{ATTRIBUTED_BODY}, m.{IS_FROM_ME}, \
         m.{ASSOCIATED_MESSAGE_TYPE}, m.{DATE}, h.{HANDLE_ADDRESS}, c.{GUID}, \
         c.{CHAT_IDENTIFIER}, c.{STYLE}, m.{SERVICE}, m.{ACCOUNT}, m.{DESTINATION_CALLER_ID}, \
         c.{DISPLAY_NAME}, m.{CACHE_HAS_ATTACHMENTS}, m.{IS_AUDIO_MESSAGE}, \
         m.{PAYLOAD_DATA} \
         FROM {MESSAGE} AS m \
         LEFT JOIN {HANDLE} AS h ON h.{ROWID} = m.{HANDLE_ID} \
         LEFT JOIN {CHAT} AS c ON c.{ROWID} = (\
           SELECT MIN(j.{JOIN_CHAT_ID}) FROM {CHAT_MESSAGE_JOIN} AS j \
           WHERE j.{JOIN_MESSAGE_ID} = m.{ROWID}) \
         WHERE m.{ROWID} > ?1 ORDER BY m.{ROWID} LIMIT ?2"
    )
}

/// The newest message row.
fn newest_sql() -> String {
    use names::*;
    format!("SELECT {ROWID}, {DATE} FROM {MESSAGE} ORDER BY {ROWID} DESC LIMIT 1")
}

fn classify_row(row: &Row<'_>, rowid: i64, now: DateTime<Utc>, own: &BTreeSet<String>) -> Verdict {
    let is_group = integer(row, col::CHAT_STYLE) == Some(STYLE_GROUP);
    let identifier = text(row, col::CHAT_IDENTIFIER).unwrap_or_default();
    let self_chat = !is_group && is_self_chat(row, identifier, own);
    let from_me = integer(row, col::IS_FROM_ME).unwrap_or(0) != 0;
    if from_me && !self_chat {
        return Verdict::Skip("sent by this account");
    }
    if integer(row, col::ASSOCIATED_MESSAGE_TYPE).unwrap_or(0) != 0 {
        return Verdict::Skip("tapback or reaction");
    }
    // In a chat with yourself the sent row's author is the chat's own address.
    let sender = if from_me {
        Some(identifier).filter(|i| !i.is_empty())
    } else {
        text(row, col::SENDER)
    };
    let Some(sender) = sender else {
        return Verdict::Skip("no sender handle");
    };
    let date = apple_time(integer(row, col::DATE).unwrap_or(0));
    let body = match body_of(row, date, now) {
        Ok(body) => body,
        Err(NoBody::NotYet) => return Verdict::Wait,
        Err(NoBody::NoText) => return Verdict::Skip("no text"),
    };
    let Some(chat_guid) = text(row, col::CHAT_GUID) else {
        if (now - date).abs() <= JOIN_GRACE {
            return Verdict::Wait;
        }
        return Verdict::Malformed("no chat for this message");
    };
    let Some(guid) = text(row, col::GUID) else {
        return Verdict::Malformed("no message guid");
    };
    let chat = Chat {
        guid: chat_guid.to_owned(),
        identifier: identifier.to_owned(),
        is_group,
    };
    let origin = Origin {
        service: Service::parse(text(row, col::SERVICE)),
        from_me,
        self_chat,
        chat_name: text(row, col::CHAT_NAME)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
    };
    Verdict::Deliver(IncomingMessage {
        rowid,
        guid: guid.to_owned(),
        chat,
        sender: sender.to_owned(),
        text: body,
        date,
        origin,
        extra: crate::attachments::Extras::of_row(
            integer(row, col::IS_AUDIO_MESSAGE).unwrap_or(0) != 0,
            bytes(row, col::ATTRIBUTED_BODY),
            bytes(row, col::PAYLOAD_DATA),
        ),
    })
}

/// A chat with yourself: a direct chat whose other party is one of the account's own
/// addresses (`own`), or a row received from the very address it was sent to.
fn is_self_chat(row: &Row<'_>, identifier: &str, own: &BTreeSet<String>) -> bool {
    let is_own = |handle: &str| normal(handle).is_some_and(|h| own.contains(&h));
    is_own(identifier)
        || text(row, col::SENDER).is_some_and(|sender| {
            text(row, col::DESTINATION_CALLER_ID)
                .is_some_and(|to| normal(to).is_some() && normal(to) == normal(sender))
        })
}

/// Why a row has no words to deliver.
enum NoBody {
    /// Attachment placeholders whose attachment rows are not committed yet.
    NotYet,
    /// None at all.
    NoText,
}

/// The row's words (from `text`, else decoded from `attributedBody`), or why there are none.
fn body_of(row: &Row<'_>, date: DateTime<Utc>, now: DateTime<Utc>) -> Result<String, NoBody> {
    let raw_body = match text(row, col::TEXT) {
        Some(text) if !text.is_empty() => Some(text.to_owned()),
        _ => bytes(row, col::ATTRIBUTED_BODY).and_then(typedstream::decode_text),
    };
    // A body of attachment placeholders only is delivered empty when the row has
    // attachments; `read_after` skips it if none are found.
    let has_attachments = integer(row, col::HAS_ATTACHMENTS).unwrap_or(0) != 0;
    match raw_body.as_deref().and_then(clean_body) {
        Some(body) => Ok(body),
        None if has_attachments => Ok(String::new()),
        // Placeholders whose attachment rows are not committed yet: read it again, as
        // for a missing chat join.
        None if raw_body
            .as_deref()
            .is_some_and(|b| b.contains(OBJECT_REPLACEMENT))
            && (now - date).abs() <= JOIN_GRACE =>
        {
            Err(NoBody::NotYet)
        }
        None => Err(NoBody::NoText),
    }
}

/// A handle in normal form (see [`Handle`]), if it is one.
fn normal(handle: &str) -> Option<String> {
    Handle::parse(handle).ok().map(|h| h.as_str().to_owned())
}

/// The address of a `message.account` value: `E:me@icloud.com` → `me@icloud.com`,
/// `p:+15551234567` → `+15551234567`, in normal form.
fn account_address(account: &str) -> Option<String> {
    let bare = match account.split_once(':') {
        Some((kind, rest)) if kind.len() == 1 && kind.chars().all(|c| c.is_ascii_alphabetic()) => {
            rest
        }
        _ => account,
    };
    normal(bare)
}

/// Removes attachment placeholders; `None` when nothing but whitespace is left. Everything
/// else is kept byte for byte.
fn clean_body(raw: &str) -> Option<String> {
    let body: String = raw.chars().filter(|&c| c != OBJECT_REPLACEMENT).collect();
    if body.trim().is_empty() {
        None
    } else {
        Some(body)
    }
}

/// An integer column; NULL, text and blobs give `None`, a real is truncated.
fn integer(row: &Row<'_>, idx: usize) -> Option<i64> {
    match row.get_ref(idx).ok()? {
        ValueRef::Integer(i) => Some(i),
        // Saturating conversion: a float column value is never trusted further than this.
        ValueRef::Real(f) => Some(f as i64),
        _ => None,
    }
}

/// A text column that is valid UTF-8; anything else gives `None`.
fn text<'r>(row: &'r Row<'_>, idx: usize) -> Option<&'r str> {
    match row.get_ref(idx).ok()? {
        ValueRef::Text(bytes) => std::str::from_utf8(bytes).ok(),
        _ => None,
    }
}

/// A blob (or text) column's bytes.
fn bytes<'r>(row: &'r Row<'_>, idx: usize) -> Option<&'r [u8]> {
    match row.get_ref(idx).ok()? {
        ValueRef::Blob(bytes) | ValueRef::Text(bytes) => Some(bytes),
        _ => None,
    }
}

/// Maps a SQLite failure on `path` to an [`Error`], asking the file system why when SQLite
/// only says it could not open or read the file (macOS denies reads without Full Disk Access
/// with `EPERM`, which SQLite reports as "unable to open database file").
fn classify(path: &Path, source: rusqlite::Error) -> Error {
    let probe = File::open(path).err().map(|e| e.kind());
    map_error(path, probe, source)
}

/// [`classify`] with the file system's answer given: `probe` is the error kind of opening the
/// file for reading, `None` when that worked.
fn map_error(path: &Path, probe: Option<io::ErrorKind>, source: rusqlite::Error) -> Error {
    let open_failure = matches!(
        source.sqlite_error_code(),
        Some(
            ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::AuthorizationForStatementDenied
                | ErrorCode::SystemIoFailure
        )
    );
    match probe {
        Some(io::ErrorKind::NotFound) if open_failure => Error::NotFound { path: path.into() },
        Some(io::ErrorKind::PermissionDenied) => Error::PermissionDenied { path: path.into() },
        _ if source.sqlite_error_code() == Some(ErrorCode::PermissionDenied) => {
            Error::PermissionDenied { path: path.into() }
        }
        _ => Error::Sqlite {
            path: path.into(),
            source,
        },
    }
}

/// The fixture builder shared with the end-to-end tests.
#[cfg(test)]
use util::chatdb as fixture;

#[cfg(test)]
mod tests {
    use super::fixture::{FixtureDb, Msg, apple_ns, blob, expected};
    use super::*;

    const DM: &str = "iMessage;-;+15551234567";
    const ALICE: &str = "+15551234567";

    struct Env {
        _dir: tempfile::TempDir,
        fixture: FixtureDb,
        db: ChatDb,
    }

    /// A fixture chat.db (kept open for writing, as Messages keeps it) and a reader on it.
    fn env() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let fixture = FixtureDb::create(&path);
        let db = ChatDb::open(&path).unwrap();
        Env {
            _dir: dir,
            fixture,
            db,
        }
    }

    fn read_all(db: &ChatDb, after: i64) -> Batch {
        db.read_after(after, Utc::now()).unwrap()
    }

    #[test]
    fn text_rows_are_delivered_byte_exact_with_chat_sender_and_date() {
        let env = env();
        let cases = [
            "plain text",
            "🧠 remember the milk 👍🏽",
            "مرحبا بالعالم",
            "שלום",
            "𝖍𝖊𝖑𝖑𝖔 astral",
            "line one\r\nline two\n",
            "para\u{2028}graph\u{2029}",
            "  leading and trailing spaces  ",
            "x",
        ];
        let date = apple_ns(Utc::now()) / 1000 * 1000;
        let mut inserted = Vec::new();
        for text in cases {
            inserted.push(
                env.fixture
                    .insert(&Msg::new(DM, ALICE).text(text).date(date)),
            );
        }
        let batch = read_all(&env.db, 0);
        assert_eq!(batch.skipped, 0);
        assert!(!batch.more);
        assert_eq!(batch.next_after, inserted.last().unwrap().rowid);
        let texts: Vec<&str> = batch.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, cases);
        let first = &batch.messages[0];
        assert_eq!(first.rowid, inserted[0].rowid);
        assert_eq!(first.guid, inserted[0].guid);
        assert_eq!(first.sender, ALICE);
        assert_eq!(
            first.chat,
            Chat {
                guid: DM.into(),
                identifier: ALICE.into(),
                is_group: false
            }
        );
        assert_eq!(first.date, apple_time(date));
        assert_eq!(apple_ns(first.date), date);
    }

    #[test]
    fn attributed_body_only_rows_are_decoded() {
        let env = env();
        let cases = [
            ("LongMessage", expected("LongMessage")),
            ("WeirdText", expected("WeirdText")),
            ("Arabic", expected("Arabic")),
            ("EmojiBoldUnderline", expected("EmojiBoldUnderline")),
            ("Mention", "Test Dad ".to_string()),
            ("URL", expected("URL")),
            ("AttributedBodyTextOnly", "Noter test".to_string()),
            // Attachment placeholders are removed, the rest kept as it is.
            ("MultiPart", "test 1test 2 test 3".to_string()),
        ];
        for (name, _) in &cases {
            env.fixture.insert(&Msg::new(DM, ALICE).body(blob(name)));
        }
        let batch = read_all(&env.db, 0);
        assert_eq!(batch.skipped, 0);
        let got: Vec<(&str, &str)> = cases
            .iter()
            .zip(&batch.messages)
            .map(|((name, _), m)| (*name, m.text.as_str()))
            .collect();
        let want: Vec<(&str, &str)> = cases.iter().map(|(n, t)| (*n, t.as_str())).collect();
        assert_eq!(got, want);
        assert_eq!(batch.messages.len(), cases.len());
        assert_eq!(batch.messages[0].text.len(), 2359);
    }

    #[test]
    fn text_column_wins_over_attributed_body_and_empty_text_falls_back() {
        let env = env();
        let both = Msg::new(DM, ALICE).text("from text").body(blob("URL"));
        env.fixture.insert(&both);
        env.fixture.insert(
            &Msg::new(DM, ALICE)
                .text("")
                .body(blob("AttributedBodyTextOnly2")),
        );
        let batch = read_all(&env.db, 0);
        let texts: Vec<&str> = batch.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["from text", "Test 3"]);
    }

    /// Issue 10: a fresh row of placeholders only is read again until its attachment rows
    /// are committed, then delivered with them.
    #[test]
    fn a_placeholder_row_waits_for_its_attachment_rows() {
        let env = env();
        let f = &env.fixture;
        let row = f.insert(&Msg::new(DM, ALICE).text("\u{FFFC}")).rowid;
        let batch = read_all(&env.db, 0);
        assert!(batch.messages.is_empty());
        assert_eq!(batch.next_after, row - 1, "read again next time");
        let home = tempfile::tempdir().unwrap();
        let file = super::fixture::FileRow::new("IMG_1.JPG", "image/jpeg", 3);
        f.attach(row, &file, home.path());
        let batch = read_all(&env.db, 0);
        assert_eq!(batch.messages.len(), 1);
        let extra = batch.messages[0].extra.as_deref().expect("attachments");
        assert_eq!(
            extra.attachments[0].transfer_name.as_deref(),
            Some("IMG_1.JPG")
        );
        assert_eq!(batch.messages[0].text, "");
    }

    #[test]
    fn rows_without_an_incoming_text_are_skipped_and_passed() {
        let env = env();
        let f = &env.fixture;
        let old = apple_ns(Utc::now() - TimeDelta::minutes(5));
        let skipped = [
            Msg {
                is_from_me: true,
                ..Msg::new(DM, ALICE).text("sent by me")
            },
            Msg {
                associated_message_type: 2000,
                ..Msg::new(DM, ALICE).text("Loved “hi”")
            },
            Msg {
                associated_message_type: 3001,
                ..Msg::new(DM, ALICE).text("removed")
            },
            Msg::new(DM, ALICE).text(""),
            Msg::new(DM, ALICE),
            // Placeholders only, and older than the grace a row's attachment rows get.
            Msg::new(DM, ALICE).text("\u{FFFC}").date(old),
            Msg::new(DM, ALICE)
                .text(" \u{FFFC}\r\n\u{FFFC}\u{2028} ")
                .date(old),
            Msg::new(DM, ALICE).body(blob("Blank")),
            Msg::new(DM, ALICE).body(b"not a typedstream".to_vec()),
            Msg::new(DM, ALICE).body(blob("LongMessage")[..200].to_vec()),
            Msg {
                sender: None,
                ..Msg::new(DM, ALICE).text("no handle")
            },
        ];
        for m in &skipped {
            f.insert(m);
        }
        let kept = f.incoming(DM, ALICE, "the only real one");
        let batch = read_all(&env.db, 0);
        assert_eq!(batch.skipped, skipped.len());
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.messages[0].rowid, kept.rowid);
        assert_eq!(batch.messages[0].text, "the only real one");
        assert_eq!(batch.next_after, kept.rowid);

        // A cursor past everything reads nothing.
        let again = read_all(&env.db, batch.next_after);
        assert_eq!(
            again,
            Batch {
                next_after: kept.rowid,
                ..Batch::default()
            }
        );
    }

    #[test]
    fn skipped_rows_at_the_end_still_advance_the_cursor() {
        let env = env();
        env.fixture.incoming(DM, ALICE, "hello");
        let last = env.fixture.insert(&Msg {
            is_from_me: true,
            ..Msg::new(DM, ALICE).text("hi")
        });
        let batch = read_all(&env.db, 0);
        assert_eq!((batch.messages.len(), batch.skipped), (1, 1));
        assert_eq!(batch.next_after, last.rowid);
    }

    #[test]
    fn invalid_utf8_in_text_falls_back_to_the_attributed_body() {
        let env = env();
        let row = env
            .fixture
            .insert(&Msg::new(DM, ALICE).body(blob("Arabic")));
        env.fixture
            .conn()
            .execute(
                "UPDATE message SET text = CAST(x'ff41' AS TEXT) WHERE ROWID = ?1",
                [row.rowid],
            )
            .unwrap();
        let batch = read_all(&env.db, 0);
        assert_eq!(batch.messages[0].text, expected("Arabic"));
    }

    #[test]
    fn a_message_joined_to_two_chats_is_delivered_once() {
        let env = env();
        let row = env.fixture.incoming(DM, ALICE, "once");
        env.fixture.chat("iMessage;+;chat99", "chat99", true);
        env.fixture.join(row.rowid, "iMessage;+;chat99");
        let batch = read_all(&env.db, 0);
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.messages[0].chat.guid, DM, "the chat joined first");
    }

    #[test]
    fn reads_see_committed_rows_while_a_write_transaction_is_open() {
        let env = env();
        let committed = env.fixture.incoming(DM, ALICE, "committed");
        env.fixture.conn().execute_batch("BEGIN IMMEDIATE").unwrap();
        env.fixture.incoming(DM, ALICE, "not yet");
        let batch = read_all(&env.db, 0);
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.next_after, committed.rowid);
        env.fixture.conn().execute_batch("COMMIT").unwrap();
        assert_eq!(
            read_all(&env.db, committed.rowid).messages[0].text,
            "not yet"
        );
    }

    #[test]
    fn a_closed_wal_database_opens_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let fixture = FixtureDb::create(&path);
        fixture.incoming(DM, ALICE, "written before Messages quit");
        drop(fixture);
        let db = ChatDb::open(&path).unwrap();
        assert_eq!(
            read_all(&db, 0).messages[0].text,
            "written before Messages quit"
        );
    }

    #[test]
    fn group_and_direct_chats_are_told_apart() {
        let env = env();
        let group = "iMessage;+;chat123456789";
        env.fixture.chat(group, "chat123456789", true);
        env.fixture
            .incoming(group, "bob@example.com", "in the group");
        env.fixture.incoming(DM, ALICE, "direct");
        let batch = read_all(&env.db, 0);
        let chats: Vec<&Chat> = batch.messages.iter().map(|m| &m.chat).collect();
        assert_eq!(
            chats,
            [
                &Chat {
                    guid: group.into(),
                    identifier: "chat123456789".into(),
                    is_group: true
                },
                &Chat {
                    guid: DM.into(),
                    identifier: ALICE.into(),
                    is_group: false
                },
            ]
        );
        assert_eq!(batch.messages[0].sender, "bob@example.com");
    }

    #[test]
    fn recent_row_without_its_join_is_left_for_the_next_read_until_joined() {
        let env = env();
        let before = env.fixture.incoming(DM, ALICE, "first");
        let pending = env
            .fixture
            .insert(&Msg::new(DM, ALICE).text("second").without_join());
        env.fixture.incoming(DM, ALICE, "third");

        let batch = read_all(&env.db, 0);
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.messages[0].rowid, before.rowid);
        assert_eq!(batch.skipped, 0);
        assert_eq!(batch.next_after, pending.rowid - 1);
        assert!(!batch.more);

        // Still not joined: still not consumed.
        let again = read_all(&env.db, batch.next_after);
        assert!(again.messages.is_empty());
        assert_eq!(again.next_after, pending.rowid - 1);

        env.fixture.join(pending.rowid, DM);
        let joined = read_all(&env.db, again.next_after);
        let texts: Vec<&str> = joined.messages.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["second", "third"]);
        assert_eq!(joined.messages[0].guid, pending.guid);
        assert_eq!(joined.messages[0].chat.guid, DM);
    }

    #[test]
    fn old_row_without_a_join_is_skipped_and_does_not_stall_the_reader() {
        let env = env();
        let now = Utc::now();
        let old = apple_ns(now - TimeDelta::seconds(61));
        let orphan = env
            .fixture
            .insert(&Msg::new(DM, ALICE).text("orphan").date(old).without_join());
        let future = apple_ns(now + TimeDelta::days(365));
        env.fixture.insert(
            &Msg::new(DM, ALICE)
                .text("from the future")
                .date(future)
                .without_join(),
        );
        let after = env.fixture.incoming(DM, ALICE, "after");
        let batch = env.db.read_after(0, now).unwrap();
        assert_eq!(batch.skipped, 2);
        assert_eq!(batch.messages.len(), 1);
        assert_eq!(batch.messages[0].rowid, after.rowid);
        assert_eq!(batch.next_after, after.rowid);
        assert!(orphan.rowid < after.rowid);
    }

    #[test]
    fn join_grace_is_measured_against_the_given_now() {
        let env = env();
        let date = apple_ns(Utc::now());
        let row = env
            .fixture
            .insert(&Msg::new(DM, ALICE).text("x").date(date).without_join());
        let at = |secs| {
            env.db
                .read_after(0, apple_time(date) + TimeDelta::seconds(secs))
                .unwrap()
        };
        assert_eq!(at(59).next_after, row.rowid - 1, "waited at +59 s");
        assert_eq!(
            at(-59).next_after,
            row.rowid - 1,
            "waited at -59 s (clock skew)"
        );
        let late = at(61);
        assert_eq!(
            (late.next_after, late.skipped),
            (row.rowid, 1),
            "skipped at +61 s"
        );
    }

    #[test]
    fn seconds_epoch_dates_from_old_databases_are_converted() {
        let env = env();
        // 2015-06-01T12:00:00Z as seconds since 2001.
        let secs = 1_433_160_000 - 978_307_200;
        env.fixture
            .insert(&Msg::new(DM, ALICE).text("old db").date(secs));
        let batch = read_all(&env.db, 0);
        assert_eq!(
            batch.messages[0].date.to_rfc3339(),
            "2015-06-01T12:00:00+00:00"
        );
    }

    #[test]
    fn apple_time_converts_nanoseconds_and_seconds() {
        let cases: &[(i64, &str)] = &[
            (0, "2001-01-01T00:00:00+00:00"),
            (1, "2001-01-01T00:00:01+00:00"),
            (-1, "2000-12-31T23:59:59+00:00"),
            (700_000_000, "2023-03-08T20:26:40+00:00"),
            (
                700_000_000_123_456_789,
                "2023-03-08T20:26:40.123456789+00:00",
            ),
            (99_999_999_999, "5169-11-16T09:46:39+00:00"),
            (100_000_000_000, "2001-01-01T00:01:40+00:00"),
            (
                -700_000_000_000_000_001,
                "1978-10-27T03:33:19.999999999+00:00",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(apple_time(*raw).to_rfc3339(), *want, "{raw}");
        }
        // Extremes do not panic.
        let _ = apple_time(i64::MIN);
        let _ = apple_time(i64::MAX);
    }

    #[test]
    fn batches_hold_at_most_500_rows_and_say_when_more_wait() {
        let env = env();
        let conn = env.fixture.conn();
        conn.execute_batch("BEGIN").unwrap();
        let mut rows = Vec::new();
        for i in 0..1203 {
            // Every third row is skipped: limits count rows dealt with, not messages.
            let m = Msg {
                is_from_me: i % 3 == 0,
                ..Msg::new(DM, ALICE).text(&format!("n{i}"))
            };
            rows.push(env.fixture.insert(&m).rowid);
        }
        conn.execute_batch("COMMIT").unwrap();

        let mut cursor = 0;
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let batch = read_all(&env.db, cursor);
            sizes.push((batch.messages.len() + batch.skipped, batch.more));
            seen.extend(batch.messages.iter().map(|m| m.text.clone()));
            cursor = batch.next_after;
            if !batch.more {
                break;
            }
        }
        assert_eq!(sizes, [(500, true), (500, true), (203, false)]);
        assert_eq!(cursor, *rows.last().unwrap());
        let want: Vec<String> = (0..1203)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("n{i}"))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn exactly_500_rows_is_one_batch_without_more() {
        let env = env();
        env.fixture.conn().execute_batch("BEGIN").unwrap();
        for i in 0..500 {
            env.fixture.incoming(DM, ALICE, &format!("{i}"));
        }
        env.fixture.conn().execute_batch("COMMIT").unwrap();
        let batch = read_all(&env.db, 0);
        assert_eq!((batch.messages.len(), batch.more), (500, false));
    }

    #[test]
    fn newest_reports_the_highest_row() {
        let env = env();
        assert_eq!(env.db.newest().unwrap(), None);
        let date = apple_ns(Utc::now()) / 1000 * 1000;
        env.fixture.incoming(DM, ALICE, "one");
        let last = env.fixture.insert(&Msg {
            is_from_me: true,
            ..Msg::new(DM, ALICE).date(date)
        });
        let newest = env.db.newest().unwrap().unwrap();
        assert_eq!(
            newest,
            Position {
                rowid: last.rowid,
                date: apple_time(date)
            }
        );
    }

    #[test]
    fn the_reader_never_writes_the_database() {
        let env = env();
        env.fixture.incoming(DM, ALICE, "hello");
        let err = env
            .db
            .conn
            .execute("UPDATE message SET text = 'changed'", [])
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(ErrorCode::ReadOnly),
            "{err:?}"
        );
        assert_eq!(read_all(&env.db, 0).messages[0].text, "hello");
    }

    #[test]
    fn opening_a_missing_database_says_messages_is_not_set_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        let err = ChatDb::open(&path).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { path: p } if *p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("Messages is not set up"), "{err}");
        assert!(!path.exists(), "open must not create the database");
    }

    #[test]
    fn opening_a_file_that_is_not_a_database_is_a_sqlite_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = ChatDb::open(&path).unwrap_err();
        assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
    }

    #[test]
    fn opening_an_unreadable_database_asks_for_full_disk_access() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chat.db");
        drop(FixtureDb::create(&path));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&path).is_ok() {
            // Running as root: mode 000 does not deny reads. The mapping is tested directly
            // in `file_system_refusals_map_to_permission_denied`.
            return;
        }
        let err = ChatDb::open(&path).unwrap_err();
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    }

    #[test]
    fn file_system_refusals_map_to_permission_denied() {
        let path = Path::new("/Users/me/Library/Messages/chat.db");
        let cant_open = || {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some("unable to open database file".into()),
            )
        };
        // macOS without Full Disk Access: EPERM (or EACCES) from open(2).
        let err = map_error(path, Some(io::ErrorKind::PermissionDenied), cant_open());
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("System Settings › Privacy & Security › Full Disk Access"),
            "{message}"
        );
        assert!(
            message.contains("/Users/me/Library/Messages/chat.db"),
            "{message}"
        );

        let err = map_error(path, Some(io::ErrorKind::NotFound), cant_open());
        assert!(matches!(err, Error::NotFound { .. }), "{err:?}");

        let err = map_error(path, None, cant_open());
        assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");

        let perm = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_PERM),
            None,
        );
        assert!(matches!(
            map_error(path, None, perm),
            Error::PermissionDenied { .. }
        ));
    }

    #[test]
    fn the_batch_query_uses_primary_keys_and_the_join_index() {
        let env = env();
        let mut stmt = env
            .db
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", read_after_sql()))
            .unwrap();
        let plan: Vec<String> = stmt
            .query_map((0, 501), |r| r.get::<_, String>(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("SEARCH m USING INTEGER PRIMARY KEY (rowid>?)"),
            "{plan}"
        );
        assert!(
            plan.contains("chat_message_join_idx_message_id_only"),
            "{plan}"
        );
        assert!(
            !plan.contains("SCAN") && !plan.contains("TEMP B-TREE"),
            "{plan}"
        );
    }
}
