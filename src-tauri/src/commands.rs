//! The commands the pages in `ui/` call: thin translations between the page's JSON and the
//! [`Host`] that owns the running bridge.
//!
//! Invariants: every command returns `Result<T, CommandError>` and `CommandError` reaches the
//! page as one plain sentence; validation is the bridge's (`Settings::save`), so a refused save
//! writes nothing; the API key is write-only (the pages learn only whether one is set);
//! changes reach the pages as the `sessions-changed` and `status-changed` events, sent by the
//! host's forwarders when the bridge's session store or status board changes.

use std::path::PathBuf;
use std::sync::Arc;

use bridge::doctor::{Check, Pane};
use bridge::sessions::{Session, StateKind};
use bridge::status::{SeenGroup, Stranger};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::host::{Host, HostError};

/// Event the pages listen to when sessions change; it has no payload, they re-fetch.
pub const SESSIONS_CHANGED: &str = "sessions-changed";
/// Event the pages listen to when the status line, the pause or the strangers change.
pub const STATUS_CHANGED: &str = "status-changed";

/// Why a command failed. Serialised as its message, so the page shows a sentence.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The host refused or failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The folder picker could not be shown.
    #[error("the folder picker failed: {0}")]
    Picker(String),
    /// The page named a System Settings pane that does not exist.
    #[error("no System Settings pane called “{pane}”")]
    UnknownPane {
        /// What the page sent.
        pane: String,
    },
    /// System Settings could not be opened.
    #[error("could not open System Settings ({url}): {reason}")]
    OpenPane {
        /// The `x-apple.systempreferences:` URL.
        url: String,
        /// Why `open` failed.
        reason: String,
    },
}

impl Serialize for CommandError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// One row of the sessions page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    /// The chat guid: the session's key.
    pub chat: String,
    /// The sender's handle (phone number or e-mail).
    pub who: String,
    /// What the session is doing (`waiting`, `working`, `idle`).
    pub state: StateKind,
    /// The pending question, else the text waiting for an answer, if any.
    pub text: Option<String>,
    /// When the conversation last moved (RFC 3339 on the wire).
    pub last_activity: DateTime<Utc>,
    /// Texts received in this session.
    pub message_count: u32,
}

impl From<Session> for SessionRow {
    fn from(session: Session) -> SessionRow {
        SessionRow {
            chat: session.chat.guid,
            who: session.sender,
            state: session.state.kind(),
            text: session.shown_text().map(str::to_owned),
            last_activity: session.last_activity,
            message_count: session.message_count,
        }
    }
}

/// The settings a user edits on the page (the API key is separate: it is write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsForm {
    /// The Obsidian vault folder; blank for none.
    pub vault_path: String,
    /// The model name; blank for the default.
    pub model: String,
    /// Handles allowed to write into the vault.
    pub allowed_senders: Vec<String>,
    /// Idle minutes after which a session ends.
    pub session_timeout_minutes: u32,
    /// Whether SMS/RCS texts count too (off: an SMS sender's number is easy to fake).
    #[serde(default)]
    pub allow_sms: bool,
}

/// Settings as the page sees them: the editable fields plus whether a key is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsView {
    /// The editable settings.
    #[serde(flatten)]
    pub settings: SettingsForm,
    /// Whether an API key is set; the key itself never leaves the app.
    pub api_key_set: bool,
}

/// The state line of the tray menu and the sessions page header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusLine {
    /// "Running · 2 sessions", "Paused" or "Needs setup: Full Disk Access".
    pub line: String,
    /// Whether the user paused the bridge.
    pub paused: bool,
}

/// Shows the native folder picker and blocks until the user chose (`Some`) or cancelled.
pub type PickFolder = Arc<dyn Fn() -> Result<Option<PathBuf>, String> + Send + Sync>;
/// Opens a folder or URL with the system; the error is a sentence.
pub type OpenUrl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the shell lends the commands: set up once by `run_app`, replaced by fakes in tests.
pub struct Hooks {
    /// Shows the native folder picker; blocks until the user chose or cancelled.
    pub pick_folder: PickFolder,
    /// Opens a URL with the system (`open` on macOS).
    pub open_url: OpenUrl,
}

type Res<T> = Result<T, CommandError>;
type HostState<'a> = tauri::State<'a, Host>;
type HooksState<'a> = tauri::State<'a, Hooks>;

/// Every session, most recent activity first.
#[tauri::command]
pub async fn list_sessions(host: HostState<'_>) -> Res<Vec<SessionRow>> {
    let sessions = host.sessions().await?;
    Ok(sessions.into_iter().map(SessionRow::from).collect())
}

/// Ends one session; `sessions.json` says so when this returns.
#[tauri::command]
pub async fn clear_session(host: HostState<'_>, chat: String) -> Res<()> {
    Ok(host.clear_session(&chat).await?)
}

/// Ends every session; returns how many there were.
#[tauri::command]
pub async fn clear_all_sessions(host: HostState<'_>) -> Res<usize> {
    Ok(host.clear_all().await?)
}

/// The settings in effect and whether an API key is set.
#[tauri::command]
pub fn get_settings(host: HostState<'_>) -> Res<SettingsView> {
    Ok(host.settings())
}

/// Validates and stores all settings, or none, then restarts the bridge with them.
#[tauri::command]
pub async fn save_settings(host: HostState<'_>, settings: SettingsForm) -> Res<SettingsView> {
    Ok(host.save_settings(settings).await?)
}

/// Stores the API key in the Keychain.
#[tauri::command]
pub async fn set_api_key(host: HostState<'_>, key: String) -> Res<()> {
    Ok(host.set_api_key(&key).await?)
}

/// Removes the API key from the Keychain.
#[tauri::command]
pub async fn clear_api_key(host: HostState<'_>) -> Res<()> {
    Ok(host.clear_api_key().await?)
}

/// Shows the native folder picker; `None` when the user cancelled.
#[tauri::command]
pub async fn pick_vault_folder(hooks: HooksState<'_>) -> Res<Option<String>> {
    let pick = Arc::clone(&hooks.pick_folder);
    // The dialog blocks until the user is done: keep it off the async workers.
    let picked = tauri::async_runtime::spawn_blocking(move || pick())
        .await
        .map_err(|err| CommandError::Picker(err.to_string()))?
        .map_err(CommandError::Picker)?;
    Ok(picked.map(|path| path.display().to_string()))
}

/// People who texted recently but are not allowed, newest first.
#[tauri::command]
pub fn recent_strangers(host: HostState<'_>) -> Res<Vec<Stranger>> {
    Ok(host.strangers())
}

/// Adds a handle to the allowed senders.
#[tauri::command]
pub async fn allow_sender(host: HostState<'_>, handle: String) -> Res<SettingsView> {
    Ok(host.allow_sender(&handle).await?)
}

/// Group chats that texted recently but are not allowed, newest first, with name and
/// members.
#[tauri::command]
pub fn recent_groups(host: HostState<'_>) -> Res<Vec<SeenGroup>> {
    Ok(host.groups())
}

/// Allows a group chat by its guid (its allowed members' texts then reach the agent).
#[tauri::command]
pub async fn allow_group(host: HostState<'_>, guid: String) -> Res<SettingsView> {
    Ok(host.allow_group(&guid).await?)
}

/// The setup checklist (the bridge's `doctor` checks and the Automation probe).
#[tauri::command]
pub async fn setup_checks(host: HostState<'_>) -> Res<Vec<Check>> {
    Ok(host.setup_checks().await)
}

/// Every pane a check can point at.
const PANES: [Pane; 2] = [Pane::FullDiskAccess, Pane::Automation];

/// The pane the page named, by the name a check serialises it with.
fn pane_named(name: &str) -> Option<Pane> {
    PANES
        .into_iter()
        .find(|pane| serde_json::to_value(pane).is_ok_and(|value| value == name))
}

/// Opens the System Settings pane that fixes a failing check.
#[tauri::command]
pub fn open_settings_pane(hooks: HooksState<'_>, pane: String) -> Res<()> {
    let url = pane_named(&pane)
        .ok_or(CommandError::UnknownPane { pane })?
        .url();
    (hooks.open_url)(url).map_err(|reason| CommandError::OpenPane {
        url: url.to_owned(),
        reason,
    })
}

/// The status line and whether the bridge is paused.
#[tauri::command]
pub fn status(host: HostState<'_>) -> Res<StatusLine> {
    Ok(host.status())
}

/// Pauses or resumes reading texts.
#[tauri::command]
pub fn set_paused(host: HostState<'_>, paused: bool) -> Res<StatusLine> {
    Ok(host.set_paused(paused))
}

#[cfg(test)]
mod tests {
    use bridge::chatdb::Chat;

    use super::*;

    #[test]
    fn a_session_becomes_a_row_in_the_contract_shape() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let chat = Chat {
            guid: "iMessage;-;+15551234567".to_owned(),
            identifier: "+15551234567".to_owned(),
            is_group: false,
        };
        let mut session = Session::new(chat, "+15551234567".to_owned(), at);
        session.state = bridge::sessions::SessionState::Waiting {
            original: "buy milk".to_owned(),
            question: Some("Is “Atlas” the client or the book? 📚".to_owned()),
        };
        session.message_count = 2;
        let row = SessionRow::from(session.clone());
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({
                "chat": "iMessage;-;+15551234567",
                "who": "+15551234567",
                "state": "waiting",
                "text": "Is “Atlas” the client or the book? 📚",
                "last_activity": "2026-01-02T03:04:05Z",
                "message_count": 2
            })
        );
        // No question: the text waiting for an answer; neither: null.
        session.state = bridge::sessions::SessionState::Waiting {
            original: "buy milk".to_owned(),
            question: None,
        };
        assert_eq!(
            SessionRow::from(session.clone()).text.as_deref(),
            Some("buy milk")
        );
        session.state = bridge::sessions::SessionState::Idle;
        let idle = serde_json::to_value(SessionRow::from(session)).unwrap();
        assert_eq!(idle["text"], serde_json::Value::Null);
        assert_eq!(idle["state"], "idle");
    }

    #[test]
    fn errors_reach_the_page_as_one_string() {
        let err = CommandError::from(HostError::UnknownSession {
            chat: "iMessage;-;x".to_owned(),
        });
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!("no session for chat iMessage;-;x")
        );
    }

    #[test]
    fn panes_are_found_by_the_name_checks_give_them() {
        assert_eq!(pane_named("full_disk_access"), Some(Pane::FullDiskAccess));
        assert_eq!(pane_named("automation"), Some(Pane::Automation));
        for other in [
            "",
            "camera",
            "Automation",
            "automation ",
            "\u{202e}automation",
        ] {
            assert_eq!(pane_named(other), None, "{other:?}");
        }
    }
}
