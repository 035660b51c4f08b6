//! The app's pages and what they exchange with the supervisor, in the shapes the pages read:
//! which pages there are ([`Page`]), the events they listen to ([`event`]), a session as a
//! row of the sessions page, and the settings page's form in both directions.
//!
//! Invariants: the API key never appears here (the form only says whether one is set); a form
//! becomes a settings file only through [`settings_from_form`], which normalises what the page
//! typed (blank is unset, handles in normal form, no duplicates) and keeps every setting the
//! page does not edit; validation stays [`Settings::save`]'s, so a refused form writes nothing.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Change, Effective};
use crate::allowlist::Handle;
use crate::anthropic::DEFAULT_MODEL;
use crate::config::{Config, ConfigError, Origin, Setting, Settings};
use crate::sessions::{Session, StateKind};

/// One of the app's pages, `ui/<label>.html`, each shown in a window of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The active conversations.
    Sessions,
    /// Vault, API key, model, allowed senders and groups, timeout, SMS.
    Settings,
    /// The setup checklist.
    Setup,
    /// "Check for Updates…": up to date, or the new version, its notes and Install.
    Update,
}

impl Page {
    /// Every page, in menu order.
    pub const ALL: [Page; 4] = [Page::Sessions, Page::Settings, Page::Setup, Page::Update];

    /// The page's name: its file, its window's label, what `SECOND_BRAIN_OPEN_WINDOW` and the
    /// capabilities call it.
    pub fn label(self) -> &'static str {
        match self {
            Page::Sessions => "sessions",
            Page::Settings => "settings",
            Page::Setup => "setup",
            Page::Update => "update",
        }
    }

    /// The page with this label.
    pub fn from_label(label: &str) -> Option<Page> {
        Page::ALL.into_iter().find(|page| page.label() == label)
    }

    /// The page a switch (`variable`, set to `value`) names; a value naming none is logged
    /// and ignored.
    pub fn named_by(variable: &str, value: Option<String>) -> Option<Page> {
        let label = value?;
        let page = Page::from_label(&label);
        if page.is_none() {
            tracing::warn!(value = %label, "{variable} names no window; ignored");
        }
        page
    }

    /// Its window's title and logical width and height.
    pub fn looks(self) -> (&'static str, f64, f64) {
        match self {
            Page::Sessions => ("Sessions — Second Brain", 640.0, 460.0),
            Page::Settings => ("Settings — Second Brain", 560.0, 700.0),
            Page::Setup => ("Set Up Second Brain", 560.0, 560.0),
            Page::Update => ("Software Update — Second Brain", 480.0, 360.0),
        }
    }
}

/// The event the pages listen to for `change`; it has no payload: they fetch again.
pub fn event(change: Change) -> &'static str {
    match change {
        Change::Sessions => "sessions-changed",
        Change::Status => "status-changed",
        Change::Update => "update-changed",
        Change::Reminders => "reminders-changed",
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
            text: session.shown_text().map(str::to_owned),
            state: session.state.kind(),
            chat: session.chat.guid,
            who: session.sender,
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
    /// Group chats (by guid) whose allowed members are answered.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// The morning digest: the switch, the time (`HH:MM`) and the recipient.
    #[serde(default)]
    pub digest: crate::digest::DigestSettings,
    /// "Check for updates automatically" (once a day, never at start-up; off by default).
    #[serde(default)]
    pub check_updates: bool,
    /// Whether the model may read the pages texts link to.
    #[serde(default)]
    pub read_linked_pages: bool,
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
                settings,
                api_key_set,
            } => view_of_file(settings, api_key_set),
        }
    }
}

fn view_of_file(file: Settings, api_key_set: bool) -> SettingsView {
    SettingsView {
        settings: SettingsForm {
            vault_path: path_text(file.vault_path.as_ref()),
            model: file.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
            allowed_senders: file.allowed_senders,
            session_timeout_minutes: file
                .session_timeout_minutes
                .map_or(60, |m| u32::try_from(m).unwrap_or(u32::MAX)),
            allow_sms: file.allow_sms,
            allowed_groups: file.allowed_groups,
            digest: file.digest,
            check_updates: file.check_updates,
            read_linked_pages: file.read_linked_pages,
        },
        api_key_set,
    }
}

fn view_of_config(config: &Config) -> SettingsView {
    let minutes = config.session_timeout.as_millis().div_ceil(60_000);
    SettingsView {
        settings: SettingsForm {
            vault_path: path_text(config.vault.as_ref()),
            model: config.model.clone(),
            allowed_senders: config
                .allowed_senders
                .iter()
                .map(|h| h.as_str().to_owned())
                .collect(),
            session_timeout_minutes: u32::try_from(minutes).unwrap_or(u32::MAX).max(1),
            allow_sms: config.allow_sms,
            allowed_groups: config.allowed_groups.clone(),
            digest: config
                .digest
                .as_ref()
                .map(crate::digest::DigestSettings::from)
                .unwrap_or_default(),
            check_updates: config.check_updates,
            read_linked_pages: config.read_linked_pages,
        },
        api_key_set: config.auth.is_some(),
    }
}

fn path_text(path: Option<&PathBuf>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// The page's form as a settings file: blank fields unset, senders in normal form and groups
/// trimmed, both without duplicates, everything the page does not edit (the API base URL)
/// kept from `file`.
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
    let mut groups: Vec<String> = Vec::new();
    for guid in form.allowed_groups.iter().filter_map(|g| text(g.clone())) {
        if !groups.contains(&guid) {
            groups.push(guid);
        }
    }
    Ok(Settings {
        vault_path: text(form.vault_path).map(PathBuf::from),
        model: text(form.model),
        allowed_senders: senders,
        session_timeout_minutes: Some(u64::from(form.session_timeout_minutes)),
        allow_sms: form.allow_sms,
        allowed_groups: groups,
        digest: form.digest,
        check_updates: form.check_updates,
        read_linked_pages: form.read_linked_pages,
        ..file
    })
}

#[cfg(test)]
mod tests {
    use crate::chatdb::Chat;
    use crate::sessions::SessionState;
    use crate::supervisor::SupervisorError;

    use super::*;

    #[test]
    fn labels_round_trip() {
        for page in Page::ALL {
            assert_eq!(Page::from_label(page.label()), Some(page));
        }
        for other in ["", "Sessions", "main", "sessions ", "séssions"] {
            assert_eq!(Page::from_label(other), None, "{other:?}");
        }
    }

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
        session.state = SessionState::Waiting {
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
        session.state = SessionState::Waiting {
            original: "buy milk".to_owned(),
            question: None,
        };
        assert_eq!(
            SessionRow::from(session.clone()).text.as_deref(),
            Some("buy milk")
        );
        session.state = SessionState::Idle;
        let idle = serde_json::to_value(SessionRow::from(session)).unwrap();
        assert_eq!(idle["text"], serde_json::Value::Null);
        assert_eq!(idle["state"], "idle");
    }

    #[test]
    fn the_form_becomes_a_settings_file() {
        let file = Settings {
            base_url: Some("http://127.0.0.1:9".to_owned()),
            model: Some("old".to_owned()),
            allowed_groups: vec!["iMessage;+;chat1".to_owned()],
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
            allowed_groups: vec![
                " iMessage;+;chat2 ".to_owned(),
                "".to_owned(),
                "iMessage;+;chat2".to_owned(),
            ],
            digest: Default::default(),
            check_updates: true,
            read_linked_pages: true,
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
                // The page removed chat1 and added chat2.
                allowed_groups: vec!["iMessage;+;chat2".to_owned()],
                check_updates: true,
                read_linked_pages: true,
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

    /// The page of a version without the groups field sends none: that reads as no groups.
    #[test]
    fn a_form_without_groups_reads_as_none() {
        let form: SettingsForm = serde_json::from_value(serde_json::json!({
            "vault_path": "", "model": "", "allowed_senders": [], "session_timeout_minutes": 5
        }))
        .unwrap();
        assert!(form.allowed_groups.is_empty() && !form.allow_sms && !form.check_updates);
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
            let config = Config::resolve(
                &crate::config::Overrides::default(),
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

    #[test]
    fn the_file_shows_defaults_where_it_is_silent() {
        let view = view_of_file(Settings::default(), true);
        assert_eq!(view.settings.model, DEFAULT_MODEL);
        assert_eq!(view.settings.session_timeout_minutes, 60);
        assert_eq!(view.settings.vault_path, "");
        assert!(view.api_key_set);
    }
}
