//! The windows, one per page (sessions, settings, setup, update): created on demand, brought
//! to the front and focused whenever they are shown.
//!
//! Invariants: there is at most one window per page ([`Page`]), labelled with the page's
//! label; closing a window destroys it (nothing is kept hidden in memory); closing the last
//! window never quits the app (see `keeps_running` in `lib.rs`); only Quit does.

pub use bridge::supervisor::pages::Page;
use tauri::{Manager, Runtime, WebviewUrl, WebviewWindow, WebviewWindowBuilder};

/// Shows the window of `page` (creating it when it is not open) and brings it to the front.
///
/// Every window is focused with `set_focus`, also a new one: on macOS `.focused(true)` only
/// makes the window key (`makeKeyAndOrderFront`, tao-0.35.3/src/platform_impl/macos/window.rs:633),
/// while `set_focus` also activates the app (`activateIgnoringOtherApps`,
/// tao-0.35.3/src/platform_impl/macos/util/async.rs:231-236), which a menu-bar app is not when
/// its menu is clicked; without it the window opens behind the app in front.
pub fn show<R: Runtime, M: Manager<R>>(manager: &M, page: Page) -> tauri::Result<WebviewWindow<R>> {
    let window = match manager.get_webview_window(page.label()) {
        Some(window) => {
            // Best effort: a window that cannot unminimize is still shown.
            let _ = window.unminimize();
            window.show()?;
            window
        }
        None => {
            let (title, width, height) = page.looks();
            let file = format!("{}.html", page.label());
            let window =
                WebviewWindowBuilder::new(manager, page.label(), WebviewUrl::App(file.into()))
                    .title(title)
                    .inner_size(width, height)
                    .min_inner_size(420.0, 320.0)
                    .center()
                    .focused(true)
                    .build()?;
            tracing::debug!(window = page.label(), "window created");
            window
        }
    };
    // Best effort: a window that cannot take focus is still shown.
    if let Err(err) = window.set_focus() {
        tracing::debug!(cause = %err, window = page.label(), "window not focused");
    }
    Ok(window)
}

/// [`show`] where nobody waits for the answer: a failure is logged.
pub fn show_or_log<R: Runtime, M: Manager<R>>(manager: &M, page: Page) {
    if let Err(err) = show(manager, page) {
        tracing::error!(cause = %err, window = page.label(), "could not show the window");
    }
}
