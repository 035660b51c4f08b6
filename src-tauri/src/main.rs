//! `second-brain`: the menu-bar app. Everything lives in the library; this sets up logging
//! (stderr, plus daily files in the log folder, 7 kept: `bridge::logging`) and starts it.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    // Log files go where "Open Logs" looks; without them the app still logs to stderr.
    let logged = bridge::supervisor::Environment::system()
        .dirs()
        .map_err(|err| format!("no log files: {err}"))
        .and_then(|dirs| {
            let var = |name: &str| std::env::var(name).ok();
            bridge::logging::init_lenient(var, &dirs.logs, "second-brain")
                .map_err(|e| e.to_string())
        });
    if let Err(err) = logged {
        eprintln!("second-brain: {err}");
    }
    let result = second_brain::run_app(tauri::Builder::default());
    std::process::ExitCode::from(second_brain::exit_code(&result))
}
