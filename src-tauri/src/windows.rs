//! The three windows (sessions, settings, setup): created on demand, brought to the front and
//! focused whenever they are shown.
//!
//! Invariants: there is at most one window per kind, its label is the kind's [`label`]; closing
//! a window destroys it (nothing is kept hidden in memory); closing the last window never quits
//! the app (see `keeps_running` in `lib.rs`); only Quit does.
//!
//! [`label`]: WindowKind::label

use tauri::{Manager, Runtime, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

/// A window the app can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The active conversations.
    Sessions,
    /// Vault, API key, model, allowed senders, timeout.
    Settings,
    /// The setup checklist.
    Setup,
}

impl WindowKind {
    /// Every kind, in menu order.
    pub const ALL: [WindowKind; 3] = [
        WindowKind::Sessions,
        WindowKind::Settings,
        WindowKind::Setup,
    ];

    /// The window label; also what `SECOND_BRAIN_OPEN_WINDOW` and the capabilities use.
    pub fn label(self) -> &'static str {
        match self {
            WindowKind::Sessions => "sessions",
            WindowKind::Settings => "settings",
            WindowKind::Setup => "setup",
        }
    }

    /// The kind with this label.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.label() == label)
    }

    /// The window's title and logical width and height; its page is `ui/<label>.html`.
    fn looks(self) -> (&'static str, f64, f64) {
        match self {
            WindowKind::Sessions => ("Sessions — Second Brain", 640.0, 460.0),
            WindowKind::Settings => ("Settings — Second Brain", 560.0, 700.0),
            WindowKind::Setup => ("Set Up Second Brain", 560.0, 560.0),
        }
    }
}

/// Shows the window of `kind` (creating it when it is not open) and brings it to the front.
///
/// Every window is focused with `set_focus`, also a new one: on macOS `.focused(true)` only
/// makes the window key (`makeKeyAndOrderFront`, tao-0.35.3/src/platform_impl/macos/window.rs:633),
/// while `set_focus` also activates the app (`activateIgnoringOtherApps`,
/// tao-0.35.3/src/platform_impl/macos/util/async.rs:231-236), which a menu-bar app is not when
/// its menu is clicked; without it the window opens behind the app in front.
pub fn show<R: Runtime, M: Manager<R>>(
    manager: &M,
    kind: WindowKind,
) -> tauri::Result<WebviewWindow<R>> {
    let window = match manager.get_webview_window(kind.label()) {
        Some(window) => {
            // Best effort: a window that cannot unminimize is still shown.
            let _ = window.unminimize();
            window.show()?;
            window
        }
        None => {
            let (title, width, height) = kind.looks();
            let page = format!("{}.html", kind.label());
            let window = WebviewWindowBuilder::new(manager, kind.label(), WebviewUrl::App(page.into()))
            .title(title)
            .inner_size(width, height)
            .min_inner_size(420.0, 320.0)
            .center()
            .focused(true)
            .build()?;
            tracing::debug!(window = kind.label(), "window created");
            window
        }
    };
    // Best effort: a window that cannot take focus is still shown.
    if let Err(err) = window.set_focus() {
        tracing::debug!(cause = %err, window = kind.label(), "window not focused");
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        for kind in WindowKind::ALL {
            assert_eq!(WindowKind::from_label(kind.label()), Some(kind));
        }
        for other in ["", "Sessions", "main", "sessions ", "séssions"] {
            assert_eq!(WindowKind::from_label(other), None, "{other:?}");
        }
    }
}
