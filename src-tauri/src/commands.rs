//! The commands the pages in `ui/` call, and the state they read and change.
//!
//! Invariants: every command returns `Result<T, CommandError>` and `CommandError` reaches the
//! page as one plain sentence; settings are validated as a whole before anything is stored, so
//! a refused save changes nothing; the API key is write-only (the pages learn only whether one
//! is set); every change to the sessions or the status calls [`Hooks::changed`] once, which
//! emits `sessions-changed` and refreshes the tray.
//!
//! **Phase-2 seam.** [`Backend`] is an in-memory placeholder holding three demo sessions. The
//! bridge replaces exactly its body: the command functions, the payload types and
//! [`validate_settings`] stay as they are.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Event the pages listen to; it has no payload, they re-fetch.
pub const SESSIONS_CHANGED: &str = "sessions-changed";

/// Why a command failed. Serialised as its message, so the page shows a sentence.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A setting was refused; nothing was saved.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field the user must correct, as the settings page labels it.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// There is no session for this chat (it may have ended meanwhile).
    #[error("no session for chat {chat}")]
    UnknownSession {
        /// The chat guid the page asked for.
        chat: String,
    },
    /// The folder picker could not be shown.
    #[error("the folder picker failed: {0}")]
    Picker(String),
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

/// What a session is doing, as the sessions page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// The agent asked a question and waits for the user's answer.
    Waiting,
    /// A message of this conversation is being handled right now.
    Working,
    /// Nothing pending; the session ends at its timeout.
    Idle,
}

/// One row of the sessions page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    /// The chat guid: the session's key.
    pub chat: String,
    /// The sender's handle (phone number or e-mail), or a contact name where known.
    pub who: String,
    /// What the session is doing.
    pub state: SessionState,
    /// The pending question or original text, if any.
    pub text: Option<String>,
    /// When the conversation last moved (RFC 3339 on the wire).
    pub last_activity: DateTime<Utc>,
    /// Messages received in this session.
    pub message_count: u32,
}

/// The settings a user can edit (the API key is separate: it is write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The Obsidian vault folder.
    pub vault_path: String,
    /// The Anthropic model name.
    pub model: String,
    /// Handles allowed to write into the vault.
    pub allowed_senders: Vec<String>,
    /// Idle minutes after which a session ends.
    pub session_timeout_minutes: u32,
}

/// Settings as the page sees them: the editable fields plus whether a key is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingsView {
    /// The editable settings.
    #[serde(flatten)]
    pub settings: Settings,
    /// Whether an API key is stored; the key itself never leaves the back end.
    pub api_key_set: bool,
}

/// Someone who texted the account recently but is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stranger {
    /// Their handle.
    pub handle: String,
    /// When they last texted.
    pub last_seen: DateTime<Utc>,
}

/// A System Settings pane the setup page can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pane {
    /// Privacy & Security › Full Disk Access.
    FullDiskAccess,
    /// Privacy & Security › Automation.
    Automation,
}

impl Pane {
    /// The URL that opens this pane in System Settings.
    pub fn url(self) -> &'static str {
        match self {
            Pane::FullDiskAccess => {
                "x-apple.systempreferences:com.apple.preference.security?Privacy_AllFiles"
            }
            Pane::Automation => {
                "x-apple.systempreferences:com.apple.preference.security?Privacy_Automation"
            }
        }
    }
}

/// One line of the setup checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetupCheck {
    /// Stable id (`full_disk_access`, `automation`, `vault`, `api_key`, `senders`).
    pub id: &'static str,
    /// What is checked, as a short title.
    pub label: &'static str,
    /// Whether it is fine.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it is not fine.
    pub fix: Option<String>,
    /// The System Settings pane that fixes it, if any.
    pub pane: Option<Pane>,
}

/// The state line of the tray menu and the sessions page header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// "Running · 2 sessions", "Paused" or "Needs setup: Full Disk Access".
    pub line: String,
    /// Whether message handling is paused.
    pub paused: bool,
}

/// Shows the native folder picker and blocks until the user chose (`Some`) or cancelled.
pub type PickFolder = Arc<dyn Fn() -> Result<Option<PathBuf>, String> + Send + Sync>;
/// Opens a folder or URL with the system; the error is a sentence.
pub type OpenUrl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the shell lends the commands: set up once by `run_app`, replaced by fakes in tests.
pub struct Hooks {
    /// Called after any change to the sessions or the status.
    pub changed: Box<dyn Fn() + Send + Sync>,
    /// Shows the native folder picker; blocks until the user chose or cancelled.
    pub pick_folder: PickFolder,
    /// Opens a URL with the system (`open` on macOS).
    pub open_url: OpenUrl,
}

// ---------------------------------------------------------------------------------------------
// Commands: thin, they only translate between the page and `Backend`.
// ---------------------------------------------------------------------------------------------

type Res<T> = Result<T, CommandError>;
type Back<'a> = tauri::State<'a, Backend>;
type HooksState<'a> = tauri::State<'a, Hooks>;

/// Every session, most recent activity first.
#[tauri::command]
pub fn list_sessions(backend: Back<'_>) -> Res<Vec<SessionRow>> {
    Ok(backend.sessions())
}

/// Ends one session.
#[tauri::command]
pub fn clear_session(backend: Back<'_>, hooks: HooksState<'_>, chat: String) -> Res<()> {
    backend.clear_session(&chat)?;
    (hooks.changed)();
    Ok(())
}

/// Ends every session; returns how many there were.
#[tauri::command]
pub fn clear_all_sessions(backend: Back<'_>, hooks: HooksState<'_>) -> Res<usize> {
    let cleared = backend.clear_all();
    (hooks.changed)();
    Ok(cleared)
}

/// The settings and whether an API key is stored.
#[tauri::command]
pub fn get_settings(backend: Back<'_>) -> Res<SettingsView> {
    Ok(backend.settings())
}

/// Validates and stores all settings, or none.
#[tauri::command]
pub fn save_settings(
    backend: Back<'_>,
    hooks: HooksState<'_>,
    settings: Settings,
) -> Res<SettingsView> {
    let saved = backend.save_settings(settings)?;
    (hooks.changed)();
    Ok(saved)
}

/// Stores the API key (in the Keychain, once the bridge is wired in).
#[tauri::command]
pub fn set_api_key(backend: Back<'_>, hooks: HooksState<'_>, key: String) -> Res<()> {
    backend.set_api_key(&key)?;
    (hooks.changed)();
    Ok(())
}

/// Removes the stored API key.
#[tauri::command]
pub fn clear_api_key(backend: Back<'_>, hooks: HooksState<'_>) -> Res<()> {
    backend.clear_api_key();
    (hooks.changed)();
    Ok(())
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
pub fn recent_strangers(backend: Back<'_>) -> Res<Vec<Stranger>> {
    Ok(backend.recent_strangers())
}

/// Adds a handle to the allowed senders.
#[tauri::command]
pub fn allow_sender(backend: Back<'_>, hooks: HooksState<'_>, handle: String) -> Res<SettingsView> {
    let saved = backend.allow_sender(&handle)?;
    (hooks.changed)();
    Ok(saved)
}

/// The setup checklist.
#[tauri::command]
pub fn setup_checks(backend: Back<'_>) -> Res<Vec<SetupCheck>> {
    Ok(backend.setup_checks())
}

/// Opens the System Settings pane that fixes a failing check.
#[tauri::command]
pub fn open_settings_pane(hooks: HooksState<'_>, pane: Pane) -> Res<()> {
    (hooks.open_url)(pane.url()).map_err(|reason| CommandError::OpenPane {
        url: pane.url().to_owned(),
        reason,
    })
}

/// The status line and whether handling is paused.
#[tauri::command]
pub fn status(backend: Back<'_>) -> Res<Status> {
    Ok(backend.status())
}

/// Pauses or resumes message handling.
#[tauri::command]
pub fn set_paused(backend: Back<'_>, hooks: HooksState<'_>, paused: bool) -> Res<Status> {
    backend.set_paused(paused);
    (hooks.changed)();
    Ok(backend.status())
}

// ---------------------------------------------------------------------------------------------
// Validation: stays when the bridge replaces `Backend`.
// ---------------------------------------------------------------------------------------------

/// The longest session timeout accepted: one day.
pub const MAX_TIMEOUT_MINUTES: u32 = 24 * 60;

/// Checks every field and returns the settings normalised (trimmed, `~` expanded, senders
/// deduplicated), or the first problem. Checks the vault folder on disk.
pub fn validate_settings(settings: Settings, home: &Path) -> Res<Settings> {
    let vault_path = validate_vault(&settings.vault_path, home)?;
    let model = settings.model.trim().to_owned();
    if model.is_empty() {
        return Err(invalid(
            "Model",
            "enter a model name, for example claude-sonnet-4-5",
        ));
    }
    if model.chars().any(char::is_whitespace) || model.len() > 100 {
        return Err(invalid("Model", format!("“{model}” is not a model name")));
    }
    let mut allowed_senders: Vec<String> = Vec::new();
    for raw in &settings.allowed_senders {
        let handle = normalise_handle(raw)?;
        if !allowed_senders
            .iter()
            .any(|known| known.eq_ignore_ascii_case(&handle))
        {
            allowed_senders.push(handle);
        }
    }
    let minutes = settings.session_timeout_minutes;
    if !(1..=MAX_TIMEOUT_MINUTES).contains(&minutes) {
        return Err(invalid(
            "Session timeout",
            format!("{minutes} minutes is out of range: use 1 to {MAX_TIMEOUT_MINUTES}"),
        ));
    }
    Ok(Settings {
        vault_path: vault_path.display().to_string(),
        model,
        allowed_senders,
        session_timeout_minutes: minutes,
    })
}

fn invalid(field: &'static str, reason: impl Into<String>) -> CommandError {
    CommandError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn validate_vault(raw: &str, home: &Path) -> Res<PathBuf> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(invalid(
            "Vault folder",
            "choose the folder of your Obsidian vault",
        ));
    }
    let path = match raw.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(raw),
    };
    if !path.is_absolute() {
        return Err(invalid(
            "Vault folder",
            format!("“{raw}” is not a full path"),
        ));
    }
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(path),
        Ok(_) => Err(invalid(
            "Vault folder",
            format!("“{}” is a file, not a folder", path.display()),
        )),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(invalid(
            "Vault folder",
            format!("“{}” does not exist", path.display()),
        )),
        Err(err) => Err(invalid(
            "Vault folder",
            format!("“{}” cannot be read: {err}", path.display()),
        )),
    }
}

/// A phone number (`+` and 7–15 digits once spaces, dashes, dots and brackets are removed) or
/// an e-mail address, as Messages stores handles.
fn normalise_handle(raw: &str) -> Res<String> {
    let trimmed = raw.trim();
    let refuse = || {
        invalid(
            "Allowed senders",
            format!("“{trimmed}” is not a phone number or e-mail address"),
        )
    };
    if trimmed.contains('@') {
        let (local, domain) = trimmed.split_once('@').ok_or_else(refuse)?;
        let plausible = !local.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains('@')
            && !trimmed.chars().any(|c| c.is_whitespace() || c.is_control());
        return if plausible {
            Ok(trimmed.to_lowercase())
        } else {
            Err(refuse())
        };
    }
    let compact: String = trimmed
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+').unwrap_or(&compact);
    if (7..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(format!("+{digits}"))
    } else {
        Err(refuse())
    }
}

// ---------------------------------------------------------------------------------------------
// PLACEHOLDER — phase 2 replaces this `Backend` with the bridge (same method signatures).
// ---------------------------------------------------------------------------------------------

/// The back end the commands talk to. For now an in-memory stand-in holding demo data.
pub struct Backend {
    home: PathBuf,
    inner: Mutex<Placeholder>,
}

struct Placeholder {
    sessions: Vec<SessionRow>,
    settings: Settings,
    api_key_set: bool,
    paused: bool,
    strangers: Vec<Stranger>,
}

impl Backend {
    /// A back end with three demo sessions (one of each state) and two recent strangers.
    /// `home` is the user's home folder (chat.db and `~` in the vault path are found from it).
    pub fn demo(home: PathBuf, now: DateTime<Utc>) -> Self {
        let session = |chat: &str, who: &str, state, text: Option<&str>, ago, count| SessionRow {
            chat: chat.to_owned(),
            who: who.to_owned(),
            state,
            text: text.map(str::to_owned),
            last_activity: now - Duration::minutes(ago),
            message_count: count,
        };
        let sessions = vec![
            session(
                "iMessage;-;+15551234567",
                "+1 555 123 4567",
                SessionState::Waiting,
                Some("Is “Atlas” the client project or the book you mentioned?"),
                2,
                3,
            ),
            session(
                "iMessage;-;sarah@example.com",
                "sarah@example.com",
                SessionState::Working,
                Some("remind me to send the Q3 deck to Omar before Friday"),
                0,
                1,
            ),
            session(
                "iMessage;-;+447700900123",
                "+44 7700 900123",
                SessionState::Idle,
                None,
                48,
                5,
            ),
        ];
        let settings = Settings {
            vault_path: home.join("Documents/Second Brain").display().to_string(),
            model: "claude-sonnet-4-5".to_owned(),
            allowed_senders: vec!["+15551234567".to_owned(), "sarah@example.com".to_owned()],
            session_timeout_minutes: 60,
        };
        let strangers = vec![
            Stranger {
                handle: "+15559876543".to_owned(),
                last_seen: now - Duration::minutes(15),
            },
            Stranger {
                handle: "+447700900123".to_owned(),
                last_seen: now - Duration::hours(3),
            },
        ];
        let inner = Placeholder {
            sessions,
            settings,
            api_key_set: false,
            paused: false,
            strangers,
        };
        Self {
            home,
            inner: Mutex::new(inner),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Placeholder> {
        // A panic while holding this short lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every session, most recent activity first.
    pub fn sessions(&self) -> Vec<SessionRow> {
        let mut rows = self.lock().sessions.clone();
        rows.sort_by_key(|row| std::cmp::Reverse(row.last_activity));
        rows
    }

    /// Ends one session.
    pub fn clear_session(&self, chat: &str) -> Res<()> {
        let mut inner = self.lock();
        let before = inner.sessions.len();
        inner.sessions.retain(|row| row.chat != chat);
        if inner.sessions.len() == before {
            return Err(CommandError::UnknownSession {
                chat: chat.to_owned(),
            });
        }
        tracing::info!(chat, "session cleared");
        Ok(())
    }

    /// Ends every session; returns how many there were.
    pub fn clear_all(&self) -> usize {
        let cleared = std::mem::take(&mut self.lock().sessions).len();
        tracing::info!(cleared, "all sessions cleared");
        cleared
    }

    /// The settings and whether a key is stored.
    pub fn settings(&self) -> SettingsView {
        let inner = self.lock();
        SettingsView {
            settings: inner.settings.clone(),
            api_key_set: inner.api_key_set,
        }
    }

    /// Validates, then stores all settings at once.
    pub fn save_settings(&self, settings: Settings) -> Res<SettingsView> {
        let settings = validate_settings(settings, &self.home)?;
        let mut inner = self.lock();
        inner.settings = settings;
        Ok(SettingsView {
            settings: inner.settings.clone(),
            api_key_set: inner.api_key_set,
        })
    }

    /// Stores an API key. The placeholder keeps only the fact that one is set.
    pub fn set_api_key(&self, key: &str) -> Res<()> {
        let key = key.trim();
        if key.is_empty() {
            return Err(invalid("API key", "paste a key first"));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("API key", "a key has no spaces or line breaks"));
        }
        self.lock().api_key_set = true;
        Ok(())
    }

    /// Forgets the API key.
    pub fn clear_api_key(&self) {
        self.lock().api_key_set = false;
    }

    /// Strangers who texted recently and are not allowed yet, newest first.
    pub fn recent_strangers(&self) -> Vec<Stranger> {
        let inner = self.lock();
        let allowed = &inner.settings.allowed_senders;
        let mut strangers: Vec<Stranger> = inner
            .strangers
            .iter()
            .filter(|s| !allowed.iter().any(|a| a.eq_ignore_ascii_case(&s.handle)))
            .cloned()
            .collect();
        strangers.sort_by_key(|s| std::cmp::Reverse(s.last_seen));
        strangers
    }

    /// Adds one handle to the allowed senders.
    pub fn allow_sender(&self, handle: &str) -> Res<SettingsView> {
        let handle = normalise_handle(handle)?;
        let mut inner = self.lock();
        if !inner
            .settings
            .allowed_senders
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&handle))
        {
            inner.settings.allowed_senders.push(handle);
        }
        Ok(SettingsView {
            settings: inner.settings.clone(),
            api_key_set: inner.api_key_set,
        })
    }

    /// The setup checklist. Reads the disk; no Apple Events are sent.
    pub fn setup_checks(&self) -> Vec<SetupCheck> {
        let (vault, api_key_set, senders) = {
            let inner = self.lock();
            (
                inner.settings.vault_path.clone(),
                inner.api_key_set,
                inner.settings.allowed_senders.len(),
            )
        };
        vec![
            check_chat_db(&self.home.join("Library/Messages/chat.db")),
            SetupCheck {
                id: "automation",
                label: "Messages automation",
                ok: false,
                detail: "Not confirmed yet: macOS asks the first time Second Brain replies."
                    .to_owned(),
                fix: Some(
                    "Allow Second Brain to control Messages in System Settings › Privacy & \
                     Security › Automation."
                        .to_owned(),
                ),
                pane: Some(Pane::Automation),
            },
            check_vault(Path::new(&vault)),
            SetupCheck {
                id: "api_key",
                label: "Anthropic API key",
                ok: api_key_set,
                detail: if api_key_set {
                    "Stored."
                } else {
                    "No key stored."
                }
                .to_owned(),
                fix: (!api_key_set)
                    .then(|| "Paste your key in Settings › API key and press Set.".to_owned()),
                pane: None,
            },
            SetupCheck {
                id: "senders",
                label: "Allowed senders",
                ok: senders > 0,
                detail: match senders {
                    0 => "Nobody may write to your vault yet.".to_owned(),
                    1 => "1 sender allowed.".to_owned(),
                    n => format!("{n} senders allowed."),
                },
                fix: (senders == 0)
                    .then(|| "Add your own phone number or e-mail in Settings.".to_owned()),
                pane: None,
            },
        ]
    }

    /// The status line: paused, else the first failing setup check, else the session count.
    pub fn status(&self) -> Status {
        let (paused, sessions) = {
            let inner = self.lock();
            (inner.paused, inner.sessions.len())
        };
        let line = if paused {
            "Paused".to_owned()
        } else if let Some(failing) = self.setup_checks().into_iter().find(|check| !check.ok) {
            format!("Needs setup: {}", failing.label)
        } else {
            running_line(sessions)
        };
        Status { line, paused }
    }

    /// Pauses or resumes message handling.
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        tracing::info!(paused, "message handling paused state changed");
    }
}

/// "Running · 1 session", "Running · 2 sessions".
pub fn running_line(sessions: usize) -> String {
    match sessions {
        1 => "Running · 1 session".to_owned(),
        n => format!("Running · {n} sessions"),
    }
}

fn check_chat_db(path: &Path) -> SetupCheck {
    let (ok, detail) = match std::fs::File::open(path) {
        Ok(_) => (true, "Messages’ database is readable.".to_owned()),
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => (
            false,
            "macOS does not let Second Brain read your messages.".to_owned(),
        ),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => (
            false,
            format!("No Messages database at {}.", path.display()),
        ),
        Err(err) => (false, format!("{} cannot be read: {err}", path.display())),
    };
    SetupCheck {
        id: "full_disk_access",
        label: "Full Disk Access",
        ok,
        detail,
        fix: (!ok).then(|| {
            "Turn on Second Brain in System Settings › Privacy & Security › Full Disk Access, \
             then reopen this window."
                .to_owned()
        }),
        pane: (!ok).then_some(Pane::FullDiskAccess),
    }
}

fn check_vault(path: &Path) -> SetupCheck {
    let probe = path.join(".second-brain-write-check");
    let result = std::fs::write(&probe, b"").and_then(|()| std::fs::remove_file(&probe));
    let (ok, detail) = match result {
        Ok(()) => (true, format!("{} is writable.", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            (false, format!("{} does not exist.", path.display()))
        }
        Err(err) => (false, format!("{} is not writable: {err}", path.display())),
    };
    SetupCheck {
        id: "vault",
        label: "Vault folder",
        ok,
        detail,
        fix: (!ok).then(|| "Choose your Obsidian vault in Settings › Vault folder.".to_owned()),
        pane: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(home: &Path) -> Backend {
        Backend::demo(home.to_path_buf(), Utc::now())
    }

    fn settings(vault: &Path) -> Settings {
        Settings {
            vault_path: vault.display().to_string(),
            model: "claude-sonnet-4-5".to_owned(),
            allowed_senders: vec!["+15551234567".to_owned()],
            session_timeout_minutes: 60,
        }
    }

    #[test]
    fn clear_one_then_all_empties_the_sessions() {
        let home = tempfile::tempdir().unwrap();
        let backend = backend(home.path());
        let chats: Vec<String> = backend.sessions().into_iter().map(|row| row.chat).collect();
        assert_eq!(chats.len(), 3);
        backend.clear_session(&chats[1]).unwrap();
        let left: Vec<String> = backend.sessions().into_iter().map(|row| row.chat).collect();
        assert_eq!(left, vec![chats[0].clone(), chats[2].clone()]);
        assert!(matches!(
            backend.clear_session(&chats[1]),
            Err(CommandError::UnknownSession { chat }) if chat == chats[1]
        ));
        assert_eq!(backend.clear_all(), 2);
        assert!(backend.sessions().is_empty());
        assert_eq!(backend.clear_all(), 0);
    }

    #[test]
    fn sessions_serialise_to_the_contract_shape() {
        let home = tempfile::tempdir().unwrap();
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let rows = Backend::demo(home.path().to_path_buf(), now).sessions();
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "chat": "iMessage;-;sarah@example.com",
                "who": "sarah@example.com",
                "state": "working",
                "text": "remind me to send the Q3 deck to Omar before Friday",
                "last_activity": "2026-01-02T03:04:05Z",
                "message_count": 1
            })
        );
        let idle = serde_json::to_value(&rows[2]).unwrap();
        assert_eq!(idle["text"], serde_json::Value::Null);
        assert_eq!(idle["state"], "idle");
    }

    #[test]
    fn errors_reach_the_page_as_one_string() {
        let err = CommandError::UnknownSession {
            chat: "iMessage;-;x".to_owned(),
        };
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            serde_json::json!("no session for chat iMessage;-;x")
        );
    }

    #[test]
    fn a_refused_save_changes_nothing() {
        let home = tempfile::tempdir().unwrap();
        let backend = backend(home.path());
        let before = backend.settings();
        let mut bad = settings(home.path());
        bad.allowed_senders.push("not a handle".to_owned());
        let err = backend.save_settings(bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Allowed senders: “not a handle” is not a phone number or e-mail address"
        );
        assert_eq!(backend.settings(), before);

        let saved = backend.save_settings(settings(home.path())).unwrap();
        assert_eq!(saved.settings.vault_path, home.path().display().to_string());
        assert_eq!(backend.settings(), saved);
    }

    #[test]
    fn vault_path_errors_name_the_path() {
        let home = tempfile::tempdir().unwrap();
        let file = home.path().join("note.md");
        std::fs::write(&file, "x").unwrap();
        let missing = home.path().join("nope");
        let cases: Vec<(String, String)> = vec![
            (
                String::new(),
                "Vault folder: choose the folder of your Obsidian vault".to_owned(),
            ),
            (
                "   ".to_owned(),
                "Vault folder: choose the folder of your Obsidian vault".to_owned(),
            ),
            (
                "relative/vault".to_owned(),
                "Vault folder: “relative/vault” is not a full path".to_owned(),
            ),
            (
                missing.display().to_string(),
                format!("Vault folder: “{}” does not exist", missing.display()),
            ),
            (
                file.display().to_string(),
                format!("Vault folder: “{}” is a file, not a folder", file.display()),
            ),
        ];
        for (raw, expected) in cases {
            let mut s = settings(home.path());
            s.vault_path = raw.clone();
            let err = validate_settings(s, home.path()).unwrap_err();
            assert_eq!(err.to_string(), expected, "input {raw:?}");
        }
    }

    #[test]
    fn tilde_expands_to_home() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join("Vault")).unwrap();
        let mut s = settings(home.path());
        s.vault_path = "~/Vault".to_owned();
        let ok = validate_settings(s, home.path()).unwrap();
        assert_eq!(
            ok.vault_path,
            home.path().join("Vault").display().to_string()
        );
    }

    #[test]
    fn handles_are_normalised_or_refused() {
        let accepted = [
            ("+1 (555) 123-4567", "+15551234567"),
            ("  +44 7700 900123 ", "+447700900123"),
            ("15551234567", "+15551234567"),
            ("Sarah@Example.COM", "sarah@example.com"),
            ("名前@例え.jp", "名前@例え.jp"),
            ("😀@example.com ", "😀@example.com"),
        ];
        for (raw, expected) in accepted {
            assert_eq!(normalise_handle(raw).unwrap(), expected, "input {raw:?}");
        }
        let refused = [
            "",
            "hello",
            "+1 555",
            "+١٢٣٤٥٦٧٨٩", // Arabic-Indic digits: not what Messages stores
            "a@b",
            "a@.com",
            "a b@example.com",
            "line\r\nbreak@example.com",
            "sep\u{2028}@example.com",
            "+1234567890123456",
            "𝟙𝟚𝟛𝟜𝟝𝟞𝟟𝟠",
        ];
        for raw in refused {
            assert!(
                normalise_handle(raw).is_err(),
                "input {raw:?} should be refused"
            );
        }
    }

    #[test]
    fn senders_are_deduplicated_and_other_fields_checked() {
        let home = tempfile::tempdir().unwrap();
        let mut s = settings(home.path());
        s.allowed_senders = vec![
            "+1 555 123 4567".into(),
            "+15551234567".into(),
            "A@x.io".into(),
            "a@x.io".into(),
        ];
        assert_eq!(
            validate_settings(s, home.path()).unwrap().allowed_senders,
            vec!["+15551234567", "a@x.io"]
        );

        type Edit = fn(&mut Settings);
        let cases: [(Edit, &str); 5] = [
            (
                |s| s.model = " ".into(),
                "Model: enter a model name, for example claude-sonnet-4-5",
            ),
            (
                |s| s.model = "claude sonnet".into(),
                "Model: “claude sonnet” is not a model name",
            ),
            (
                |s| s.session_timeout_minutes = 0,
                "Session timeout: 0 minutes is out of range: use 1 to 1440",
            ),
            (
                |s| s.session_timeout_minutes = 1441,
                "Session timeout: 1441 minutes is out of range: use 1 to 1440",
            ),
            (
                |s| s.allowed_senders = vec!["\u{202e}+15551234567".into()],
                "Allowed senders: “\u{202e}+15551234567” is not a phone number or e-mail address",
            ),
        ];
        for (edit, expected) in cases {
            let mut s = settings(home.path());
            edit(&mut s);
            assert_eq!(
                validate_settings(s, home.path()).unwrap_err().to_string(),
                expected
            );
        }
    }

    #[test]
    fn api_key_is_write_only() {
        let home = tempfile::tempdir().unwrap();
        let backend = backend(home.path());
        assert!(!backend.settings().api_key_set);
        for bad in ["", "  ", "sk-ant key", "sk-ant\nkey"] {
            assert!(backend.set_api_key(bad).is_err(), "{bad:?}");
        }
        assert!(!backend.settings().api_key_set);
        backend.set_api_key(" sk-ant-123 ").unwrap();
        let json = serde_json::to_string(&backend.settings()).unwrap();
        assert!(json.contains("\"api_key_set\":true"), "{json}");
        assert!(!json.contains("sk-ant-123"), "{json}");
        backend.clear_api_key();
        assert!(!backend.settings().api_key_set);
    }

    #[test]
    fn allowing_a_stranger_moves_them_to_the_allowlist() {
        let home = tempfile::tempdir().unwrap();
        let backend = backend(home.path());
        let strangers: Vec<String> = backend
            .recent_strangers()
            .into_iter()
            .map(|s| s.handle)
            .collect();
        assert_eq!(strangers, vec!["+15559876543", "+447700900123"]);
        let saved = backend.allow_sender("+1 555 987 6543").unwrap();
        assert!(
            saved
                .settings
                .allowed_senders
                .contains(&"+15559876543".to_owned())
        );
        let strangers: Vec<String> = backend
            .recent_strangers()
            .into_iter()
            .map(|s| s.handle)
            .collect();
        assert_eq!(strangers, vec!["+447700900123"]);
        assert!(backend.allow_sender("nobody").is_err());
    }

    #[test]
    fn status_line_follows_pause_setup_and_count() {
        let home = tempfile::tempdir().unwrap();
        let backend = backend(home.path());
        // No chat.db under this home: Full Disk Access is the first failing check.
        assert_eq!(backend.status().line, "Needs setup: Full Disk Access");
        backend.set_paused(true);
        assert_eq!(
            backend.status(),
            Status {
                line: "Paused".into(),
                paused: true
            }
        );
        backend.set_paused(false);
        assert!(!backend.status().paused);
        assert_eq!(running_line(0), "Running · 0 sessions");
        assert_eq!(running_line(1), "Running · 1 session");
        assert_eq!(running_line(2), "Running · 2 sessions");
    }

    #[test]
    fn setup_checks_read_the_disk() {
        let home = tempfile::tempdir().unwrap();
        let backend = backend(home.path());
        let checks = backend.setup_checks();
        let ids: Vec<&str> = checks.iter().map(|c| c.id).collect();
        assert_eq!(
            ids,
            [
                "full_disk_access",
                "automation",
                "vault",
                "api_key",
                "senders"
            ]
        );
        assert_eq!(checks[0].pane, Some(Pane::FullDiskAccess));
        assert!(
            !checks[2].ok,
            "the demo vault does not exist under a fresh home"
        );

        let messages = home.path().join("Library/Messages");
        std::fs::create_dir_all(&messages).unwrap();
        std::fs::write(messages.join("chat.db"), b"SQLite format 3\0").unwrap();
        backend.save_settings(settings(home.path())).unwrap();
        backend.set_api_key("sk-ant-1").unwrap();
        let checks = backend.setup_checks();
        let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.id).collect();
        assert_eq!(failing, ["automation"]);
        assert_eq!(checks[0].fix, None);
        assert!(!home.path().join(".second-brain-write-check").exists());
        let json = serde_json::to_value(&checks[1]).unwrap();
        assert_eq!(json["pane"], "automation");
    }

    #[test]
    fn panes_open_the_privacy_urls() {
        assert_eq!(
            Pane::FullDiskAccess.url(),
            "x-apple.systempreferences:com.apple.preference.security?Privacy_AllFiles"
        );
        assert_eq!(
            Pane::Automation.url(),
            "x-apple.systempreferences:com.apple.preference.security?Privacy_Automation"
        );
        let pane: Pane = serde_json::from_str("\"full_disk_access\"").unwrap();
        assert_eq!(pane, Pane::FullDiskAccess);
    }
}
