//! The few macOS-only calls: asking launchd about the login item, and `open`.
//!
//! Invariants: compiled on macOS only; nothing here decides anything, it only asks the OS.
//! Launch at Login uses the user LaunchAgent of `login_item` rather than `SMAppService`:
//! `SMAppService.mainApp` cannot express "restart after a crash but not after Quit".

use std::process::Command;

/// `launchctl print-disabled gui/<uid>`: the services of this user's GUI domain that are
/// switched off (launchctl(1): "print-disabled <domain-target>"; `gui/<uid>` is the domain
/// of the logged-in user). The error is a sentence for the menu.
pub fn print_disabled() -> Result<String, String> {
    // SAFETY: getuid(2) has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let output = Command::new("/bin/launchctl")
        .arg("print-disabled")
        .arg(format!("gui/{uid}"))
        .output()
        .map_err(|err| format!("launchctl did not run: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "launchctl print-disabled failed ({})",
            output.status
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Opens a URL or path with `open` (Finder for folders, System Settings for
/// `x-apple.systempreferences:` URLs).
pub fn open(target: &str) -> std::io::Result<std::process::Child> {
    Command::new("/usr/bin/open").arg(target).spawn()
}
