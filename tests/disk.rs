//! Issue 9 — a vault and a process that hold against what lives on a real disk: FIFOs at a
//! note's and at the log's path, content folders and the daily log linked outside the vault,
//! hidden folders, replies per text, the environment of child processes, the modes of state
//! files, and handles that would forge a log line. Each test runs the real binary.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use serde_json::{Value, json};

use crate::util::anthropic as fake;
use crate::util::bridge::{API_KEY, ME, ME_CHAT, WITHIN, World};
use crate::{capture, scripted, tool_results};

fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

fn mkfifo(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Tries the FIFOs, then files the note and replies.
fn into_the_fifos(input: &str, turn: usize) -> Value {
    match turn {
        0 => fake::tool_use(
            "toolu_r",
            "vault_read",
            json!({"filepath": "Ideas/pipe.md"}),
        ),
        1 => fake::tool_use("toolu_l", "log_interaction", json!({"input": input})),
        n => capture(input, n - 2),
    }
}

/// Issue 9: a FIFO named `*.md` hung `vault_read` in `open`, SIGTERM logged "stopped" but
/// the process stayed alive, and a restart ran the same text into it again; a FIFO at
/// today's log did the same to `log_interaction`. Both are now tool errors, the text is
/// filed, SIGTERM ends the bridge, and the next start handles the next text.
#[tokio::test(flavor = "multi_thread")]
async fn fifos_at_a_note_and_at_todays_log_are_refused_and_sigterm_still_ends_the_bridge() {
    let world = World::new(scripted(into_the_fifos)).await;
    mkfifo(&world.vault().join("Ideas/pipe.md"));
    mkfifo(&world.vault().join(format!("_system/logs/{}.md", today())));
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Call the plumber");
    world.osascript.wait_for_calls(1, WITHIN).await;
    world
        .wait_status("the text handled", |s| s["handled"] == 1)
        .await;
    bridge.stop().await; // exits cleanly within the wait, or the test fails

    let results = tool_results(&world.api);
    assert!(results[0].2 && results[0].1.contains("FIFO"), "{results:?}");
    assert!(results[1].2 && results[1].1.contains("FIFO"), "{results:?}");
    assert!(!results[2].2, "{results:?}");
    assert_eq!(world.notes("Tasks").len(), 1);

    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Buy stamps");
    world.osascript.wait_for_calls(2, WITHIN).await;
    world
        .wait_status("the next text handled", |s| s["handled"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.notes("Tasks").len(), 2);
}

/// Writes into the linked `Tasks`, lists everything and `Projects`, reads `.obsidian`,
/// logs into the linked daily log, then files into `Ideas` and replies.
fn at_the_links(input: &str, turn: usize) -> Value {
    let write = |folder: &str| json!({"folder": folder, "title": input, "content": input, "tags": ["errand"], "confidence": 80});
    match turn {
        0 => fake::tool_use("toolu_0", "vault_write", write("Tasks")),
        1 => fake::tool_use("toolu_1", "vault_list", json!({"limit": 100})),
        2 => fake::tool_use("toolu_2", "vault_list", json!({"folder": "Projects"})),
        3 => fake::tool_use(
            "toolu_3",
            "vault_read",
            json!({"filepath": ".obsidian/x.md"}),
        ),
        4 => fake::tool_use("toolu_4", "log_interaction", json!({"input": input})),
        5 => fake::tool_use("toolu_5", "vault_write", write("Ideas")),
        6 => fake::tool_use(
            "toolu_6",
            "send_message",
            json!({"message": "Saved to Ideas"}),
        ),
        _ => fake::text("Done."),
    }
}

/// Issue 9: with `Tasks -> /elsewhere` a note was written there, with `Projects ->
/// /elsewhere` a listing returned the notes there, `vault_read` read `.obsidian/…`, and a
/// linked daily log was followed. Now: refused, skipped, refused, refused; nothing outside
/// changes, and the status (and `status`) names the folders.
#[tokio::test(flavor = "multi_thread")]
async fn folders_and_a_daily_log_linked_outside_and_hidden_folders_are_not_used() {
    let world = World::new(scripted(at_the_links)).await;
    let elsewhere = world.dir.path().join("elsewhere");
    for sub in ["tasks", "projects"] {
        std::fs::create_dir_all(elsewhere.join(sub)).unwrap();
    }
    let secret = "---\ntags: [private]\n---\n# Outside secret\n";
    std::fs::write(elsewhere.join("projects/secret.md"), secret).unwrap();
    std::fs::write(elsewhere.join("log.md"), "keep").unwrap();
    let vault = world.vault();
    std::os::unix::fs::symlink(elsewhere.join("tasks"), vault.join("Tasks")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("projects"), vault.join("Projects")).unwrap();
    std::fs::create_dir_all(vault.join(".obsidian")).unwrap();
    std::fs::write(vault.join(".obsidian/x.md"), "HIDDEN").unwrap();
    std::fs::create_dir_all(vault.join("_system/logs")).unwrap();
    let log = vault.join(format!("_system/logs/{}.md", today()));
    std::os::unix::fs::symlink(elsewhere.join("log.md"), &log).unwrap();

    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Pick up the keys");
    world.osascript.wait_for_calls(1, WITHIN).await;
    let status = world
        .wait_status("the folders named", |s| {
            s["vault_folders_outside"] == json!(["Tasks", "Projects"])
        })
        .await;
    let cli = world.cli(&["status"]).await;
    bridge.stop().await;

    assert!(
        cli.contains("vault: Tasks points outside the vault"),
        "{cli}"
    );
    assert!(
        cli.contains("vault: Projects points outside the vault"),
        "{cli}"
    );
    assert_eq!(
        status["vault_problem"],
        Value::Null,
        "the vault itself is usable"
    );
    let results = tool_results(&world.api);
    let (ok, err) = (|i: usize| !results[i].2, |i: usize| results[i].2);
    assert!(
        err(0) && results[0].1.contains("Tasks points outside the vault"),
        "{results:?}"
    );
    assert!(
        ok(1) && !results[1].1.contains("Outside secret"),
        "{results:?}"
    );
    assert!(ok(2) && results[2].1 == "[]", "{results:?}");
    assert!(err(3) && results[3].1.contains("hidden"), "{results:?}");
    assert!(!results[3].1.contains("HIDDEN"));
    assert!(
        err(4) && results[4].1.contains("symbolic link"),
        "{results:?}"
    );
    assert!(ok(5), "{results:?}");
    assert!(
        names(&elsewhere.join("tasks")).is_empty(),
        "nothing written outside"
    );
    assert_eq!(names(&elsewhere.join("projects")), ["secret.md"]);
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("log.md")).unwrap(),
        "keep"
    );
    assert_eq!(world.notes("Ideas").len(), 1);
}

/// Ten replies in one turn, then the note.
fn ten_replies(input: &str, turn: usize) -> Value {
    match turn {
        0 => fake::message(
            (0..10)
                .map(|i| {
                    fake::tool_use_block(
                        &format!("toolu_s{i}"),
                        "send_message",
                        json!({"message": format!("reply {i}")}),
                    )
                })
                .collect(),
            "tool_use",
        ),
        1 => fake::tool_use(
            "toolu_w",
            "vault_write",
            json!({"folder": "Tasks", "title": input, "content": input, "confidence": 90}),
        ),
        _ => fake::text("Done."),
    }
}

/// Issue 9: one text led to 184 sends in 8 s. Ten `send_message` calls send three.
#[tokio::test(flavor = "multi_thread")]
async fn ten_send_message_calls_in_one_run_send_three() {
    let world = World::new(scripted(ten_replies)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Reply a lot");
    world
        .wait_status("the text handled", |s| s["handled"] == 1)
        .await;
    bridge.stop().await;
    let sent: Vec<String> = world
        .osascript
        .calls()
        .into_iter()
        .map(|c| c.text)
        .collect();
    assert_eq!(sent, ["reply 0", "reply 1", "reply 2"]);
    let refused = tool_results(&world.api)
        .into_iter()
        .filter(|(_, content, is_error)| *is_error && content.contains("at most 3 replies"))
        .count();
    assert_eq!(refused, 7);
}

/// Issue 9: every `osascript` child had the API key in its environment, and state files
/// were 0644 in a 0755 data dir, whatever holds private texts. Children keep the rest of
/// the environment; state is private; notes keep the umask.
#[tokio::test(flavor = "multi_thread")]
async fn children_never_see_the_api_key_and_state_files_are_private() {
    let world = World::new(scripted(capture)).await;
    // A wrapper first on PATH records the environment, then runs the fake.
    let wrap = world.dir.path().join("wrap");
    std::fs::create_dir_all(&wrap).unwrap();
    let env_file = world.dir.path().join("child-env");
    let script = format!(
        "#!/bin/sh\nenv > '{}'\nexec '{}' \"$@\"\n",
        env_file.display(),
        world.osascript.program().display()
    );
    std::fs::write(wrap.join("osascript"), script).unwrap();
    std::fs::set_permissions(
        wrap.join("osascript"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        wrap.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let bridge = world
        .start_with(&[("PATH", &path), ("ANTHROPIC_AUTH_TOKEN", "token-secret")])
        .await;
    world.db.incoming(ME_CHAT, ME, "Water the plants");
    world.osascript.wait_for_calls(1, WITHIN).await;
    world
        .wait_status("the text handled", |s| s["handled"] == 1)
        .await;
    bridge.stop().await;

    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        !env.contains(API_KEY) && !env.contains("ANTHROPIC_API_KEY"),
        "{env}"
    );
    assert!(
        !env.contains("token-secret") && !env.contains("ANTHROPIC_AUTH_TOKEN"),
        "{env}"
    );
    assert!(
        env.contains("FAKE_OSASCRIPT_DIR="),
        "the rest is kept: {env}"
    );

    let data = world.data_dir();
    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    assert!(
        files >= 4,
        "sessions, ledger, budget, status, lock: {files}"
    );
    let probe = world.dir.path().join("probe");
    std::fs::write(&probe, "").unwrap();
    let note = world.vault().join(&world.notes("Tasks")[0].0);
    assert_eq!(mode(&note), mode(&probe), "notes keep the umask");
}

/// Issue 9: a handle with a newline forged a log line.
#[tokio::test(flavor = "multi_thread")]
async fn a_handle_with_a_newline_cannot_forge_a_log_line() {
    let world = World::new(scripted(capture)).await;
    let forged = "+15550001111\n2026-01-01T00:00:00Z  INFO second_brain_bridge: FORGED";
    let chat = "iMessage;-;+15550001111";
    world.db.chat(chat, forged, false);
    let bridge = world.start().await;
    world.db.incoming(chat, forged, "hello");
    world
        .wait_status("the stranger seen", |s| {
            s["strangers"].as_array().is_some_and(|a| !a.is_empty())
        })
        .await;
    let log = bridge.stop().await;
    assert!(log.contains("FORGED"), "the handle is logged: {log}");
    for line in log.lines().filter(|l| l.contains("FORGED")) {
        assert!(
            line.contains("+15550001111\\n"),
            "escaped on one line: {line}"
        );
    }
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00Z")),
        "{log}"
    );
}

/// Issue 8: a text captured in one run leaves `sessions.json` alone (its working session is
/// never saved), so a capture costs no write, rename or fsync of it, even when the next text
/// comes while the last one's end is being saved.
#[tokio::test(flavor = "multi_thread")]
async fn captures_back_to_back_never_rewrite_the_sessions_file() {
    use std::os::unix::fs::MetadataExt as _;
    let world = World::new(fake::one_turn_capture(
        "Tasks",
        "Call the dentist",
        &["status/active"],
        "Saved to {path}",
    ))
    .await;
    let sessions = world.data_dir().join("sessions.json");
    // A first start and stop leaves the file as a save writes it.
    world.start().await.stop().await;
    let stamp = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.ino(), m.mtime(), m.mtime_nsec()))
    };
    let before = stamp(&sessions);
    let bridge = world
        .start_with(&[("LOG_LEVEL", "info,bridge::sessions=debug")])
        .await;
    for n in 1..=3 {
        world
            .db
            .incoming(ME_CHAT, ME, &format!("call the dentist, take {n}"));
        world.wait_status("captured", |s| s["captured"] == n).await;
    }
    let log = bridge.stop().await;
    assert_eq!(
        stamp(&sessions),
        before,
        "no capture rewrote sessions.json: {log}"
    );
    assert_eq!(stamp(&sessions), before, "nor did the stop: {log}");
    assert_eq!(world.sessions_file()["sessions"], json!([]));
}
