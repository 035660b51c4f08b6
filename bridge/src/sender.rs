//! Sends replies into a Messages conversation through `osascript`.
//!
//! Invariants: the AppleScript source is constant; the chat and the text reach it only as
//! `argv` items (`on run argv`), never pasted into the source and never through a shell.
//! A failure keeps the exit status and stderr; known AppleScript errors get a plain cause.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

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

/// Asks Messages something harmless, to learn whether Apple Events to it are allowed.
const PROBE: &str = r#"tell application "Messages" to count of accounts"#;

/// Why a reply could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// `osascript` could not be started.
    #[error("could not run {program:?}: {source}")]
    Spawn {
        /// The program that was run.
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
    /// `osascript` did not finish in time (e.g. a permission prompt is waiting); whether
    /// Messages sent the text is unknown, so it must not be sent again blindly.
    #[error(
        "osascript did not finish within {after:?} sending to {chat}; the reply may or may not have been sent"
    )]
    TimedOut {
        /// The chat guid the reply was for.
        chat: String,
        /// The time limit.
        after: Duration,
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
        matches!(self, SendError::Failed { stderr, .. } if applescript_error(stderr) == Some(NOT_FOUND))
    }
}

/// AppleScript's "can't get" error: the chat or participant is unknown to Messages.
const NOT_FOUND: i32 = -1728;
/// "Not authorized to send Apple events": the Automation permission is missing.
const NOT_AUTHORIZED: i32 = -1743;

/// The error number `osascript` ends its message with, as in
/// `0:75: execution error: Messages got an error: Can’t get chat id "…". (-1728)`.
/// Only the trailing number counts: the message also quotes the target, and a handle such
/// as `bob-1743@example.com` must not read as an error number.
fn applescript_error(stderr: &str) -> Option<i32> {
    let inner = stderr.trim_end().strip_suffix(')')?;
    let (_, number) = inner.rsplit_once('(')?;
    number.parse().ok()
}

/// How long one `osascript` run may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// `osascript` by its absolute path on macOS, where it always lives (osascript(1):
/// "/usr/bin/osascript"), so nothing earlier on `PATH` can stand in for it; elsewhere
/// (tests on Linux) the first one on `PATH`.
#[cfg(target_os = "macos")]
pub const OSASCRIPT: &str = "/usr/bin/osascript";
/// `osascript` by its absolute path on macOS; elsewhere (tests) the first one on `PATH`.
#[cfg(not(target_os = "macos"))]
pub const OSASCRIPT: &str = "osascript";

/// Variables a child process never inherits: the API credentials.
const SECRET_VARIABLES: [&str; 2] = ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"];

/// Runs [`OSASCRIPT`].
#[derive(Clone, Debug)]
pub struct Sender {
    program: OsString,
    timeout: Duration,
}

impl Default for Sender {
    fn default() -> Sender {
        Sender::with_program(OSASCRIPT)
    }
}

impl Sender {
    /// A sender that runs `program` instead of [`OSASCRIPT`] (a bare name is looked up on
    /// `PATH`).
    pub fn with_program(program: impl Into<OsString>) -> Sender {
        Sender {
            program: program.into(),
            timeout: SEND_TIMEOUT,
        }
    }

    /// The same sender with another time limit per `osascript` run.
    pub fn with_timeout(self, timeout: Duration) -> Sender {
        Sender { timeout, ..self }
    }

    /// Sends `text` into `chat`. When Messages does not know the chat by its id (-1728): a
    /// guid of the `any;…` form that recent macOS writes is tried as `iMessage;…`, and a
    /// direct chat is finally addressed to its participant.
    pub async fn send(&self, chat: &Chat, text: &str) -> Result<(), SendError> {
        let mut result = self.run(SEND_TO_CHAT, &chat.guid, text, &chat.guid).await;
        if let Some(rest) = chat.guid.strip_prefix("any;")
            && matches!(&result, Err(err) if err.is_not_found())
        {
            let guid = format!("iMessage;{rest}");
            tracing::info!(chat = ?chat.guid, ?guid, "Messages does not know the chat by id; trying another form");
            result = self.run(SEND_TO_CHAT, &guid, text, &chat.guid).await;
        }
        match result {
            Err(err) if err.is_not_found() && !chat.is_group => {
                tracing::info!(chat = ?chat.guid, "Messages does not know the chat by id; sending to its participant");
                self.run(SEND_TO_PARTICIPANT, &chat.identifier, text, &chat.guid)
                    .await
            }
            other => other,
        }
    }

    /// Checks that Messages accepts Apple Events from this app (the Automation permission),
    /// without sending anything. The first call may make macOS ask the user.
    pub async fn probe(&self) -> Result<(), SendError> {
        self.osascript(&[PROBE], "(probe)").await
    }

    async fn run(
        &self,
        script: &str,
        target: &str,
        text: &str,
        chat: &str,
    ) -> Result<(), SendError> {
        self.osascript(&[script, target, text], chat).await
    }

    /// Runs `osascript -e <script> [argv…]` with the time limit; `chat` names the reply in errors.
    async fn osascript(&self, args: &[&str], chat: &str) -> Result<(), SendError> {
        let (script, argv) = args.split_first().expect("a script");
        let run = Command::new(&self.program)
            .arg("-e")
            .arg(script)
            .args(argv)
            .env_remove(SECRET_VARIABLES[0])
            .env_remove(SECRET_VARIABLES[1])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        // On time-out the future is dropped, which kills the child (`kill_on_drop`).
        let output = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| SendError::TimedOut {
                chat: chat.to_string(),
                after: self.timeout,
            })?
            .map_err(|source| SendError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if applescript_error(&stderr) == Some(NOT_AUTHORIZED) {
            return Err(SendError::AutomationDenied { stderr });
        }
        Err(SendError::Failed {
            chat: chat.to_string(),
            status: output.status.to_string(),
            stderr,
        })
    }
}

/// The fake `osascript` shared with the end-to-end tests.
#[cfg(test)]
use util::osascript as fake_osascript;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use super::fake_osascript::{Call, FakeOsascript};

    const NOT_FOUND_STDERR: &str = "0:75: execution error: Messages got an error: \
         Can’t get chat id \"iMessage;-;+15551234567\". (-1728)";
    const DENIED_STDERR: &str =
        "0:47: execution error: Not authorized to send Apple events to Messages. (-1743)";

    fn direct() -> Chat {
        Chat {
            guid: "iMessage;-;+15551234567".to_string(),
            identifier: "+15551234567".to_string(),
            is_group: false,
        }
    }

    fn group() -> Chat {
        Chat {
            guid: "iMessage;+;chat123456789012345678".to_string(),
            identifier: "chat123456789012345678".to_string(),
            is_group: true,
        }
    }

    fn fake() -> (tempfile::TempDir, FakeOsascript, Sender) {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeOsascript::install(dir.path());
        let sender = Sender::with_program(fake.program());
        (dir, fake, sender)
    }

    fn assert_to_chat(call: &Call, chat: &Chat, text: &str) {
        assert_eq!(call.script, SEND_TO_CHAT);
        assert_eq!(call.argv, vec![chat.guid.clone(), text.to_string()]);
        assert_eq!(
            (call.target.as_str(), call.text.as_str()),
            (chat.guid.as_str(), text)
        );
    }

    #[tokio::test]
    async fn texts_reach_osascript_byte_for_byte_as_arguments() {
        let texts = [
            "plain",
            "",
            "say \"hi\"",
            "it's",
            r"back\slash \\ \n not a newline",
            "line one\nline two",
            "crlf\r\nend\r",
            "line\u{2028}separator\u{2029}paragraph",
            "emoji 👋🏽 family 👨‍👩‍👧 astral 𝄞",
            "مرحبا — שלום",
            "\" & do shell script \"touch /tmp/pwned\" & \"",
            "$(touch /tmp/pwned) `id` ; | & > <",
            "-e",
            "--",
            "  leading and trailing spaces  ",
            "tab\there",
        ];
        let (_dir, fake, sender) = fake();
        for text in texts {
            sender.send(&direct(), text).await.unwrap();
        }
        let calls = fake.calls();
        assert_eq!(calls.len(), texts.len());
        for (call, text) in calls.iter().zip(texts) {
            assert_to_chat(call, &direct(), text);
        }
        assert!(calls.windows(2).all(|w| w[0].started_ns <= w[1].started_ns));
    }

    #[tokio::test]
    async fn a_direct_chat_unknown_by_id_is_retried_to_its_participant() {
        let (_dir, fake, sender) = fake();
        fake.fail_next(1, NOT_FOUND_STDERR);
        sender.send(&direct(), "hello 👋").await.unwrap();
        let calls = fake.calls();
        assert_eq!(calls.len(), 2, "{calls:#?}");
        assert_to_chat(&calls[0], &direct(), "hello 👋");
        assert_eq!(calls[1].script, SEND_TO_PARTICIPANT);
        assert_eq!(
            calls[1].argv,
            vec!["+15551234567".to_string(), "hello 👋".to_string()]
        );
    }

    #[tokio::test]
    async fn a_participant_that_is_unknown_too_fails_with_the_second_error() {
        let (_dir, fake, sender) = fake();
        fake.fail_always(1, NOT_FOUND_STDERR);
        let err = sender.send(&direct(), "hi").await.unwrap_err();
        assert!(err.is_not_found(), "{err:?}");
        assert_eq!(fake.calls().len(), 2, "one retry, not more");
    }

    #[tokio::test]
    async fn a_group_unknown_by_id_is_an_error_without_retry() {
        let (_dir, fake, sender) = fake();
        fake.fail_next(1, NOT_FOUND_STDERR);
        let err = sender.send(&group(), "to the group").await.unwrap_err();
        assert!(err.is_not_found());
        let SendError::Failed {
            chat,
            status,
            stderr,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(chat, &group().guid);
        assert!(status.contains('1'), "{status}");
        assert_eq!(stderr, NOT_FOUND_STDERR);
        let calls = fake.calls();
        assert_eq!(calls.len(), 1);
        assert_to_chat(&calls[0], &group(), "to the group");
    }

    #[tokio::test]
    async fn the_probe_sends_nothing_and_reports_missing_permission() {
        let (_dir, fake, sender) = fake();
        sender.probe().await.unwrap();
        fake.fail_next(1, DENIED_STDERR);
        let err = sender.probe().await.unwrap_err();
        assert!(matches!(err, SendError::AutomationDenied { .. }), "{err:?}");
        let calls = fake.calls();
        assert_eq!(calls.len(), 2);
        assert!(
            calls.iter().all(|c| c.script == PROBE && c.argv.is_empty()),
            "{calls:#?}"
        );
    }

    /// macOS 15 and later write `any;+;…` guids that `chat id` may not accept.
    #[tokio::test]
    async fn an_any_guid_unknown_by_id_is_retried_as_imessage() {
        let (_dir, fake, sender) = fake();
        let chat = Chat {
            guid: "any;+;chat999".into(),
            identifier: "chat999".into(),
            is_group: true,
        };
        fake.fail_next(1, NOT_FOUND_STDERR);
        sender.send(&chat, "to the group").await.unwrap();
        let calls = fake.calls();
        let targets: Vec<_> = calls
            .iter()
            .map(|c| (c.script.as_str(), c.target.as_str()))
            .collect();
        assert_eq!(
            targets,
            [
                (SEND_TO_CHAT, "any;+;chat999"),
                (SEND_TO_CHAT, "iMessage;+;chat999")
            ]
        );
        assert!(calls.iter().all(|c| c.text == "to the group"));
    }

    #[tokio::test]
    async fn an_osascript_that_hangs_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("osascript");
        let pid_file = dir.path().join("pid");
        let script = format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 60\n",
            pid_file.display()
        );
        // Written by a child process: a file this process had open for writing could be
        // inherited by a concurrent test's fork and make the exec fail ("Text file busy").
        let wrote = std::process::Command::new("sh")
            .args(["-c", "printf '%s' \"$1\" > \"$0\" && chmod 755 \"$0\""])
            .arg(&program)
            .arg(&script)
            .status()
            .unwrap();
        assert!(wrote.success());
        let sender = Sender::with_program(&program).with_timeout(Duration::from_millis(300));
        let err = sender.send(&direct(), "hi").await.unwrap_err();
        assert!(matches!(err, SendError::TimedOut { .. }), "{err:?}");
        assert!(err.to_string().contains("may or may not"), "{err}");
        assert!(pid_file.exists(), "the program ran");
    }

    #[tokio::test]
    async fn missing_automation_permission_is_its_own_error_naming_the_setting() {
        let (_dir, fake, sender) = fake();
        fake.fail_next(1, DENIED_STDERR);
        let err = sender.send(&direct(), "hi").await.unwrap_err();
        let SendError::AutomationDenied { stderr } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(stderr, DENIED_STDERR);
        let message = err.to_string();
        assert!(message.contains("Automation") && message.contains("Privacy & Security"));
        assert_eq!(fake.calls().len(), 1, "no retry: it cannot help");
    }

    /// A handle or chat id that merely contains an error number is not that error.
    #[tokio::test]
    async fn error_numbers_are_read_from_the_end_of_the_message_only() {
        let chat = Chat {
            guid: "iMessage;-;bob-1743@example.com".to_string(),
            identifier: "bob-1743@example.com".to_string(),
            is_group: false,
        };
        let (_dir, fake, sender) = fake();
        fake.fail_next(1, "execution error: Messages got an error: Can’t get chat id \"iMessage;-;bob-1743@example.com\". (-1728)");
        sender.send(&chat, "hi").await.unwrap();
        assert_eq!(fake.calls()[1].target, "bob-1743@example.com");

        fake.fail_next(
            1,
            "execution error: Messages got an error: bob-1728 said no. (-10000)",
        );
        let err = sender.send(&chat, "hi").await.unwrap_err();
        assert!(
            matches!(err, SendError::Failed { .. }) && !err.is_not_found(),
            "{err:?}"
        );
        assert_eq!(fake.calls().len(), 3);

        for (stderr, number) in [
            ("x (-1728)", Some(-1728)),
            ("x (-1743)\n", Some(-1743)),
            ("(-1728) and then more", None),
            ("no number ()", None),
            ("", None),
        ] {
            assert_eq!(applescript_error(stderr), number, "{stderr:?}");
        }
    }

    #[tokio::test]
    async fn other_failures_keep_status_and_stderr() {
        let (_dir, fake, sender) = fake();
        fake.fail_next(3, "  something odd happened\nsecond line  ");
        let err = sender.send(&direct(), "hi").await.unwrap_err();
        let SendError::Failed {
            chat,
            status,
            stderr,
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(chat, &direct().guid);
        assert!(status.contains('3'), "{status}");
        assert_eq!(stderr, "something odd happened\nsecond line");
        assert!(err.to_string().contains("something odd happened"));
        assert_eq!(fake.calls().len(), 1);

        // The failure was used up: the next send succeeds.
        sender.send(&direct(), "again").await.unwrap();
        assert_eq!(fake.calls().len(), 2);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let sender = Sender::with_program(dir.path().join("no-such-osascript"));
        let err = sender.send(&direct(), "hi").await.unwrap_err();
        let SendError::Spawn { program, source } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            program,
            &dir.path().join("no-such-osascript").into_os_string()
        );
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn the_fake_reports_calls_as_they_happen() {
        let (_dir, fake, sender) = fake();
        let background = sender.clone();
        let send = tokio::spawn(async move {
            background.send(&direct(), "one").await.unwrap();
            background.send(&group(), "two").await.unwrap();
        });
        let calls = fake.wait_for_calls(2, Duration::from_secs(30)).await;
        assert_eq!(
            calls.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
        send.await.unwrap();
        assert!(
            calls[0].started_ns > 1_600_000_000_000_000_000,
            "{}",
            calls[0].started_ns
        );
        assert!(
            fake.env()
                .iter()
                .any(|(k, v)| k == "PATH" && v.starts_with(fake.bin_dir().to_str().unwrap()))
        );
    }
}
