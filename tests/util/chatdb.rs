//! Fixture `chat.db`: a real Messages schema (`tests/data/chatdb-schema.sql`) in WAL mode,
//! written the way Messages.app writes it.
//!
//! Invariants: every write is its own autocommit statement, and a message row is committed
//! before its `chat_message_join` row (a reader can see the message without its chat, as it
//! can on a real Mac). Only `rusqlite`, `chrono` and `std` are used; the bridge's unit tests,
//! the end-to-end binary and the app's tests all use this one copy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

/// Seconds from the Unix epoch to Apple's (2001-01-01T00:00:00Z).
const APPLE_EPOCH_UNIX_SECS: i64 = 978_307_200;

/// Makes message guids unique within the process.
static GUID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The bridge's test data directory (`tests/data`), found from the bridge's manifest.
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
}

/// The raw bytes of the reference `attributedBody` blob `name` (e.g. `"LongMessage"`).
pub fn blob(name: &str) -> Vec<u8> {
    let path = data_dir()
        .join("attributed-body")
        .join(format!("{name}.typedstream"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The exact text the reference blob `name` decodes to.
pub fn expected(name: &str) -> String {
    let path = data_dir()
        .join("attributed-body")
        .join(format!("{name}.expected.txt"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `t` as Messages stores it: nanoseconds since 2001-01-01 UTC.
pub fn apple_ns(t: DateTime<Utc>) -> i64 {
    let unix_ns = t
        .timestamp_nanos_opt()
        .expect("date within i64 nanoseconds");
    unix_ns - APPLE_EPOCH_UNIX_SECS * 1_000_000_000
}

/// Now, as Messages stores it.
pub fn apple_now() -> i64 {
    apple_ns(Utc::now())
}

/// A fresh message guid in Messages' style (upper-case hex UUID), unique within the process.
pub fn fresh_guid() -> String {
    let n = GUID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = Utc::now().timestamp_subsec_nanos();
    format!(
        "{:08X}-{:04X}-4{:03X}-8{:03X}-{:012X}",
        nanos,
        std::process::id() & 0xFFFF,
        (n >> 48) & 0xFFF,
        (n >> 36) & 0xFFF,
        n & 0xFFFF_FFFF_FFFF
    )
}

/// What [`FixtureDb::insert`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    /// `message.ROWID`.
    pub rowid: i64,
    /// `message.guid`.
    pub guid: String,
}

/// One message row to write. Start from [`Msg::new`] (or `Default`) and adjust fields.
#[derive(Clone, Debug)]
pub struct Msg {
    /// `message.guid`; `None` makes a fresh one.
    pub guid: Option<String>,
    /// The chat it belongs to; a missing chat is created as a direct chat with the sender.
    pub chat_guid: String,
    /// `handle.id` of the sender; `None` leaves `handle_id = 0` (no handle).
    pub sender: Option<String>,
    /// `message.text`.
    pub text: Option<String>,
    /// `message.attributedBody`.
    pub attributed_body: Option<Vec<u8>>,
    /// `message.is_from_me`.
    pub is_from_me: bool,
    /// `message.associated_message_type` (2000–2005 are tapbacks).
    pub associated_message_type: i64,
    /// `message.date`, raw (Apple ns, or seconds on old databases); `None` means now.
    pub date: Option<i64>,
    /// Whether to write the `chat_message_join` row after the message row.
    pub join: bool,
    /// `message.service`: `iMessage` (the default), `SMS`, `RCS`.
    pub service: String,
    /// `message.account`: the account's own address as Messages writes it (`E:…`, `p:…`).
    pub account: String,
    /// `message.destination_caller_id`: the account's address a received row came to.
    pub destination: Option<String>,
}

impl Default for Msg {
    fn default() -> Msg {
        Msg {
            guid: None,
            chat_guid: "iMessage;-;+15550001111".to_string(),
            sender: Some("+15550001111".to_string()),
            text: None,
            attributed_body: None,
            is_from_me: false,
            associated_message_type: 0,
            date: None,
            join: true,
            service: "iMessage".to_string(),
            account: "E:fixture@example.com".to_string(),
            destination: None,
        }
    }
}

impl Msg {
    /// An incoming message from `sender` in `chat_guid`, joined to its chat, dated now.
    pub fn new(chat_guid: &str, sender: &str) -> Msg {
        Msg {
            chat_guid: chat_guid.to_string(),
            sender: Some(sender.to_string()),
            ..Msg::default()
        }
    }

    /// Sets `text`.
    pub fn text(mut self, text: &str) -> Msg {
        self.text = Some(text.to_string());
        self
    }

    /// Sets `attributedBody` (and leaves `text` as it is, NULL by default).
    pub fn body(mut self, blob: Vec<u8>) -> Msg {
        self.attributed_body = Some(blob);
        self
    }

    /// Sets the raw `date`.
    pub fn date(mut self, raw: i64) -> Msg {
        self.date = Some(raw);
        self
    }

    /// Sets `message.service` (`SMS`, `RCS`).
    pub fn service(mut self, service: &str) -> Msg {
        self.service = service.to_string();
        self
    }

    /// Marks the row as sent by the account (`is_from_me = 1`) from `account` (`E:…`).
    pub fn sent_by(mut self, account: &str) -> Msg {
        self.is_from_me = true;
        self.account = account.to_string();
        self
    }

    /// Writes no `chat_message_join` row (call [`FixtureDb::join`] later).
    pub fn without_join(mut self) -> Msg {
        self.join = false;
        self
    }
}

/// A writable fixture `chat.db`.
pub struct FixtureDb {
    path: PathBuf,
    conn: Connection,
}

impl FixtureDb {
    /// Creates a new database at `path` with the real schema, in WAL mode.
    pub fn create(path: &Path) -> FixtureDb {
        let schema_path = data_dir().join("chatdb-schema.sql");
        let schema = std::fs::read_to_string(&schema_path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", schema_path.display()));
        let conn = Connection::open(path).expect("create fixture chat.db");
        // Another writer (the fake Messages writing replies back) may hold the lock briefly.
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("set a busy timeout");
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .expect("switch to WAL");
        assert_eq!(mode, "wal");
        conn.execute_batch(&schema).expect("load chat.db schema");
        FixtureDb {
            path: path.to_path_buf(),
            conn,
        }
    }

    /// Opens an existing fixture database for writing (e.g. one renamed over the original).
    pub fn open(path: &Path) -> FixtureDb {
        let conn = Connection::open(path).expect("open fixture chat.db");
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .expect("set a busy timeout");
        FixtureDb {
            path: path.to_path_buf(),
            conn,
        }
    }

    /// Where the database is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The writer connection, for anything the helpers do not cover.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The `handle.ROWID` of `id` on iMessage, inserting it if needed.
    pub fn handle(&self, id: &str) -> i64 {
        self.handle_on(id, "iMessage")
    }

    /// The `handle.ROWID` of `id` on `service`, inserting it if needed.
    pub fn handle_on(&self, id: &str, service: &str) -> i64 {
        let found = self
            .conn
            .query_row(
                "SELECT ROWID FROM handle WHERE id = ?1 AND service = ?2",
                [id, service],
                |r| r.get(0),
            )
            .optional()
            .expect("look up handle");
        if let Some(rowid) = found {
            return rowid;
        }
        self.conn
            .execute(
                "INSERT INTO handle (id, country, service, uncanonicalized_id, person_centric_id) \
                 VALUES (?1, 'us', ?2, NULL, NULL)",
                [id, service],
            )
            .expect("insert handle");
        self.conn.last_insert_rowid()
    }

    /// The `chat.ROWID` of `guid`, inserting it if needed (style 43 for a group, 45 for a
    /// direct chat). A direct chat's identifier is also added as its participant.
    pub fn chat(&self, guid: &str, identifier: &str, is_group: bool) -> i64 {
        if let Some(rowid) = self.chat_rowid(guid) {
            return rowid;
        }
        let style = if is_group { 43 } else { 45 };
        self.conn
            .execute(
                "INSERT INTO chat (guid, style, state, account_id, chat_identifier, service_name, \
                 room_name) VALUES (?1, ?2, 3, 'fixture-account', ?3, 'iMessage', ?4)",
                params![guid, style, identifier, is_group.then_some(identifier)],
            )
            .expect("insert chat");
        let chat = self.conn.last_insert_rowid();
        if !is_group {
            self.add_participant(chat, identifier);
        }
        chat
    }

    /// A group chat named `name` with these members (style 43, `display_name` set).
    pub fn group(&self, guid: &str, name: &str, members: &[&str]) -> i64 {
        let chat = self.chat(guid, guid.rsplit(';').next().unwrap_or(guid), true);
        self.conn
            .execute(
                "UPDATE chat SET display_name = ?1 WHERE ROWID = ?2",
                params![name, chat],
            )
            .expect("name the group");
        for member in members {
            self.add_participant(chat, member);
        }
        chat
    }

    /// Adds `handle_id` to a chat's participants (`chat_handle_join`).
    pub fn add_participant(&self, chat: i64, handle_id: &str) {
        let handle = self.handle(handle_id);
        self.conn
            .execute(
                "INSERT OR IGNORE INTO chat_handle_join (chat_id, handle_id) VALUES (?1, ?2)",
                params![chat, handle],
            )
            .expect("insert chat_handle_join");
    }

    /// An incoming text from `sender` in `chat_guid`, dated now, joined to its chat.
    pub fn incoming(&self, chat_guid: &str, sender: &str, text: &str) -> Inserted {
        self.insert(&Msg::new(chat_guid, sender).text(text))
    }

    /// Writes `m` as Messages does: the message row, then (if `m.join`) the join row, each in
    /// its own statement.
    pub fn insert(&self, m: &Msg) -> Inserted {
        let chat = match self.chat_rowid(&m.chat_guid) {
            Some(chat) => chat,
            None => {
                let identifier = m.sender.as_deref().unwrap_or("+15550000000");
                self.chat(&m.chat_guid, identifier, m.chat_guid.contains(";+;"))
            }
        };
        let handle = match &m.sender {
            Some(id) => {
                let handle = self.handle_on(id, &m.service);
                self.add_participant(chat, id);
                handle
            }
            None => 0,
        };
        let guid = m.guid.clone().unwrap_or_else(fresh_guid);
        let date = m.date.unwrap_or_else(apple_now);
        self.conn
            .execute(
                "INSERT INTO message (guid, text, handle_id, attributedBody, service, account, \
                 date, date_read, date_delivered, is_delivered, is_finished, is_from_me, \
                 is_read, associated_message_type, associated_message_guid, \
                 destination_caller_id) \
                 VALUES (?1, ?2, ?3, ?4, ?9, ?10, ?5, 0, 0, 1, 1, ?6, 0, ?7, ?8, ?11)",
                params![
                    guid,
                    m.text,
                    handle,
                    m.attributed_body,
                    date,
                    m.is_from_me,
                    m.associated_message_type,
                    (m.associated_message_type != 0).then(|| format!("p:0/{}", fresh_guid())),
                    m.service,
                    m.account,
                    m.destination,
                ],
            )
            .expect("insert message");
        let rowid = self.conn.last_insert_rowid();
        if m.join {
            self.join_chat(rowid, chat);
        }
        Inserted { rowid, guid }
    }

    /// Writes the `chat_message_join` row for message `rowid` (the second statement Messages
    /// makes for a new message).
    pub fn join(&self, rowid: i64, chat_guid: &str) {
        let chat = self
            .chat_rowid(chat_guid)
            .unwrap_or_else(|| panic!("no chat {chat_guid} in the fixture"));
        self.join_chat(rowid, chat);
    }

    fn join_chat(&self, rowid: i64, chat: i64) {
        self.conn
            .execute(
                "INSERT INTO chat_message_join (chat_id, message_id, message_date) \
                 SELECT ?1, ROWID, date FROM message WHERE ROWID = ?2",
                params![chat, rowid],
            )
            .expect("insert chat_message_join");
    }

    /// The `chat_identifier` of the chat `guid`, if it exists.
    pub fn chat_identifier(&self, guid: &str) -> Option<String> {
        self.conn
            .query_row(
                "SELECT chat_identifier FROM chat WHERE guid = ?1",
                [guid],
                |r| r.get(0),
            )
            .optional()
            .expect("look up chat")
    }

    fn chat_rowid(&self, guid: &str) -> Option<i64> {
        self.conn
            .query_row("SELECT ROWID FROM chat WHERE guid = ?1", [guid], |r| {
                r.get(0)
            })
            .optional()
            .expect("look up chat")
    }
}

/// `text` as Messages stores it in `attributedBody`: the real `AttributedBodyTextOnly` blob
/// with its string and its one attribute run replaced. Lengths as typedstream writes them:
/// one byte below 0x80, else 0x81 and a `u16`, else 0x82 and a `u32` (little-endian); the
/// string's in UTF-8 bytes, the run's in UTF-16 units.
pub fn typedstream(text: &str) -> Vec<u8> {
    let model = blob("AttributedBodyTextOnly");
    let old = b"Noter test";
    let start = model
        .windows(old.len())
        .position(|w| w == old)
        .expect("the model blob holds its text");
    // `… 2B <len> <text> 86 84 02 69 49 01 <run> 92 …`
    let head = &model[..start - 1];
    let tail = &model[start + old.len()..];
    let run = 6; // 86 84 02 69 49 01, then the run's length (one byte in the model)
    let mut out = head.to_vec();
    out.extend(length(text.len()));
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&tail[..run]);
    out.extend(length(text.encode_utf16().count()));
    out.extend_from_slice(&tail[run + 1..]);
    out
}

fn length(n: usize) -> Vec<u8> {
    match n {
        n if n < 0x80 => vec![n as u8],
        n if n <= 0xFFFF => {
            let mut v = vec![0x81];
            v.extend_from_slice(&(n as u16).to_le_bytes());
            v
        }
        n => {
            let mut v = vec![0x82];
            v.extend_from_slice(&(n as u32).to_le_bytes());
            v
        }
    }
}

/// A file sent with a text, as Messages records it in `attachment`.
#[derive(Clone, Debug)]
pub struct FileRow {
    /// `transfer_name`: the sender's file name, e.g. `IMG_0001.HEIC`.
    pub name: String,
    /// `mime_type`, e.g. `image/heic`.
    pub mime_type: Option<String>,
    /// `uti`, e.g. `public.heic`.
    pub uti: Option<String>,
    /// `total_bytes`: the complete file's size.
    pub total_bytes: i64,
    /// `transfer_state` (IMCore's `IMFileTransferState`): 5 finished, 3 transferring,
    /// 6 failed (see `bridge/src/attachments/rows.rs`).
    pub transfer_state: i64,
    /// Whether `filename` is written (a download not yet started may have none).
    pub named: bool,
}

impl FileRow {
    /// A file named `name` of this MIME type and size.
    pub fn new(name: &str, mime_type: &str, total_bytes: usize) -> FileRow {
        FileRow {
            name: name.to_string(),
            mime_type: Some(mime_type.to_string()),
            uti: None,
            total_bytes: i64::try_from(total_bytes).unwrap_or(i64::MAX),
            transfer_state: 5,
            named: true,
        }
    }

    /// The same file before its download starts: no `filename` yet, `transfer_state` 0
    /// (waiting); [`FixtureDb::name_file`] writes them as Messages does later.
    pub fn unnamed(self) -> FileRow {
        FileRow {
            transfer_state: 0,
            named: false,
            ..self
        }
    }

    /// The same file still downloading (`transfer_state` 3, transferring).
    pub fn downloading(self) -> FileRow {
        FileRow {
            transfer_state: 3,
            ..self
        }
    }

    /// The same file, its download given up by Messages (`transfer_state` 6, error).
    pub fn failed(self) -> FileRow {
        FileRow {
            transfer_state: 6,
            ..self
        }
    }
}

/// An attachment written to the fixture: its guid and where its file goes.
#[derive(Clone, Debug)]
pub struct AttachedFile {
    /// `attachment.guid`.
    pub guid: String,
    /// The absolute path of the file under `home` (`filename` holds it as `~/…`).
    pub path: PathBuf,
}

impl FixtureDb {
    /// Writes a text with files as Messages does: the message row (without its chat
    /// join), each file's `attachment` row and `message_attachment_join` row (whose trigger
    /// sets `cache_has_attachments`), then the chat join. The files' paths are under
    /// `home/Library/Messages/Attachments/`, as `~/…` in `filename`; the caller writes the
    /// files (before or after, as a download would).
    pub fn insert_with_files(
        &self,
        m: &Msg,
        files: &[FileRow],
        home: &Path,
    ) -> (Inserted, Vec<AttachedFile>) {
        let inserted = self.insert(&Msg {
            join: false,
            ..m.clone()
        });
        let attached = files
            .iter()
            .map(|f| self.attach(inserted.rowid, f, home))
            .collect();
        self.join(inserted.rowid, &m.chat_guid);
        (inserted, attached)
    }

    /// Writes one `attachment` row and its join to message `rowid`.
    pub fn attach(&self, rowid: i64, file: &FileRow, home: &Path) -> AttachedFile {
        let guid = fresh_guid();
        let rel = format!(
            "Library/Messages/Attachments/{}/{}/{guid}/{}",
            &guid[..2],
            &guid[2..4],
            file.name
        );
        self.conn
            .execute(
                "INSERT INTO attachment (guid, original_guid, created_date, filename, uti, \
                 mime_type, transfer_state, is_outgoing, transfer_name, total_bytes) \
                 VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?8, 0, ?6, ?7)",
                params![
                    guid,
                    apple_now() / 1_000_000_000,
                    file.named.then(|| format!("~/{rel}")),
                    file.uti,
                    file.mime_type,
                    file.name,
                    file.total_bytes,
                    file.transfer_state
                ],
            )
            .expect("insert attachment");
        let attachment = self.conn.last_insert_rowid();
        self.conn
            .execute(
                "INSERT INTO message_attachment_join (message_id, attachment_id) VALUES (?1, ?2)",
                params![rowid, attachment],
            )
            .expect("insert message_attachment_join");
        AttachedFile {
            guid,
            path: home.join(rel),
        }
    }

    /// Names an attachment's file in its row and marks the download finished, as Messages
    /// does in place once the file has come: `filename` as `~/…` under `home`.
    pub fn name_file(&self, file: &AttachedFile, home: &Path) {
        let rel = file
            .path
            .strip_prefix(home)
            .expect("the file is under home");
        self.conn
            .execute(
                "UPDATE attachment SET filename = ?1, transfer_state = 5 WHERE guid = ?2",
                params![format!("~/{}", rel.display()), file.guid],
            )
            .expect("name the attachment's file");
    }
}

/// Writes `bytes` at `path`, making its folders, as a finished download.
pub fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("attachment folders");
    std::fs::write(path, bytes).expect("write attachment");
}

impl FixtureDb {
    /// Writes a voice message as Messages does: the message row marked `is_audio_message`
    /// (its `attributedBody` from `m`), the audio's attachment rows, then the chat join.
    pub fn insert_voice(&self, m: &Msg, audio: &FileRow, home: &Path) -> (Inserted, AttachedFile) {
        let inserted = self.insert(&Msg {
            join: false,
            ..m.clone()
        });
        self.conn
            .execute(
                "UPDATE message SET is_audio_message = 1 WHERE ROWID = ?1",
                [inserted.rowid],
            )
            .expect("mark the voice message");
        let attached = self.attach(inserted.rowid, audio, home);
        self.join(inserted.rowid, &m.chat_guid);
        (inserted, attached)
    }
}

impl FixtureDb {
    /// Writes a text with a rich link as Messages does: the message row, its
    /// `payload_data` (the preview) and `balloon_bundle_id`, then the chat join.
    pub fn insert_link(&self, m: &Msg, payload: &[u8]) -> Inserted {
        let inserted = self.insert(&Msg {
            join: false,
            ..m.clone()
        });
        self.conn
            .execute(
                "UPDATE message SET payload_data = ?1, \
                 balloon_bundle_id = 'com.apple.messages.URLBalloonProvider' WHERE ROWID = ?2",
                params![payload, inserted.rowid],
            )
            .expect("store the link preview");
        self.join(inserted.rowid, &m.chat_guid);
        inserted
    }
}
