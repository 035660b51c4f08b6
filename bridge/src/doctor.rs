//! The setup checklist: what must be true before texts can be handled, each failing item
//! with how to fix it. Used by `doctor` and by the app's setup window, which adds the two items
//! only the app can know ([`startup_failed`], [`login_item_switched_off`]).

use serde::{Deserialize, Serialize};

use crate::chatdb::{self, ChatDb};
use crate::config::Config;
use crate::sender::{SendError, Sender};
use crate::vault::Vault;

/// A System Settings pane that fixes a failing check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pane {
    /// Privacy & Security › Full Disk Access.
    FullDiskAccess,
    /// Privacy & Security › Automation.
    Automation,
}

impl Pane {
    /// The URL that opens the pane on macOS.
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

/// One item of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier.
    pub id: &'static str,
    /// What is checked.
    pub label: &'static str,
    /// Whether it passes.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it, when failing.
    pub fix: Option<String>,
    /// The pane that fixes it, if any.
    pub pane: Option<Pane>,
}

impl Check {
    fn pass(id: &'static str, label: &'static str, detail: String) -> Check {
        Check {
            id,
            label,
            ok: true,
            detail,
            fix: None,
            pane: None,
        }
    }

    fn fail(
        id: &'static str,
        label: &'static str,
        detail: String,
        fix: &str,
        pane: Option<Pane>,
    ) -> Check {
        Check {
            id,
            label,
            ok: false,
            detail,
            fix: Some(fix.to_string()),
            pane,
        }
    }
}

/// Runs every check (blocking: opens files).
pub fn checks(config: &Config) -> Vec<Check> {
    vec![
        chat_db(config),
        vault(config),
        api_key(config),
        senders(config),
    ]
}

/// Whether Messages accepts Apple Events from this app (a harmless AppleScript probe).
pub async fn automation(sender: &Sender) -> Check {
    const ID: &str = "automation";
    const LABEL: &str = "Messages automation allowed";
    match sender.probe().await {
        Ok(()) => Check::pass(ID, LABEL, "Messages answers AppleScript".into()),
        Err(err @ SendError::AutomationDenied { .. }) => Check::fail(
            ID,
            LABEL,
            err.to_string(),
            "Allow Second Brain to control Messages in System Settings › Privacy & Security › Automation.",
            Some(Pane::Automation),
        ),
        Err(err) => Check::fail(
            ID,
            LABEL,
            err.to_string(),
            "Check that Messages is installed and can open.",
            None,
        ),
    }
}

/// The item shown instead of the others when the configuration itself does not resolve.
pub fn settings_invalid(detail: String) -> Check {
    Check::fail(
        "settings",
        "Settings valid",
        detail,
        "Correct it in Settings (or the environment variable it names).",
        None,
    )
}

/// The item shown first when the app could not start its bridge at all.
pub fn startup_failed(reason: String) -> Check {
    Check::fail(
        "startup",
        "Second Brain started",
        reason,
        "Quit Second Brain and open it again; the logs (Open Logs) say more.",
        None,
    )
}

/// The item shown when the user switched the login item off in System Settings.
pub fn login_item_switched_off() -> Check {
    Check::fail(
        "login_item",
        "Launch at Login allowed",
        "switched off in System Settings › General › Login Items".to_owned(),
        "Switch Second Brain on under Allow in the Background in System Settings › General › Login Items.",
        None,
    )
}

fn chat_db(config: &Config) -> Check {
    const ID: &str = "chat_db";
    const LABEL: &str = "Messages database readable (Full Disk Access)";
    let path = config.chat_db.display().to_string();
    match ChatDb::open(&config.chat_db).and_then(|db| db.newest()) {
        Ok(_) => Check::pass(ID, LABEL, format!("reading {path}")),
        Err(chatdb::Error::NotFound { .. }) => Check::fail(
            ID,
            LABEL,
            format!("{path} does not exist"),
            "Open Messages and sign in to the iMessage account Second Brain should answer.",
            None,
        ),
        Err(chatdb::Error::PermissionDenied { .. }) => Check::fail(
            ID,
            LABEL,
            format!("{path} cannot be read"),
            "Give Second Brain Full Disk Access in System Settings › Privacy & Security › Full Disk Access.",
            Some(Pane::FullDiskAccess),
        ),
        Err(err) => Check::fail(
            ID,
            LABEL,
            err.to_string(),
            "Check that Messages is set up on this Mac.",
            None,
        ),
    }
}

fn vault(config: &Config) -> Check {
    const ID: &str = "vault";
    const LABEL: &str = "Vault folder writable";
    let Some(root) = &config.vault else {
        return Check::fail(
            ID,
            LABEL,
            "no vault folder chosen".into(),
            "Choose your Obsidian vault folder in Settings (or set VAULT_PATH).",
            None,
        );
    };
    match Vault::new(root.clone()).check_writable() {
        Ok(layout) if !layout.outside.is_empty() => Check::fail(
            ID,
            LABEL,
            layout.problems().join("; "),
            "Make each of those a real folder inside the vault (or remove the link).",
            None,
        ),
        Ok(_) => Check::pass(ID, LABEL, format!("writing notes to {}", root.display())),
        Err(err) => Check::fail(
            ID,
            LABEL,
            err.to_string(),
            "Choose a vault folder you can write to.",
            None,
        ),
    }
}

fn api_key(config: &Config) -> Check {
    const ID: &str = "api_key";
    const LABEL: &str = "API key present";
    match config.auth {
        Some(_) => Check::pass(ID, LABEL, "an API key is set".into()),
        None => Check::fail(
            ID,
            LABEL,
            "no API key".into(),
            "Set your Anthropic API key in Settings (stored in the Keychain), or ANTHROPIC_API_KEY.",
            None,
        ),
    }
}

fn senders(config: &Config) -> Check {
    const ID: &str = "allowed_senders";
    const LABEL: &str = "At least one allowed sender";
    let n = config.allowed_senders.iter().count();
    if n > 0 {
        let who: Vec<&str> = config.allowed_senders.iter().map(|h| h.as_str()).collect();
        Check::pass(ID, LABEL, who.join(", "))
    } else {
        Check::fail(
            ID,
            LABEL,
            "nobody is allowed yet; texts are ignored".into(),
            "Add your phone number or email in Settings (or ALLOWED_SENDERS).",
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use std::collections::HashMap;

    fn config(vars: &[(&str, String)]) -> Config {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Config::resolve(&Overrides::default(), |k| map.get(k).cloned(), || None).unwrap()
    }

    #[test]
    fn a_fresh_machine_fails_every_check_with_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&[
            ("SECOND_BRAIN_DATA_DIR", dir.path().display().to_string()),
            (
                "CHAT_DB_PATH",
                dir.path().join("none/chat.db").display().to_string(),
            ),
        ]);
        let checks = checks(&c);
        let ids: Vec<_> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids, ["chat_db", "vault", "api_key", "allowed_senders"]);
        for check in &checks {
            assert!(!check.ok && check.fix.is_some(), "{check:?}");
        }
        assert!(
            checks[0].detail.contains("does not exist"),
            "{:?}",
            checks[0]
        );
    }

    #[test]
    fn a_complete_setup_passes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(include_str!("../../tests/data/chatdb-schema.sql"))
            .unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        let c = config(&[
            ("SECOND_BRAIN_DATA_DIR", dir.path().display().to_string()),
            ("CHAT_DB_PATH", db.display().to_string()),
            ("VAULT_PATH", vault.display().to_string()),
            ("ANTHROPIC_API_KEY", "sk-x".into()),
            ("ALLOWED_SENDERS", "+15551234567".into()),
        ]);
        let failing: Vec<_> = checks(&c).into_iter().filter(|c| !c.ok).collect();
        assert!(failing.is_empty(), "{failing:?}");
    }

    #[test]
    fn panes_open_the_privacy_settings() {
        assert!(Pane::FullDiskAccess.url().ends_with("?Privacy_AllFiles"));
        assert!(Pane::Automation.url().ends_with("?Privacy_Automation"));
    }

    #[test]
    fn panes_are_read_by_the_name_checks_give_them() {
        let named = |name: &str| serde_json::from_value::<Pane>(serde_json::json!(name)).ok();
        for pane in [Pane::FullDiskAccess, Pane::Automation] {
            assert_eq!(
                named(serde_json::to_value(pane).unwrap().as_str().unwrap()),
                Some(pane)
            );
        }
        assert_eq!(named("full_disk_access"), Some(Pane::FullDiskAccess));
        for other in [
            "",
            "camera",
            "Automation",
            "automation ",
            "\u{202e}automation",
        ] {
            assert_eq!(named(other), None, "{other:?}");
        }
    }
}
