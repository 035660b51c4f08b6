//! Generates the Tauri context and one `allow-<command>` permission per command, so the
//! capability files can grant exactly the commands each page uses.

const COMMANDS: &[&str] = &[
    "list_sessions",
    "clear_session",
    "clear_all_sessions",
    "get_settings",
    "save_settings",
    "set_api_key",
    "clear_api_key",
    "pick_vault_folder",
    "recent_strangers",
    "allow_sender",
    "recent_groups",
    "allow_group",
    "setup_checks",
    "open_settings_pane",
    "status",
    "set_paused",
    "check_for_updates",
    "install_update",
    "list_reminders",
    "cancel_reminder",
];

fn main() {
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri-build: generating the app context failed");
}
