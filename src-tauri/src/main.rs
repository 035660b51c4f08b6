//! `second-brain`: the menu-bar app. Everything lives in the library; this sets up logging
//! (stderr, plus daily files in the log folder, 7 kept: `bridge::logging`) and starts it.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use bridge::logging::{self, LogError};

fn main() -> std::process::ExitCode {
    // Log files go where "Open Logs" looks; without them the app still logs to stderr.
    match bridge::supervisor::Environment::system().dirs() {
        Ok(dirs) => {
            // `LOG_LEVEL` (the bridge's variable), else `RUST_LOG`, else `info`; a filter
            // that does not parse falls back to `info`.
            let spec = std::env::var("LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG"));
            let init = |filter: &str| logging::init(filter, &dirs.logs, "second-brain");
            let logged = match spec {
                Ok(spec) => match init(&spec) {
                    Err(LogError::Filter { .. }) => init("info"),
                    other => other,
                },
                Err(_) => init("info"),
            };
            if let Err(err) = logged {
                eprintln!("second-brain: {err}");
            }
        }
        Err(err) => eprintln!("second-brain: no log files: {err}"),
    }
    let result = second_brain::run_app(tauri::Builder::default());
    std::process::ExitCode::from(second_brain::exit_code(&result))
}
