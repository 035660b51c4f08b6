//! The three windows (sessions, settings, setup): created on demand, focused when already open.
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

    /// The page in `ui/`.
    fn page(self) -> &'static str {
        match self {
            WindowKind::Sessions => "sessions.html",
            WindowKind::Settings => "settings.html",
            WindowKind::Setup => "setup.html",
        }
    }

    fn title(self) -> &'static str {
        match self {
            WindowKind::Sessions => "Sessions — Second Brain",
            WindowKind::Settings => "Settings — Second Brain",
            WindowKind::Setup => "Set Up Second Brain",
        }
    }

    /// Logical width and height.
    fn size(self) -> (f64, f64) {
        match self {
            WindowKind::Sessions => (640.0, 460.0),
            WindowKind::Settings => (560.0, 700.0),
            WindowKind::Setup => (560.0, 560.0),
        }
    }
}

/// Shows the window of `kind`: focuses it when it is open, creates it otherwise.
pub fn show<R: Runtime, M: Manager<R>>(
    manager: &M,
    kind: WindowKind,
) -> tauri::Result<WebviewWindow<R>> {
    if let Some(window) = manager.get_webview_window(kind.label()) {
        // Best effort: a window that cannot unminimize or take focus is still shown.
        let _ = window.unminimize();
        window.show()?;
        let _ = window.set_focus();
        return Ok(window);
    }
    let (width, height) = kind.size();
    let window =
        WebviewWindowBuilder::new(manager, kind.label(), WebviewUrl::App(kind.page().into()))
            .title(kind.title())
            .inner_size(width, height)
            .min_inner_size(420.0, 320.0)
            .center()
            .focused(true)
            .build()?;
    tracing::debug!(window = kind.label(), "window created");
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
