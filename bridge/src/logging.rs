//! Logging for both binaries: stderr, plus daily-rotated files (7 kept) in the log folder.
//!
//! Invariant: file lines are written unbuffered, straight to the file, on the thread that
//! logs (`RollingFileAppender` as the writer: tracing-appender-0.2.5/src/rolling.rs:227-240
//! and 575-581 write each line to the `File` without a buffer). So no way out of the process
//! loses a line that was logged, not even `process::exit` (which tao calls at the end of the
//! app's event loop, and the single-instance plugin in a second launch) or `kill -9`: there is
//! no guard to drop and nothing left to flush.

use std::path::{Path, PathBuf};

use tracing_subscriber::prelude::*;

/// Why logging could not be set up as asked.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("LOG_LEVEL {spec:?}: {source}")]
    Filter {
        /// The filter as given.
        spec: String,
        /// Why it does not parse.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The log folder or file could not be opened; logging goes to stderr only.
    #[error("no log files in {dir}: {reason}")]
    Files {
        /// The log folder.
        dir: PathBuf,
        /// What failed.
        reason: String,
    },
}

/// Installs the global logger: `filter` (an `EnvFilter` spec such as `info`), stderr, and
/// files named `<prefix>.<date>.log` in `dir`. When the files cannot be opened, stderr
/// logging is still installed and the error says why.
pub fn init(filter: &str, dir: &Path, prefix: &str) -> Result<(), LogError> {
    let env_filter =
        tracing_subscriber::EnvFilter::try_new(filter).map_err(|source| LogError::Filter {
            spec: filter.to_owned(),
            source,
        })?;
    let files = std::fs::create_dir_all(dir)
        .map_err(|err| err.to_string())
        .and_then(|()| {
            tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix(prefix)
                .filename_suffix("log")
                .max_log_files(7)
                .build(dir)
                .map_err(|err| err.to_string())
        });
    let (files, problem) = match files {
        Ok(appender) => (Some(appender), None),
        Err(reason) => (
            None,
            Some(LogError::Files {
                dir: dir.to_path_buf(),
                reason,
            }),
        ),
    };
    tracing_subscriber::registry()
        .with(env_filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(files.map(|appender| {
            tracing_subscriber::fmt::layer()
                .with_writer(appender)
                .with_ansi(false)
        }))
        .init();
    problem.map_or(Ok(()), Err)
}

/// [`init`] for a front end that must start whatever the environment says: the filter is
/// `LOG_LEVEL`, else `RUST_LOG`, else `info`, and one that does not parse falls back to `info`
/// (the app has no terminal to refuse it on). The error says only why there are no log files.
pub fn init_lenient(
    var: impl Fn(&str) -> Option<String>,
    dir: &Path,
    prefix: &str,
) -> Result<(), LogError> {
    let spec = var("LOG_LEVEL").or_else(|| var("RUST_LOG"));
    match spec.as_deref().map(|spec| init(spec, dir, prefix)) {
        None | Some(Err(LogError::Filter { .. })) => init("info", dir, prefix),
        Some(done) => done,
    }
}
