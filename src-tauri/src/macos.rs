//! The few macOS-only calls: no Dock icon, and opening System Settings panes.
//!
//! Invariants: compiled on macOS only; nothing here decides anything, it only asks the OS.
//! Launch at Login uses the user LaunchAgent of `login_item` rather than `SMAppService`:
//! `SMAppService.mainApp` cannot express "restart after a crash but not after Quit".

use std::process::Command;

use tauri::{ActivationPolicy, AppHandle, Runtime};

/// Menu-bar app: no Dock icon, no app menu (the bundle's `LSUIElement` says the same).
pub fn become_accessory<R: Runtime>(app: &AppHandle<R>) {
    if let Err(err) = app.set_activation_policy(ActivationPolicy::Accessory) {
        tracing::warn!(cause = %err, "could not hide the Dock icon");
    }
}

/// Opens a URL or path with `open` (Finder for folders, System Settings for
/// `x-apple.systempreferences:` URLs).
pub fn open(target: &str) -> std::io::Result<std::process::Child> {
    Command::new("/usr/bin/open").arg(target).spawn()
}
