//! `second-brain`: the menu-bar app. Everything lives in the library; this sets up logging
//! (stderr, plus daily files in the log folder, 7 kept) and starts it.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use tracing_subscriber::prelude::*;

fn main() -> std::process::ExitCode {
    let _log_files = init_logging();
    match second_brain::run_app(tauri::Builder::default()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("second-brain: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `LOG_LEVEL` (the bridge's variable), else `RUST_LOG`, else `info`. Log files go where
/// "Open Logs" looks; without them the app still logs to stderr.
fn init_logging() -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = || {
        std::env::var("LOG_LEVEL")
            .ok()
            .or_else(|| std::env::var("RUST_LOG").ok())
            .and_then(|spec| tracing_subscriber::EnvFilter::try_new(spec).ok())
            .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"))
    };
    let stderr = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let files = second_brain::host::Environment::system()
        .log_dir()
        .and_then(|dir| {
            if let Err(err) = std::fs::create_dir_all(&dir) {
                eprintln!("second-brain: no log files in {}: {err}", dir.display());
                return None;
            }
            tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("second-brain")
                .filename_suffix("log")
                .max_log_files(7)
                .build(&dir)
                .map_err(|err| eprintln!("second-brain: no log files in {}: {err}", dir.display()))
                .ok()
        })
        .map(tracing_appender::non_blocking);
    match files {
        Some((writer, guard)) => {
            tracing_subscriber::registry()
                .with(filter())
                .with(stderr)
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(writer)
                        .with_ansi(false),
                )
                .init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry()
                .with(filter())
                .with(stderr)
                .init();
            None
        }
    }
}
