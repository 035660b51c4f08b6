//! The commands the pages in `ui/` call: thin translations between the page's JSON and the
//! bridge's [`Supervisor`] (the shapes are `bridge::supervisor::pages`).
//!
//! Invariants: every command returns `Result<T, CommandError>` and `CommandError` reaches the
//! page as one plain sentence; validation is the bridge's (`Settings::save`), so a refused save
//! writes nothing; the API key is write-only (the pages learn only whether one is set);
//! changes reach the pages as events (`pages::event`) from the supervisor's change feed. When
//! the app could not start its bridge at all ([`Attention`]), the status and checklist say why.

use std::path::PathBuf;
use std::sync::Arc;

use bridge::doctor::{Check, Pane};
use bridge::login_item::LoginItem;
use bridge::reminders::Reminder;
use bridge::status::{SeenGroup, Stranger};
use bridge::supervisor::pages::{SessionRow, SettingsForm, SettingsView, settings_from_form};
use bridge::supervisor::updates::{Outcome, UpdateView, Updates};
use bridge::supervisor::{StatusLine, Supervisor, SupervisorError};
use serde::Serialize;
use tauri::{AppHandle, Manager, Runtime};

/// Why a command failed. Serialised as its message, so the page shows a sentence.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The supervisor refused or failed.
    #[error(transparent)]
    Bridge(#[from] SupervisorError),
    /// The folder picker could not be shown.
    #[error("the folder picker failed: {0}")]
    Picker(String),
}

impl Serialize for CommandError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// Why the app could not start its bridge, when it could not; kept in the app state.
#[derive(Debug, Clone)]
pub struct Attention(pub String);

/// What the shell lends the commands and the tray: set up once by `run_app`, fakes in tests.
pub struct Hooks {
    /// Shows the native folder picker; blocks until the user chose (`Some`) or cancelled.
    pub pick_folder: Arc<dyn Fn() -> Result<Option<PathBuf>, String> + Send + Sync>,
    /// Shows a sentence to the user (a menu action that failed).
    pub alert: Box<dyn Fn(&str) + Send + Sync>,
}

type Res<T> = Result<T, CommandError>;
type Bridge<'a> = tauri::State<'a, Supervisor>;

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
pub async fn pick_vault_folder(hooks: tauri::State<'_, Hooks>) -> Res<Option<String>> {
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

/// Group chats that texted recently but are not allowed, newest first.
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
    let attention = app.try_state::<Attention>().map(|a| a.0.clone());
    let bridge = app.try_state::<Supervisor>().map(|b| b.inner().clone());
    let login = app.try_state::<LoginItem>().map(|l| l.inner().clone());
    Ok(bridge::supervisor::app_checks(attention, bridge, login).await)
}

/// Opens the System Settings pane that fixes a failing check (a pane of another name is
/// refused when the arguments are read).
#[tauri::command]
pub fn open_settings_pane(bridge: Bridge<'_>, pane: Pane) -> Res<()> {
    Ok(bridge.open_pane(pane)?)
}

/// The status line and whether the bridge is paused.
#[tauri::command]
pub fn status<R: Runtime>(app: AppHandle<R>) -> Res<StatusLine> {
    Ok(status_of(&app))
}

/// The status line of the app: the bridge's, or why the app could not start.
pub fn status_of<R: Runtime>(app: &AppHandle<R>) -> StatusLine {
    let reason = app.try_state::<Attention>().map(|a| a.0.clone());
    StatusLine::of_app(app.try_state::<Supervisor>().as_deref(), reason.as_deref())
}

/// The pending reminders, soonest first (the Sessions window's Upcoming list).
#[tauri::command]
pub async fn list_reminders(bridge: Bridge<'_>) -> Res<Vec<Reminder>> {
    Ok(bridge.reminders().await?)
}

/// Removes the reminder from the note at `path`; the note says so when this returns.
#[tauri::command]
pub async fn cancel_reminder(bridge: Bridge<'_>, path: String) -> Res<()> {
    Ok(bridge.cancel_reminder(&path).await?)
}

/// Pauses or resumes reading texts.
#[tauri::command]
pub fn set_paused(bridge: Bridge<'_>, paused: bool) -> Res<StatusLine> {
    Ok(bridge.set_paused(paused))
}

/// Asks the update endpoint for a newer version (the update page, when it opens).
#[tauri::command]
pub async fn check_for_updates(updates: tauri::State<'_, Arc<Updates>>) -> Res<UpdateView> {
    Ok(updates.check().await.into())
}

/// Installs the version found, once the bridge has drained, then restarts into it (through
/// `RunEvent::Exit`, where the single-instance lock is released first,
/// tauri-plugin-single-instance-2.4.5/src/platform_impl/macos.rs:48-50; on macOS tauri reads
/// the new bundle's Info.plist for its binary, tauri-2.11.6/src/process.rs:74-124).
#[tauri::command]
pub async fn install_update<R: Runtime>(
    app: AppHandle<R>,
    updates: tauri::State<'_, Arc<Updates>>,
) -> Res<UpdateView> {
    let outcome = updates.install().await;
    if matches!(outcome, Outcome::Installed { .. }) {
        app.request_restart();
    }
    Ok(outcome.into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
