//! The headless commands besides `run`: `doctor`, `sessions`, `status`, `reminders`.

use std::process::Output;

use serde_json::Value;

use crate::util::anthropic::{self as fake, Reply};
use crate::util::bridge::{API_KEY, ME, ME_CHAT, WITHIN, World};

/// `second-brain-bridge` with a clean environment pointing at the world, but no settings.
fn bare(world: &World) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_second-brain-bridge"));
    cmd.env_clear()
        .env("HOME", world.dir.path())
        .env("SECOND_BRAIN_DATA_DIR", world.data_dir());
    cmd
}

/// Runs `second-brain-bridge <args>` in the world with its usual environment.
fn cli(world: &World, args: &[&str]) -> Output {
    bare(world)
        .args(args)
        .env("VAULT_PATH", world.vault())
        .env("CHAT_DB_PATH", world.db.path())
        .env("ANTHROPIC_API_KEY", API_KEY)
        .env("ALLOWED_SENDERS", ME)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn asks_a_question(_: &Value) -> Reply {
    Reply::Message(fake::text("Which project is this for?"))
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_complete_setup_and_fails_a_broken_one_with_fixes() {
    let world = World::new(asks_a_question).await;
    let ok = cli(&world, &["doctor"]);
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    assert_eq!(
        stdout(&ok).lines().filter(|l| l.starts_with("ok")).count(),
        4,
        "{}",
        stdout(&ok)
    );

    let broken = bare(&world)
        .args(["doctor", "--chat-db"])
        .arg(world.dir.path().join("missing/chat.db"))
        .output()
        .unwrap();
    assert_eq!(broken.status.code(), Some(1));
    let out = stdout(&broken);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("FAIL")).count(),
        4,
        "{out}"
    );
    assert!(out.contains("fix: Open Messages"), "{out}");
    assert!(out.contains("fix: Add your phone number"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_listed_and_cleared_but_never_under_a_running_bridge() {
    let world = World::new(asks_a_question).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "the thing");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    assert_eq!(calls[0].text, "Which project is this for?");
    world.wait_status("handled", |s| s["handled"] == 1).await;

    let refused = cli(&world, &["sessions", "clear", "--all"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is running"),
        "{}",
        stderr(&refused)
    );
    let status = cli(&world, &["status"]);
    assert!(
        stdout(&status).starts_with("Running · 1 session"),
        "{}",
        stdout(&status)
    );
    bridge.stop().await;

    let list = cli(&world, &["sessions", "list"]);
    let out = stdout(&list);
    assert!(
        out.starts_with(&format!("{ME_CHAT}\t{ME}\twaiting\t1 messages")),
        "{out}"
    );
    assert!(out.contains("Which project is this for?"), "{out}");

    let missing = cli(&world, &["sessions", "clear", "iMessage;-;nobody"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no session"),
        "{}",
        stderr(&missing)
    );

    let cleared = cli(&world, &["sessions", "clear", ME_CHAT]);
    assert!(cleared.status.success(), "{}", stderr(&cleared));
    assert_eq!(world.sessions_file()["sessions"], serde_json::json!([]));
    assert_eq!(
        stdout(&cli(&world, &["sessions", "list"])),
        "no active sessions\n"
    );
    assert_eq!(stdout(&cli(&world, &["status"])), "not running\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_to_start_without_a_vault_and_says_why() {
    let world = World::new(asks_a_question).await;
    let out = bare(&world)
        .arg("run")
        .env("CHAT_DB_PATH", world.db.path())
        .env("ANTHROPIC_API_KEY", API_KEY)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no vault folder chosen"),
        "{}",
        stderr(&out)
    );
}

/// Issue 11: `reminders list` shows what is pending (not sent, not archived), soonest first;
/// `reminders cancel` removes the reminder from the note and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn reminders_are_listed_soonest_first_and_cancelled_in_the_note() {
    let world = World::new(asks_a_question).await;
    let put = |rel: &str, due: &str, sent: bool| {
        let path = world.vault().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text = format!(
            "---\ntags:\n- status/active\nreminder:\n  due: {due}\n  sent: {sent}\n---\n# {}\n\nbody\n",
            rel.trim_end_matches(".md").rsplit('/').next().unwrap()
        );
        std::fs::write(&path, &text).unwrap();
        text
    };
    let later = put("Tasks/Later.md", "2999-01-02T09:00:00+00:00", false);
    put("Tasks/Sooner.md", "2999-01-01T09:00:00Z", false);
    put("Tasks/Sent.md", "2999-01-01T08:00:00+00:00", true);
    put("Archive/Archived.md", "2999-01-01T07:00:00+00:00", false);

    let listed = cli(&world, &["reminders", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let lines: Vec<(String, String)> = stdout(&listed)
        .lines()
        .map(|l| {
            let parts: Vec<&str> = l.split('\t').collect();
            assert_eq!(parts.len(), 3, "{l}");
            (parts[1].to_string(), parts[2].to_string())
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("Tasks/Sooner.md".into(), "Sooner".into()),
            ("Tasks/Later.md".into(), "Later".into())
        ]
    );

    let cancelled = cli(&world, &["reminders", "cancel", "Tasks/Later.md"]);
    assert!(cancelled.status.success(), "{}", stderr(&cancelled));
    let reminder = "reminder:\n  due: 2999-01-02T09:00:00+00:00\n  sent: false\n";
    assert_eq!(
        crate::util::bridge::read(&world.vault().join("Tasks/Later.md")),
        later.replace(reminder, "")
    );
    let again = cli(&world, &["reminders", "cancel", "Tasks/Later.md"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("no pending reminder"),
        "{}",
        stderr(&again)
    );
    let outside = cli(&world, &["reminders", "cancel", "../../etc/passwd"]);
    assert!(!outside.status.success());
    let listed = cli(&world, &["reminders", "list"]);
    assert_eq!(stdout(&listed).lines().count(), 1, "{}", stdout(&listed));
}
