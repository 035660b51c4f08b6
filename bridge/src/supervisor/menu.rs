//! The menu-bar menu as data, for any front end: its item ids, what a click on each does
//! ([`action_for`], one table), and the wording of its changing items. The app's `tray`
//! builds the native menu from these and carries the actions out.
//!
//! Invariants: every id is a constant below and unique; every clickable id has exactly one
//! action; the status line and the icon's own id have none.

use super::pages::Page;
use crate::login_item::State;

// The menu's ids: the icon's, the (disabled) status line's, then one per item with an action
// (`action_for`), in menu order.
/// The menu-bar icon.
pub const TRAY_ID: &str = "second-brain";
/// The (disabled) status line.
pub const STATUS: &str = "status";
/// Sessions….
pub const SESSIONS: &str = "sessions";
/// Settings….
pub const SETTINGS: &str = "settings";
/// Setup Checklist….
pub const SETUP: &str = "setup";
/// Check for Updates….
pub const UPDATES: &str = "check-for-updates";
/// Pause / Resume.
pub const PAUSE: &str = "pause";
/// Launch at Login.
pub const LOGIN: &str = "launch-at-login";
/// Open Vault.
pub const OPEN_VAULT: &str = "open-vault";
/// Open Logs.
pub const OPEN_LOGS: &str = "open-logs";
/// Quit Second Brain.
pub const QUIT: &str = "quit";

/// What a menu click does: show (create or focus) a page's window, flip the pause or Launch
/// at Login, open the vault or the logs folder (in Finder on macOS), quit for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MenuAction {
    /// Shows the page's window ("Check for Updates…" shows the update page, which checks).
    Show(Page),
    /// Pause or Resume.
    TogglePause,
    /// Launch at Login.
    ToggleLogin,
    /// Open Vault.
    OpenVault,
    /// Open Logs.
    OpenLogs,
    /// Quit.
    Quit,
}

/// What a click on each item does.
pub const ACTIONS: [(&str, MenuAction); 9] = [
    (SESSIONS, MenuAction::Show(Page::Sessions)),
    (SETTINGS, MenuAction::Show(Page::Settings)),
    (SETUP, MenuAction::Show(Page::Setup)),
    (UPDATES, MenuAction::Show(Page::Update)),
    (PAUSE, MenuAction::TogglePause),
    (LOGIN, MenuAction::ToggleLogin),
    (OPEN_VAULT, MenuAction::OpenVault),
    (OPEN_LOGS, MenuAction::OpenLogs),
    (QUIT, MenuAction::Quit),
];

/// The action of a menu id; `None` for the status line and unknown ids.
pub fn action_for(id: &str) -> Option<MenuAction> {
    ACTIONS
        .into_iter()
        .find(|(known, _)| *known == id)
        .map(|(_, action)| action)
}

/// The text of Launch at Login for what launchd will do; where that cannot be read, the item
/// says so (and shows no check mark).
pub fn login_text(state: &State) -> &'static str {
    match state {
        State::Off | State::On => "Launch at Login",
        State::SwitchedOff => "Launch at Login (off in Login Items)",
        State::Unknown(reason) => {
            tracing::warn!(%reason, "cannot tell whether launchd will start the app at login");
            "Launch at Login (state unknown)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clickable_id_has_one_action() {
        let expected = [
            (SESSIONS, MenuAction::Show(Page::Sessions)),
            (SETTINGS, MenuAction::Show(Page::Settings)),
            (SETUP, MenuAction::Show(Page::Setup)),
            (UPDATES, MenuAction::Show(Page::Update)),
            (PAUSE, MenuAction::TogglePause),
            (LOGIN, MenuAction::ToggleLogin),
            (OPEN_VAULT, MenuAction::OpenVault),
            (OPEN_LOGS, MenuAction::OpenLogs),
            (QUIT, MenuAction::Quit),
        ];
        for (id, action) in expected {
            assert_eq!(action_for(id), Some(action), "{id}");
        }
        for id in [STATUS, TRAY_ID, "", "Quit", "quit ", "😀"] {
            assert_eq!(action_for(id), None, "{id:?}");
        }
        let mut ids: Vec<&str> = ACTIONS.iter().map(|(id, _)| *id).collect();
        ids.extend([STATUS, TRAY_ID]);
        let all = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all, "menu ids are unique");
    }

    #[test]
    fn launch_at_login_says_what_launchd_will_do() {
        assert_eq!(login_text(&State::On), "Launch at Login");
        assert_eq!(login_text(&State::Off), "Launch at Login");
        assert_eq!(
            login_text(&State::SwitchedOff),
            "Launch at Login (off in Login Items)"
        );
        let unknown = State::Unknown("launchctl failed".to_owned());
        assert_eq!(login_text(&unknown), "Launch at Login (state unknown)");
    }
}
