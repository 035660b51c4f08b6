//! Second Brain's menu-bar shell: the tray, the windows and the commands the pages call, over
//! the iMessage bridge it runs in-process.
//!
//! The shell is glue. [`host`] owns the running bridge (start, restart on settings changes,
//! drain on exit) and forwards its changes; [`tray`] is the only thing visible at launch;
//! [`windows`] creates the sessions, settings and setup windows on demand; [`commands`]
//! answers the pages in `ui/`; [`login_item`] writes the LaunchAgent behind "Launch at Login";
//! `macos` holds the few macOS-only calls.
//!
//! Invariants: closing the last window never quits (`ExitRequested` without an exit code is
//! prevented), only Quit, logout or SIGTERM do, and each of them ends in `RunEvent::Exit`,
//! where the bridge stops taking texts, drains in-flight work (at most 10 s) and saves before
//! the process exits; one instance runs per user (a second launch opens the first one's
//! sessions window); [`run_app`] takes any `Builder<R>` so tests drive the same code with
//! `tauri::test::mock_builder()`.

pub mod commands;
pub mod host;
pub mod login_item;
#[cfg(target_os = "macos")]
mod macos;
pub mod tray;
pub mod windows;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tauri::{App, AppHandle, Builder, Context, Emitter, Manager, RunEvent, Runtime};

use crate::commands::Hooks;
use crate::host::{Change, Environment, Host, Notify};
use crate::windows::WindowKind;

/// Test-only switch: open this window (`sessions`, `settings` or `setup`) at launch.
pub const OPEN_WINDOW_ENV: &str = "SECOND_BRAIN_OPEN_WINDOW";

/// Where the shell finds the user's things; kept in the app state.
#[derive(Debug, Clone)]
pub struct Shell {
    /// The user's home folder (LaunchAgents, chat.db, `~` in paths).
    pub home: PathBuf,
    /// Where logs go; "Open Logs" shows it.
    pub logs_dir: PathBuf,
    /// The bundle identifier, also the LaunchAgent label.
    pub identifier: String,
    /// This executable, for the LaunchAgent.
    pub executable: PathBuf,
}

/// How [`install`] sets the app up.
#[derive(Clone)]
pub struct Options {
    /// Paths and names.
    pub shell: Shell,
    /// What the bridge's configuration is resolved from.
    pub env: Environment,
    /// Put the icon in the menu bar (off in unit tests, which have no menu bar).
    pub tray: bool,
    /// Open this window at launch (the e2e switch); `None` in normal use.
    pub open_window: Option<WindowKind>,
}

impl Options {
    /// The options of a real launch: the user's folders, the process environment and
    /// Keychain, `SECOND_BRAIN_OPEN_WINDOW`.
    pub fn from_env(identifier: &str) -> anyhow::Result<Self> {
        let home = dirs::home_dir().context("this user has no home folder")?;
        let env = Environment::system();
        let logs_dir = env
            .log_dir()
            .context("no folder for logs (no data folder)")?;
        let executable = std::env::current_exe().context("cannot find this executable")?;
        let open_window = std::env::var(OPEN_WINDOW_ENV).ok().and_then(|label| {
            let kind = WindowKind::from_label(&label);
            if kind.is_none() {
                tracing::warn!(value = %label, "{OPEN_WINDOW_ENV} names no window; ignored");
            }
            kind
        });
        Ok(Self {
            shell: Shell {
                home,
                logs_dir,
                identifier: identifier.to_owned(),
                executable,
            },
            env,
            tray: true,
            open_window,
        })
    }
}

/// Builds and runs the app until Quit. `main` passes `tauri::Builder::default()`.
pub fn run_app<R: Runtime>(builder: Builder<R>) -> anyhow::Result<()> {
    let context: Context<R> = tauri::generate_context!();
    let options = Options::from_env(&context.config().identifier)?;
    let builder = builder
        // First, so a second launch hands over before anything else starts.
        .plugin(tauri_plugin_single_instance::init(|app, _argv, _cwd| {
            tracing::info!("second launch: showing the sessions window");
            if let Err(err) = windows::show(app, WindowKind::Sessions) {
                tracing::error!(cause = %err, "could not show the sessions window");
            }
        }))
        .plugin(tauri_plugin_dialog::init())
        .setup(move |app| {
            let hooks = production_hooks(app.handle());
            let notify = production_notify(app.handle());
            install(app.handle(), options, hooks, notify)?;
            #[cfg(unix)]
            quit_on_signals(app.handle().clone());
            Ok(())
        });
    let app = build_app(builder, context).context("could not start the app")?;
    app.run(|app, event| match event {
        RunEvent::ExitRequested { code, api, .. } if keeps_running(code) => api.prevent_exit(),
        // Every way out ends here (Quit and SIGTERM through `exit(0)`; on macOS, logout and
        // Cmd-Q through `applicationWillTerminate`). The process exits when this returns, so
        // the bridge is stopped synchronously: intake stops, in-flight work drains (bounded),
        // sessions are saved.
        RunEvent::Exit => {
            if let Some(host) = app.try_state::<Host>() {
                tracing::info!("exiting: stopping the bridge");
                tauri::async_runtime::block_on(host.shutdown());
            }
        }
        _ => {}
    });
    Ok(())
}

/// SIGTERM (launchd, `kill`, logout on Linux) and SIGINT quit like the Quit item does.
#[cfg(unix)]
fn quit_on_signals<R: Runtime>(app: AppHandle<R>) {
    use tokio::signal::unix::{SignalKind, signal};
    tauri::async_runtime::spawn(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(cause = %err, "cannot handle SIGTERM; it will kill the app unsaved");
                return;
            }
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "quitting");
        app.exit(0);
    });
}

/// Registers the commands and builds the app (without running it).
pub fn build_app<R: Runtime>(builder: Builder<R>, context: Context<R>) -> tauri::Result<App<R>> {
    builder
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
        ])
        .build(context)
}

/// Sets up a built app: the host (its bridge starts in the background), state, menu, tray
/// icon, and the e2e window if asked for.
pub fn install<R: Runtime>(
    app: &AppHandle<R>,
    options: Options,
    hooks: Hooks,
    notify: Notify,
) -> anyhow::Result<()> {
    #[cfg(target_os = "macos")]
    macos::become_accessory(app);
    let host = Host::new(options.env, notify).context("no folder for the app's data")?;
    app.manage(host.clone());
    app.manage(hooks);
    app.manage(options.shell);
    tray::build_menu(app).context("could not build the menu")?;
    if options.tray {
        tray::install(app).context("could not add the menu-bar icon")?;
    }
    tray::refresh(app);
    host.launch();
    if let Some(kind) = options.open_window {
        windows::show(app, kind).with_context(|| format!("could not open {}", kind.label()))?;
    }
    Ok(())
}

/// Whether an exit request is refused: yes when the last window closed (no exit code), no
/// when something asked to exit (Quit calls `exit(0)`).
pub fn keeps_running(code: Option<i32>) -> bool {
    code.is_none()
}

/// The hooks of a real launch: the native folder picker, `open`.
fn production_hooks<R: Runtime>(app: &AppHandle<R>) -> Hooks {
    let for_picker = app.clone();
    Hooks {
        pick_folder: Arc::new(move || {
            use tauri_plugin_dialog::DialogExt as _;
            match for_picker
                .dialog()
                .file()
                .set_title("Choose your Obsidian vault")
                .blocking_pick_folder()
            {
                None => Ok(None),
                Some(picked) => picked.into_path().map(Some).map_err(|err| err.to_string()),
            }
        }),
        open_url: Box::new(|target| open_with_system(target).map_err(|err| err.to_string())),
    }
}

/// Where the host's changes go: an event to the pages, and the tray rewritten on the main
/// thread (queued, so the host's tasks never wait for the event loop).
pub fn production_notify<R: Runtime>(app: &AppHandle<R>) -> Notify {
    let app = app.clone();
    Arc::new(move |change| {
        tell_pages(&app, change);
        if change == Change::Status {
            let for_tray = app.clone();
            if let Err(err) = app.run_on_main_thread(move || tray::refresh(&for_tray)) {
                tracing::debug!(cause = %err, "tray not refreshed (the app is exiting)");
            }
        }
    })
}

/// Emits the event the pages listen to for `change`.
pub fn tell_pages<R: Runtime>(app: &AppHandle<R>, change: Change) {
    let event = match change {
        Change::Sessions => commands::SESSIONS_CHANGED,
        Change::Status => commands::STATUS_CHANGED,
    };
    if let Err(err) = app.emit(event, ()) {
        tracing::warn!(cause = %err, event, "could not notify the pages");
    }
}

/// Opens a folder or URL the way the platform does, without waiting for the viewer.
fn open_with_system(target: &str) -> std::io::Result<()> {
    #[cfg(target_os = "macos")]
    let child = macos::open(target)?;
    #[cfg(not(target_os = "macos"))]
    let child = std::process::Command::new("xdg-open").arg(target).spawn()?;
    // Reap the opener when it is done, so it does not linger as a zombie.
    let mut child = child;
    std::thread::spawn(move || {
        if let Ok(status) = child.wait()
            && !status.success()
        {
            tracing::warn!(%status, "the system opener failed");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests;
