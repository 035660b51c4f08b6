//! Second Brain's menu-bar shell, glue over the bridge it runs in-process: `bridge::supervisor`
//! owns the bridge (start, restart on settings changes, drain on exit) and feeds its changes
//! here; [`tray`] is all that shows at launch once setup is complete; [`windows`] opens the
//! pages on demand; [`commands`] answers them; `bridge::login_item` is "Launch at Login".
//!
//! Invariants: closing the last window never quits (`ExitRequested` without an exit code is
//! prevented), only Quit, logout or SIGTERM do, and each of them ends in `RunEvent::Exit`,
//! where the bridge stops taking texts, drains in-flight work (at most 10 s) and saves before
//! the process exits; a start that fails (or panics in setup) leaves the app up in "Needs
//! attention" and the process never exits non-zero for it ([`exit_code`]), so launchd does
//! not restart it in a loop; one instance runs per user (a second launch, or on macOS a
//! reopen, brings a window to the front); [`run_app`] takes any `Builder<R>` so tests drive
//! the same code with `tauri::test::mock_builder()`.

pub mod commands;
pub mod tray;
pub mod updater;
pub mod windows;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use anyhow::Context as _;
use bridge::login_item::LoginItem;
pub use bridge::supervisor::exit_code;
use bridge::supervisor::updates::Updates;
use bridge::supervisor::{Change, Environment, Notify, Supervisor};
use tauri::async_runtime::JoinHandle;
use tauri::{App, AppHandle, Builder, Context, Emitter, Manager, RunEvent, Runtime};

use crate::commands::{Attention, Hooks};
use crate::windows::Page;

/// Test-only switch: open this window (`sessions`, `settings`, `setup`, `update`) at launch.
pub const OPEN_WINDOW_ENV: &str = "SECOND_BRAIN_OPEN_WINDOW";

/// How [`install`] sets the app up.
#[derive(Clone)]
pub struct Options {
    /// "Launch at Login", and what the bridge's configuration is resolved from.
    pub login: LoginItem,
    pub env: Environment,
    /// Put the icon in the menu bar (off in unit tests, which have no menu bar).
    pub tray: bool,
    /// Open this window at launch instead of choosing (the e2e switch); `None` in normal use.
    pub open_window: Option<Page>,
}

impl Options {
    /// The options of a real launch: the user's home, this executable, the process
    /// environment and keychain, `SECOND_BRAIN_OPEN_WINDOW`.
    pub fn from_env(identifier: &str) -> anyhow::Result<Self> {
        Ok(Self {
            login: LoginItem::of_this_app(identifier)?,
            env: Environment::system(),
            tray: true,
            open_window: Page::named_by(OPEN_WINDOW_ENV, std::env::var(OPEN_WINDOW_ENV).ok()),
        })
    }
}

/// Builds and runs the app until Quit. `main` passes `tauri::Builder::default()`.
pub fn run_app<R: Runtime>(builder: Builder<R>) -> anyhow::Result<()> {
    let context: Context<R> = tauri::generate_context!();
    let identifier = context.config().identifier.clone();
    let builder = builder
        // First, so a second launch hands over before anything else starts. On macOS a second
        // launch does not reach it: the system sends the running app a reopen instead.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            tracing::info!("second launch: showing the sessions window");
            windows::show_or_log(app, Page::Sessions);
        }))
        .plugin(tauri_plugin_dialog::init())
        .setup(move |app| {
            start(app.handle(), &identifier);
            Ok(())
        });
    #[allow(unused_mut)]
    let mut app = build_app(builder, context).context("could not start the app")?;
    // Before the event loop starts, so there is no Dock icon and no activation at launch:
    // tao applies the policy in `applicationDidFinishLaunching` only when it was set before
    // `run` (tao-0.35.3/src/platform/macos.rs:310-319, app_state.rs:285-293); `App`'s setter
    // sets it on the runtime while it is not running yet (tauri-2.11.6/src/app.rs:1286-1291).
    #[cfg(target_os = "macos")]
    app.set_activation_policy(tauri::ActivationPolicy::Accessory);
    app.run(on_event);
    Ok(())
}

/// What the app does with each event of its loop.
fn on_event<R: Runtime>(app: &AppHandle<R>, event: RunEvent) {
    match event {
        RunEvent::ExitRequested { code, api, .. } if keeps_running(code) => api.prevent_exit(),
        // Every way out ends here (Quit and SIGTERM through `exit(0)`; on macOS, logout and
        // Cmd-Q through `applicationWillTerminate`), and the process exits when this returns:
        // so the bridge drains and saves synchronously. Logs are unbuffered (`bridge::logging`).
        RunEvent::Exit => {
            if let Some(bridge) = app.try_state::<Supervisor>() {
                tracing::info!("exiting: stopping the bridge");
                tauri::async_runtime::block_on(bridge.shutdown());
            }
        }
        // Opening the app again (Finder, Spotlight, the Dock) while it runs
        // (tauri-2.11.6/src/app.rs:275-282, `applicationShouldHandleReopen`).
        #[cfg(target_os = "macos")]
        RunEvent::Reopen { .. } => drop(reopen(app)),
        _ => {}
    }
}

/// Sets the app up from the real environment. Never fails: a setup that fails or panics
/// leaves the app up in "Needs attention", with the reason in the tray and the checklist.
fn start<R: Runtime>(app: &AppHandle<R>, identifier: &str) {
    app.manage(production_hooks(app));
    let installed = catch_unwind(AssertUnwindSafe(|| {
        install(app, Options::from_env(identifier)?, production_notify(app)).map(drop)
    }));
    let failure = match installed {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(format!("{err:#}")),
        Err(panic) => Some(bridge::supervisor::panic_message(panic.as_ref())),
    };
    if let Some(reason) = failure {
        needs_attention(app, reason, true);
    }
    // SIGTERM (launchd, `kill`, logout on Linux) and SIGINT quit like the Quit item does.
    #[cfg(unix)]
    tauri::async_runtime::spawn({
        let app = app.clone();
        async move {
            let signal = bridge::supervisor::quit_signal().await;
            tracing::info!(signal, "quitting");
            app.exit(0);
        }
    });
}

/// Puts the app in "Needs attention": the reason in the tray's status line and at the top of
/// the Setup Checklist, which opens. Every step is best effort: the app stays up.
pub fn needs_attention<R: Runtime>(app: &AppHandle<R>, reason: String, tray: bool) {
    tracing::error!(%reason, "Second Brain cannot run its bridge");
    app.manage(Attention(reason));
    if let Err(err) = tray::setup(app, tray) {
        tracing::error!(cause = %err, "could not set up the menu-bar icon");
    }
    windows::show_or_log(app, Page::Setup);
}

/// Registers the commands and builds the app (without running it).
pub fn build_app<R: Runtime>(builder: Builder<R>, context: Context<R>) -> tauri::Result<App<R>> {
    builder
        .plugin(tauri_plugin_updater::Builder::new().build())
        .invoke_handler(tauri::generate_handler![
            commands::list_sessions,
            commands::clear_session,
            commands::clear_all_sessions,
            commands::get_settings,
            commands::save_settings,
            commands::set_api_key,
            commands::clear_api_key,
            commands::pick_vault_folder,
            commands::recent_strangers,
            commands::allow_sender,
            commands::recent_groups,
            commands::allow_group,
            commands::setup_checks,
            commands::open_settings_pane,
            commands::status,
            commands::set_paused,
            commands::check_for_updates,
            commands::install_update,
            commands::list_reminders,
            commands::cancel_reminder,
        ])
        .build(context)
}

/// Sets up a built app (whose [`Hooks`] are managed): the supervisor, the login item, the
/// menu and tray icon; then starts the bridge in the background. The returned task ends once
/// the bridge has started and, while setup is incomplete, the Setup Checklist is open (or the
/// e2e switch's window, when given).
pub fn install<R: Runtime>(
    app: &AppHandle<R>,
    options: Options,
    notify: Notify,
) -> anyhow::Result<JoinHandle<()>> {
    let bridge = Supervisor::new(options.env, notify).context("no folder for the app's data")?;
    app.manage(bridge.clone());
    let updater = Arc::new(updater::PluginUpdater(app.clone()));
    let version = app.package_info().version.to_string();
    let updates = Updates::new(updater, bridge.clone(), &version);
    tauri::async_runtime::spawn(updates.daily());
    app.manage(updates);
    app.manage(options.login);
    tray::setup(app, options.tray).context("could not set up the menu-bar icon")?;
    let launch = bridge.launch();
    let app = app.clone();
    Ok(tauri::async_runtime::spawn(async move {
        launch.await;
        if let Some(kind) = bridge.window_at_launch(options.open_window).await {
            windows::show_or_log(&app, kind);
        }
    }))
}

/// The window to bring forward when the user opens the app again: the Setup Checklist while
/// setup is incomplete, else the sessions.
pub fn reopen<R: Runtime>(app: &AppHandle<R>) -> JoinHandle<()> {
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let started = app.try_state::<Attention>().is_none();
        let bridge = app.try_state::<Supervisor>().filter(|_| started);
        let kind = Supervisor::window_on_reopen(bridge.map(|b| b.inner().clone())).await;
        tracing::info!(window = kind.label(), "reopened: showing a window");
        tray::refresh_login(&app);
        windows::show_or_log(&app, kind);
    })
}

/// Whether an exit request is refused: yes when the last window closed (no exit code), no
/// when something asked to exit (Quit calls `exit(0)`).
pub fn keeps_running(code: Option<i32>) -> bool {
    code.is_none()
}

/// The hooks of a real launch: the native folder picker and alerts.
fn production_hooks<R: Runtime>(app: &AppHandle<R>) -> Hooks {
    use tauri_plugin_dialog::{DialogExt as _, MessageDialogKind};
    let for_picker = app.clone();
    let for_alert = app.clone();
    Hooks {
        pick_folder: Arc::new(move || {
            let dialog = for_picker.dialog().file();
            let picked = dialog
                .set_title("Choose your Obsidian vault")
                .blocking_pick_folder();
            picked
                .map(|path| path.into_path())
                .transpose()
                .map_err(|e| e.to_string())
        }),
        alert: Box::new(move |text| {
            for_alert
                .dialog()
                .message(text)
                .title("Second Brain")
                .kind(MessageDialogKind::Warning)
                .show(|_| {});
        }),
    }
}

/// Where the supervisor's changes go: an event to the pages, and the tray rewritten on the
/// main thread (queued, so the supervisor's tasks never wait for the event loop).
pub fn production_notify<R: Runtime>(app: &AppHandle<R>) -> Notify {
    let app = app.clone();
    Arc::new(move |change| {
        tell_pages(&app, change);
        if change == Change::Update {
            windows::show_or_log(&app, Page::Update);
        } else if change == Change::Status {
            let for_tray = app.clone();
            if let Err(err) = app.run_on_main_thread(move || tray::refresh(&for_tray)) {
                tracing::debug!(cause = %err, "tray not refreshed (the app is exiting)");
            }
        }
    })
}

/// Emits the event the pages listen to for `change`.
pub fn tell_pages<R: Runtime>(app: &AppHandle<R>, change: Change) {
    let event = bridge::supervisor::pages::event(change);
    if let Err(err) = app.emit(event, ()) {
        tracing::warn!(cause = %err, event, "could not notify the pages");
    }
}

#[cfg(test)]
mod tests;
