//! The commands the pages in `ui/` call: thin translations between the page's JSON and the
//! bridge's [`Supervisor`], and the mapping between the settings form and the bridge's
//! settings.
//!
//! Invariants: every command returns `Result<T, CommandError>` and `CommandError` reaches the
//! page as one plain sentence; validation is the bridge's (`Settings::save`), so a refused save
//! writes nothing; the API key is write-only (the pages learn only whether one is set);
//! changes reach the pages as the `sessions-changed` and `status-changed` events, sent from
//! the supervisor's change feed. When the app could not start its bridge at all
//! ([`Attention`]), the status and the checklist say why.

use std::path::PathBuf;
use std::sync::Arc;

use bridge::allowlist::Handle;
use bridge::anthropic::DEFAULT_MODEL;
use bridge::config::{Config, ConfigError, Origin, Setting, Settings};
use bridge::doctor::{Check, Pane};
use bridge::sessions::{Session, StateKind};
use bridge::status::{SeenGroup, Stranger};
use bridge::supervisor::{Effective, StatusLine, Supervisor, SupervisorError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tauri::{AppHandle, Manager, Runtime};

use bridge::login_item;

/// Event the pages listen to when sessions change; it has no payload, they re-fetch.
pub const SESSIONS_CHANGED: &str = "sessions-changed";
/// Event the pages listen to when the status line, the pause or the strangers change.
pub const STATUS_CHANGED: &str = "status-changed";

/// Why a command failed. Serialised as its message, so the page shows a sentence.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The supervisor refused or failed.
    #[error(transparent)]
    Bridge(#[from] SupervisorError),
    /// The app could not start its bridge.
    #[error("Second Brain could not start: {0}")]
    NotStarted(String),
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
        let text = session.shown_text().map(str::to_owned);
        SessionRow {
            chat: session.chat.guid,
            who: session.sender,
            state: session.state.kind(),
            text,
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
    /// The morning digest: the switch, the time (`HH:MM`) and the recipient.
    #[serde(default)]
    pub digest: bridge::digest::DigestSettings,
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

impl From<Effective> for SettingsView {
    fn from(effective: Effective) -> SettingsView {
        match effective {
            Effective::Running(config) => view_of_config(&config),
            Effective::File {
                settings: file,
                api_key_set,
            } => SettingsView {
                settings: SettingsForm {
                    vault_path: file
                        .vault_path
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    model: file.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
                    allowed_senders: file.allowed_senders,
                    session_timeout_minutes: file
                        .session_timeout_minutes
                        .map_or(60, |m| u32::try_from(m).unwrap_or(u32::MAX)),
                    allow_sms: file.allow_sms,
                    digest: file.digest,
                },
                api_key_set,
            },
        }
    }
}

/// The page's form as a settings file: blank fields unset, senders in normal form and
/// without duplicates, everything the page does not edit (the API base URL) kept from `file`.
pub fn settings_from_form(form: SettingsForm, file: Settings) -> Result<Settings, ConfigError> {
    let text = |value: String| {
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    };
    let mut senders: Vec<String> = Vec::new();
    for raw in form.allowed_senders.iter().filter(|s| !s.trim().is_empty()) {
        let handle = Handle::parse(raw).map_err(|err| ConfigError::Invalid {
            setting: Setting::AllowedSenders(Origin::SettingsFile),
            reason: err.to_string(),
        })?;
        if !senders.iter().any(|known| known == handle.as_str()) {
            senders.push(handle.as_str().to_owned());
        }
    }
    Ok(Settings {
        vault_path: text(form.vault_path).map(PathBuf::from),
        model: text(form.model),
        allowed_senders: senders,
        session_timeout_minutes: Some(u64::from(form.session_timeout_minutes)),
        allow_sms: form.allow_sms,
        digest: form.digest,
        ..file
    })
}

fn view_of_config(config: &Config) -> SettingsView {
    SettingsView {
        settings: SettingsForm {
            vault_path: config
                .vault
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            model: config.model.clone(),
            allowed_senders: config
                .allowed_senders
                .iter()
                .map(|h| h.as_str().to_owned())
                .collect(),
            session_timeout_minutes: u32::try_from(
                config.session_timeout.as_millis().div_ceil(60_000),
            )
            .unwrap_or(u32::MAX)
            .max(1),
            allow_sms: config.allow_sms,
            digest: config
                .digest
                .as_ref()
                .map(bridge::digest::DigestSettings::from)
                .unwrap_or_default(),
        },
        api_key_set: config.auth.is_some(),
    }
}

/// Where the shell finds the user's things; kept in the app state.
#[derive(Debug, Clone)]
pub struct Shell {
    /// The user's home folder (LaunchAgents, chat.db, `~` in paths).
    pub home: PathBuf,
    /// Where logs go; "Open Logs" shows it.
    pub logs_dir: PathBuf,
    /// The bundle identifier, also the LaunchAgent label.
    pub identifier: String,
    /// This executable, for the LaunchAgent.
    pub executable: PathBuf,
}

/// What launchd will do with the login item: on macOS it is asked whether the user switched
/// the item off; elsewhere there is no launchd to disagree with the plist.
pub fn login_state(shell: &Shell) -> login_item::State {
    #[cfg(target_os = "macos")]
    let disabled = login_item::agent_path(&shell.home, &shell.identifier)
        .is_file()
        .then(crate::macos::print_disabled);
    #[cfg(not(target_os = "macos"))]
    let disabled = None;
    login_item::state(&shell.home, &shell.identifier, disabled)
}

/// Why the app could not start its bridge, when it could not; kept in the app state.
#[derive(Debug, Clone)]
pub struct Attention(pub String);

/// Shows the native folder picker and blocks until the user chose (`Some`) or cancelled.
pub type PickFolder = Arc<dyn Fn() -> Result<Option<PathBuf>, String> + Send + Sync>;
/// Opens a folder or URL with the system; the error is a sentence.
pub type OpenUrl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
/// Tells the user something went wrong (a native alert in the app).
pub type Alert = Box<dyn Fn(&str) + Send + Sync>;

/// What the shell lends the commands and the tray: set up once by `run_app`, fakes in tests.
pub struct Hooks {
    /// Shows the native folder picker; blocks until the user chose or cancelled.
    pub pick_folder: PickFolder,
    /// Opens a URL with the system (`open` on macOS).
    pub open_url: OpenUrl,
    /// Shows a sentence to the user (a menu action that failed).
    pub alert: Alert,
}

type Res<T> = Result<T, CommandError>;
type Bridge<'a> = tauri::State<'a, Supervisor>;
type HooksState<'a> = tauri::State<'a, Hooks>;

/// Every session, most recent activity first.
#[tauri::command]
pub async fn list_sessions(bridge: Bridge<'_>) -> Res<Vec<SessionRow>> {
    let sessions = bridge.sessions().await?;
    Ok(sessions.into_iter().map(SessionRow::from).collect())
}

/// Ends one session; `sessions.json` says so when this returns.
#[tauri::command]
pub async fn clear_session(bridge: Bridge<'_>, chat: String) -> Res<()> {
    Ok(bridge.clear_session(&chat).await?)
}

/// Ends every session; returns how many there were.
#[tauri::command]
pub async fn clear_all_sessions(bridge: Bridge<'_>) -> Res<usize> {
    Ok(bridge.clear_all().await?)
}

/// The settings in effect and whether an API key is set.
#[tauri::command]
pub fn get_settings(bridge: Bridge<'_>) -> Res<SettingsView> {
    Ok(bridge.effective().into())
}

/// Validates and stores all settings, or none, then restarts the bridge with them.
#[tauri::command]
pub async fn save_settings(bridge: Bridge<'_>, settings: SettingsForm) -> Res<SettingsView> {
    bridge
        .update_settings(move |file| settings_from_form(settings, file))
        .await?;
    Ok(bridge.effective().into())
}

/// Stores the API key in the keychain.
#[tauri::command]
pub async fn set_api_key(bridge: Bridge<'_>, key: String) -> Res<()> {
    Ok(bridge.set_api_key(&key).await?)
}

/// Removes the API key from the keychain.
#[tauri::command]
pub async fn clear_api_key(bridge: Bridge<'_>) -> Res<()> {
    Ok(bridge.clear_api_key().await?)
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
pub fn recent_strangers(bridge: Bridge<'_>) -> Res<Vec<Stranger>> {
    Ok(bridge.strangers())
}

/// Adds a handle to the allowed senders.
#[tauri::command]
pub async fn allow_sender(bridge: Bridge<'_>, handle: String) -> Res<SettingsView> {
    bridge.allow_sender(&handle).await?;
    Ok(bridge.effective().into())
}

/// Group chats that texted recently but are not allowed, newest first, with name and
/// members.
#[tauri::command]
pub fn recent_groups(bridge: Bridge<'_>) -> Res<Vec<SeenGroup>> {
    Ok(bridge.groups())
}

/// Allows a group chat by its guid (its allowed members' texts then reach the agent).
#[tauri::command]
pub async fn allow_group(bridge: Bridge<'_>, guid: String) -> Res<SettingsView> {
    bridge.allow_group(&guid).await?;
    Ok(bridge.effective().into())
}

/// The setup checklist: why the app could not start (if so), the bridge's `doctor` checks
/// and the Automation probe, and the login item when the user switched it off.
#[tauri::command]
pub async fn setup_checks<R: Runtime>(app: AppHandle<R>) -> Res<Vec<Check>> {
    let mut checks = Vec::new();
    if let Some(attention) = app.try_state::<Attention>() {
        checks.push(Check {
            id: "startup",
            label: "Second Brain started",
            ok: false,
            detail: attention.0.clone(),
            fix: Some(
                "Quit Second Brain and open it again; the logs (Open Logs) say more.".to_owned(),
            ),
            pane: None,
        });
    }
    if let Some(bridge) = app.try_state::<Supervisor>() {
        checks.extend(bridge.setup_checks().await);
    }
    if let Some(shell) = app.try_state::<Shell>()
        && login_state(&shell) == login_item::State::SwitchedOff
    {
        checks.push(Check {
            id: "login_item",
            label: "Launch at Login allowed",
            ok: false,
            detail: "switched off in System Settings › General › Login Items".to_owned(),
            fix: Some(
                "Switch Second Brain on under Allow in the Background in System Settings › General › Login Items.".to_owned(),
            ),
            pane: None,
        });
    }
    Ok(checks)
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
pub fn status<R: Runtime>(app: AppHandle<R>) -> Res<StatusLine> {
    Ok(status_of(&app))
}

/// The status line of the app: the bridge's, or why the app could not start.
pub fn status_of<R: Runtime>(app: &AppHandle<R>) -> StatusLine {
    match (app.try_state::<Supervisor>(), app.try_state::<Attention>()) {
        (_, Some(attention)) => StatusLine {
            line: format!("Needs attention: {}", attention.0),
            paused: false,
        },
        (Some(bridge), None) => bridge.status(),
        (None, None) => StatusLine {
            line: "Starting…".to_owned(),
            paused: false,
        },
    }
}

/// Pauses or resumes reading texts.
#[tauri::command]
pub fn set_paused(bridge: Bridge<'_>, paused: bool) -> Res<StatusLine> {
    Ok(bridge.set_paused(paused))
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
        let err = CommandError::from(SupervisorError::UnknownSession {
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

    #[test]
    fn the_form_becomes_a_settings_file() {
        let file = Settings {
            base_url: Some("http://127.0.0.1:9".to_owned()),
            model: Some("old".to_owned()),
            ..Settings::default()
        };
        let form = SettingsForm {
            vault_path: "  /Users/zoë/🧠 Vault ".to_owned(),
            model: " ".to_owned(),
            allowed_senders: vec![
                "+1 (555) 123-4567".to_owned(),
                "".to_owned(),
                "+15551234567".to_owned(),
                "Sarah@Example.COM".to_owned(),
            ],
            session_timeout_minutes: 30,
            allow_sms: false,
            digest: Default::default(),
        };
        let settings = settings_from_form(form.clone(), file.clone()).unwrap();
        assert_eq!(
            settings,
            Settings {
                vault_path: Some(PathBuf::from("/Users/zoë/🧠 Vault")),
                model: None,
                allowed_senders: vec!["+15551234567".to_owned(), "sarah@example.com".to_owned()],
                session_timeout_minutes: Some(30),
                base_url: Some("http://127.0.0.1:9".to_owned()),
                ..Settings::default()
            }
        );
        for bad in ["555-1234", "bob", "+1\u{2028}5", "a b@c.d"] {
            let mut form = form.clone();
            form.allowed_senders = vec![bad.to_owned()];
            let err = SupervisorError::from(settings_from_form(form, file.clone()).unwrap_err());
            assert!(
                err.to_string().starts_with("Allowed senders: "),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn minutes_round_up_and_never_show_zero() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        for (ms, minutes) in [("1", 1), ("60000", 1), ("60001", 2), ("5400000", 90)] {
            let vars = [
                ("SECOND_BRAIN_DATA_DIR", data.clone()),
                ("SESSION_TIMEOUT_MS", ms.to_owned()),
            ];
            let config = bridge::config::Config::resolve(
                &bridge::config::Overrides::default(),
                |name| {
                    vars.iter()
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v.clone())
                },
                || None,
            )
            .unwrap();
            let view = view_of_config(&config);
            assert_eq!(view.settings.session_timeout_minutes, minutes, "{ms} ms");
        }
    }
}
