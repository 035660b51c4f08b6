//! Sends replies into a Messages conversation through `osascript`.
//!
//! Invariants: the AppleScript source is constant; the chat and the text reach it only as
//! `argv` items (`on run argv`), never pasted into the source and never through a shell.
//! A failure keeps the exit status and stderr; known AppleScript errors get a plain cause.

use std::ffi::OsString;
use std::process::Stdio;

use tokio::process::Command;

use crate::chatdb::Chat;

/// Sends `item 2 of argv` to the chat whose guid is `item 1 of argv`.
const SEND_TO_CHAT: &str = r#"on run argv
	tell application "Messages"
		send (item 2 of argv) to chat id (item 1 of argv)
	end tell
end run"#;

/// Sends `item 2 of argv` to the participant `item 1 of argv` on the iMessage account:
/// the fallback for a direct chat that Messages does not know by id yet (error -1728).
const SEND_TO_PARTICIPANT: &str = r#"on run argv
	tell application "Messages"
		set targetAccount to 1st account whose service type = iMessage
		send (item 2 of argv) to participant (item 1 of argv) of targetAccount
	end tell
end run"#;

/// Why a reply could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// `osascript` could not be started.
    #[error("could not run {program:?}: {source}")]
    Spawn {
        /// The program that was looked up on `PATH`.
        program: OsString,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Messages refused Apple Events from this app (AppleScript error -1743).
    #[error(
        "Automation permission for Messages is missing: allow it in System Settings › Privacy & \
         Security › Automation"
    )]
    AutomationDenied {
        /// `osascript`'s stderr.
        stderr: String,
    },
    /// The script failed.
    #[error("osascript failed ({status}) sending to {chat}: {stderr}")]
    Failed {
        /// The chat guid the reply was for.
        chat: String,
        /// The exit status, as text.
        status: String,
        /// `osascript`'s stderr, trimmed.
        stderr: String,
    },
}

impl SendError {
    /// Whether AppleScript reported that the addressed object does not exist (-1728).
    pub fn is_not_found(&self) -> bool {
        matches!(self, SendError::Failed { stderr, .. } if stderr.contains("-1728"))
    }
}

/// Runs `osascript` found on `PATH`.
#[derive(Clone, Debug)]
pub struct Sender {
    program: OsString,
}

impl Default for Sender {
    fn default() -> Sender {
        Sender {
            program: OsString::from("osascript"),
        }
    }
}

impl Sender {
    /// A sender that runs `program` instead of `osascript` (found on `PATH` the same way).
    pub fn with_program(program: impl Into<OsString>) -> Sender {
        Sender {
            program: program.into(),
        }
    }

    /// Sends `text` into `chat`. A direct chat Messages cannot find by id is retried once
    /// addressed to its participant.
    pub async fn send(&self, chat: &Chat, text: &str) -> Result<(), SendError> {
        match self.run(SEND_TO_CHAT, &chat.guid, text, &chat.guid).await {
            Err(err) if err.is_not_found() && !chat.is_group => {
                self.run(SEND_TO_PARTICIPANT, &chat.identifier, text, &chat.guid)
                    .await
            }
            other => other,
        }
    }

    async fn run(
        &self,
        script: &str,
        target: &str,
        text: &str,
        chat: &str,
    ) -> Result<(), SendError> {
        let output = Command::new(&self.program)
            .arg("-e")
            .arg(script)
            .arg(target)
            .arg(text)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| SendError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.contains("-1743") {
            return Err(SendError::AutomationDenied { stderr });
        }
        Err(SendError::Failed {
            chat: chat.to_string(),
            status: output.status.to_string(),
            stderr,
        })
    }
}
