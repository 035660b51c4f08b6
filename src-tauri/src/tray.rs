//! The menu-bar icon and its menu: the only thing the app shows until the user asks for more.
//!
//! Invariants: every menu id is a constant of `bridge::supervisor::menu` and every click
//! goes through its [`action_for`], then one `match`; a click that fails tells the user (the
//! shell's alert) and the menu keeps working; the status line is a disabled item whose text
//! and Pause/Resume are rewritten by [`refresh`] from the supervisor (on every status change
//! of the bridge, never polled), and Launch at Login by [`refresh_login`] from what launchd
//! will do, never toggled blindly; the icon is a template image (black on transparent) so
//! macOS tints it for light and dark.

use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuBuilder, MenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Manager, Runtime};

use bridge::login_item::{LoginItem, State};
use bridge::supervisor::Supervisor;
pub use bridge::supervisor::menu::*;

use crate::commands::{self, Hooks};
use crate::windows;

/// The template image shown in the menu bar: 36 px, the @2x rendering of the 18 pt that
/// tray-icon draws it at on macOS (tray-icon-0.24.2/src/platform_impl/macos/mod.rs:296-304
/// scales any image to 18 pt high), so a Retina display shows it pixel for pixel.
pub const TEMPLATE_PNG: &[u8] = include_bytes!("../../icons/tray-template@2x.png");

/// The menu, and its items whose text or check mark changes: the (disabled) status line
/// ("Running · 2 sessions"), Pause/Resume, Launch at Login.
pub struct TrayMenu<R: Runtime> {
    pub menu: Menu<R>,
    pub status: MenuItem<R>,
    pub pause: MenuItem<R>,
    pub login: CheckMenuItem<R>,
}

/// Builds the menu (once) and, when `icon`, puts the icon in the menu bar (once); then shows
/// the current status and login item in it.
pub fn setup<R: Runtime>(app: &AppHandle<R>, icon: bool) -> tauri::Result<()> {
    if app.try_state::<TrayMenu<R>>().is_none() {
        build_menu(app)?;
    }
    if icon && app.tray_by_id(TRAY_ID).is_none() {
        install(app)?;
    }
    refresh(app);
    refresh_login(app);
    Ok(())
}

/// Builds the menu and keeps its handles in the app state.
fn build_menu<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, STATUS, "Starting…", false, None::<&str>)?;
    let settings = MenuItem::with_id(app, SETTINGS, "Settings…", true, Some("CmdOrCtrl+,"))?;
    let pause = MenuItem::with_id(app, PAUSE, "Pause", true, None::<&str>)?;
    let login = CheckMenuItem::with_id(app, LOGIN, "Launch at Login", true, false, None::<&str>)?;
    let quit = MenuItem::with_id(app, QUIT, "Quit Second Brain", true, Some("CmdOrCtrl+Q"))?;
    let menu = MenuBuilder::new(app)
        .items(&[&status])
        .separator()
        .text(SESSIONS, "Sessions…")
        .items(&[&settings])
        .text(SETUP, "Setup Checklist…")
        .text(UPDATES, "Check for Updates…")
        .separator()
        .items(&[&pause, &login])
        .separator()
        .text(OPEN_VAULT, "Open Vault")
        .text(OPEN_LOGS, "Open Logs")
        .separator()
        .items(&[&quit])
        .build()?;
    app.manage(TrayMenu {
        menu,
        status,
        pause,
        login,
    });
    Ok(())
}

/// Puts the icon in the menu bar, with the menu built by [`build_menu`].
fn install<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<TrayIcon<R>> {
    let menu = app.state::<TrayMenu<R>>();
    TrayIconBuilder::with_id(TRAY_ID)
        .icon(Image::from_bytes(TEMPLATE_PNG)?)
        .icon_as_template(true)
        .tooltip("Second Brain")
        .menu(&menu.menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| handle(app, event.id().as_ref()))
        .build(app)
}

/// Rewrites the status line and Pause/Resume from the supervisor (or why the app could not
/// start).
pub fn refresh<R: Runtime>(app: &AppHandle<R>) {
    let Some(menu) = app.try_state::<TrayMenu<R>>() else {
        return;
    };
    let status = commands::status_of(app);
    let pause_text = if status.paused { "Resume" } else { "Pause" };
    let result = menu.status.set_text(&status.line);
    warn_unless_ok(result.and_then(|()| menu.pause.set_text(pause_text)));
    if let Some(tray) = app.tray_by_id(TRAY_ID) {
        let _ = tray.set_tooltip(Some(format!("Second Brain — {}", status.line)));
    }
}

/// Rewrites Launch at Login from what launchd will do; where that cannot be read, the item
/// says so and shows no check mark.
pub fn refresh_login<R: Runtime>(app: &AppHandle<R>) {
    let (Some(menu), Some(item)) = (app.try_state::<TrayMenu<R>>(), app.try_state::<LoginItem>())
    else {
        return;
    };
    let state = item.launchd_state();
    let text = login_text(&state);
    let result = menu.login.set_text(text);
    warn_unless_ok(result.and_then(|()| menu.login.set_checked(state == State::On)));
}

fn warn_unless_ok(result: tauri::Result<()>) {
    if let Err(err) = result {
        tracing::warn!(cause = %err, "could not update the tray menu");
    }
}

/// Handles a click on the menu item `id`. Failures are logged; the menu keeps working.
pub fn handle<R: Runtime>(app: &AppHandle<R>, id: &str) {
    let Some(action) = action_for(id) else {
        tracing::debug!(id, "menu id without an action");
        return;
    };
    if let Err(err) = perform(app, action) {
        tracing::error!(cause = %err, ?action, "menu action failed");
        if let Some(hooks) = app.try_state::<Hooks>() {
            (hooks.alert)(&format!("{err:#}"));
        }
    }
}

/// Carries out one menu action.
pub fn perform<R: Runtime>(app: &AppHandle<R>, action: MenuAction) -> anyhow::Result<()> {
    match action {
        MenuAction::Show(kind) => drop(windows::show(app, kind)?),
        MenuAction::TogglePause => {
            let bridge = needed::<Supervisor, R>(app)?;
            bridge.set_paused(!bridge.status().paused);
            // The change feed refreshes the tray too; this makes it immediate.
            refresh(app);
        }
        MenuAction::ToggleLogin => {
            let item = needed::<LoginItem, R>(app)?;
            let result = item.toggle(&item.launchd_state());
            refresh_login(app);
            result?;
        }
        MenuAction::OpenVault => needed::<Supervisor, R>(app)?.open_vault()?,
        MenuAction::OpenLogs => needed::<Supervisor, R>(app)?.open_logs()?,
        MenuAction::Quit => {
            tracing::info!("quit from the menu");
            app.exit(0);
        }
    }
    Ok(())
}

/// What a menu action needs from the app state; missing only when the app could not start.
fn needed<T: Send + Sync + 'static, R: Runtime>(
    app: &AppHandle<R>,
) -> anyhow::Result<tauri::State<'_, T>> {
    app.try_state::<T>().ok_or_else(|| {
        anyhow::anyhow!("Second Brain could not start: the Setup Checklist says why")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_icons_are_18_pt_at_1x_and_2x() {
        let one_x = Image::from_bytes(include_bytes!("../../icons/tray-template.png")).unwrap();
        assert_eq!((one_x.width(), one_x.height()), (18, 18));
        let two_x = Image::from_bytes(TEMPLATE_PNG).unwrap();
        assert_eq!((two_x.width(), two_x.height()), (36, 36));
    }

    #[test]
    fn template_icon_is_black_on_transparent() {
        let image = Image::from_bytes(TEMPLATE_PNG).unwrap();
        assert_eq!((image.width(), image.height()), (36, 36));
        let rgba = image.rgba();
        let mut opaque = 0;
        for pixel in rgba.chunks_exact(4) {
            assert_eq!(
                &pixel[..3],
                &[0, 0, 0],
                "only black, alpha carries the shape"
            );
            if pixel[3] == 255 {
                opaque += 1;
            }
        }
        assert!(
            opaque > 150,
            "the glyph covers a good part of the icon ({opaque} px)"
        );
        assert!(
            rgba.chunks_exact(4).any(|p| p[3] == 0),
            "the background is transparent"
        );
    }
}
