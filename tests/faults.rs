//! Issue 4 — faults: the LLM failing every way it can, the vault going away, chat.db missing
//! or unreadable, and state files that do not parse. Each test runs the real binary and
//! asserts on Inbox notes, the replies osascript was asked to send, the requests the fake
//! API received and `status.json`.

use serde_json::{Value, json};

use crate::util::anthropic::{self as fake, Reply};
use crate::util::bridge::{ME, ME_CHAT, WITHIN, World};
use crate::util::chatdb::FixtureDb;
use crate::util::state;
use crate::{capture, scripted};

/// Environment that keeps retries short: two retries, quick timeouts.
const QUICK: &[(&str, &str)] = &[
    ("ANTHROPIC_MAX_RETRIES", "2"),
    ("ANTHROPIC_TIMEOUT_MS", "400"),
];

/// What a fault case expects.
struct Expect {
    /// Requests the fake receives for the one text.
    requests: std::ops::RangeInclusive<usize>,
    /// Words the reply must contain.
    reply_says: &'static str,
    /// Whether the status must show the key as rejected.
    key_rejected: bool,
}

/// Sends one text through a bridge whose API fails as `responder` says, and checks that
/// the raw text lands in Inbox, the user is told once, and the status counts it.
async fn text_goes_to_inbox(
    responder: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    env: &[(&str, &str)],
    expect: Expect,
) -> World {
    let world = World::new(responder).await;
    let mut vars = QUICK.to_vec();
    vars.extend_from_slice(env);
    let bridge = world.start_with(&vars).await;
    let text = "Idea: a bird feeder camera 🐦 (שלום)\r\nwith a second line";
    world.db.incoming(ME_CHAT, ME, text);
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    let status = world
        .wait_status_of(&bridge, "the failure counted", |s| s["failed"] == 1)
        .await;
    bridge.stop().await;

    assert_eq!(calls.len(), 1, "told once: {calls:?}");
    assert_eq!(calls[0].target, ME_CHAT);
    assert!(
        calls[0].text.contains("Inbox") && calls[0].text.contains(expect.reply_says),
        "{}",
        calls[0].text
    );
    let inbox = world.notes("Inbox");
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    let body = &inbox[0].1;
    assert!(body.contains(text), "the raw text, byte for byte: {body}");
    assert!(
        body.contains("_Filed unprocessed by Second Brain: "),
        "{body}"
    );
    assert!(body.contains("source: imessage:"), "{body}");
    assert!(world.notes("Tasks").is_empty());
    let requests = world.api.requests().len();
    assert!(
        expect.requests.contains(&requests),
        "{requests} requests, expected {:?}",
        expect.requests
    );
    let key = status["api_problem"].as_str().unwrap_or("");
    assert_eq!(
        key.starts_with("API key rejected"),
        expect.key_rejected,
        "{status:#}"
    );
    assert_eq!(world.sessions_file()["sessions"], json!([]));
    world
}

fn error_reply(status: u16, headers: &[(&str, &str)], kind: &str) -> Reply {
    Reply::Status {
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        body: json!({"type": "error", "error": {"type": kind, "message": "from the fake"}})
            .to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_429_waits_as_told_by_retry_after_then_succeeds() {
    let count = std::sync::atomic::AtomicUsize::new(0);
    let capture = scripted(capture);
    let world = World::new(move |request: &Value| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
            // Seconds, the header the real API sends.
            return error_reply(429, &[("retry-after", "1")], "rate_limit_error");
        }
        capture(request)
    })
    .await;
    let bridge = world.start_with(QUICK).await;
    let started = std::time::Instant::now();
    world.db.incoming(ME_CHAT, ME, "Call the dentist");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "waited 1 s before each retry"
    );
    assert_eq!(calls[0].text, "Saved to Tasks: Call the dentist");
    assert_eq!(world.notes("Tasks").len(), 1);
    assert!(world.notes("Inbox").is_empty());
    // Two refused attempts, then the three turns of the capture (none after its reply).
    assert_eq!(world.api.requests().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn overloaded_529_beyond_the_retries_files_to_inbox() {
    text_goes_to_inbox(
        |_: &Value| error_reply(529, &[("retry-after-ms", "5")], "overloaded_error"),
        &[],
        Expect {
            requests: 3..=3,
            reply_says: "the AI service did not answer",
            key_rejected: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_error_500_beyond_the_retries_files_to_inbox() {
    text_goes_to_inbox(
        |_: &Value| error_reply(500, &[("retry-after-ms", "5")], "api_error"),
        &[],
        Expect {
            requests: 3..=3,
            reply_says: "the AI service did not answer",
            key_rejected: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_refused_files_to_inbox_after_the_retries() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let world = text_goes_to_inbox(
        |_: &Value| fake::text("unreachable").into(),
        &[("ANTHROPIC_BASE_URL", &url), ("ANTHROPIC_MAX_RETRIES", "1")],
        Expect {
            requests: 0..=0,
            reply_says: "the AI service did not answer",
            key_rejected: false,
        },
    )
    .await;
    assert!(world.api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_never_answers_times_out_and_files_to_inbox() {
    text_goes_to_inbox(
        |_: &Value| Reply::Hang,
        &[
            ("ANTHROPIC_TIMEOUT_MS", "300"),
            ("ANTHROPIC_MAX_RETRIES", "1"),
        ],
        Expect {
            requests: 2..=2,
            reply_says: "the AI service did not answer",
            key_rejected: false,
        },
    )
    .await;
}

/// Issue 9: an agent run had no overall deadline. A run that never finishes (the API never
/// answers, and its own time-out is far off) ends at the run deadline and the text goes to
/// Inbox like any agent failure. (The deadline on the paused clock: `agent` unit tests.)
#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_deadline_files_to_inbox() {
    text_goes_to_inbox(
        |_: &Value| Reply::Hang,
        &[
            ("ANTHROPIC_TIMEOUT_MS", "600000"),
            ("RUN_DEADLINE_MS", "700"),
        ],
        Expect {
            requests: 1..=1,
            reply_says: "it took too long",
            key_rejected: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_response_body_files_to_inbox() {
    for body in ["<html>502 Bad Gateway</html>", "{\"type\":\"message\"}", ""] {
        let body = body.to_string();
        text_goes_to_inbox(
            move |_: &Value| Reply::Status {
                status: 200,
                headers: vec![],
                body: body.clone(),
            },
            &[],
            Expect {
                requests: 1..=3,
                reply_says: "couldn't file that properly",
                key_rejected: false,
            },
        )
        .await;
    }
}

/// 401 and 403 are not retried: one request, the text in Inbox, and the status says the
/// key was rejected until a call succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_key_is_not_retried_and_the_status_says_so() {
    for (status, kind) in [(401, "authentication_error"), (403, "permission_error")] {
        text_goes_to_inbox(
            move |_: &Value| error_reply(status, &[("retry-after-ms", "1")], kind),
            &[],
            Expect {
                requests: 1..=1,
                reply_says: "the API key was rejected",
                key_rejected: true,
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_key_problem_clears_once_a_call_succeeds() {
    let count = std::sync::atomic::AtomicUsize::new(0);
    let capture = scripted(capture);
    let world = World::new(move |request: &Value| {
        if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return error_reply(401, &[], "authentication_error");
        }
        capture(request)
    })
    .await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "first");
    world.osascript.wait_for_calls(1, WITHIN).await;
    world
        .wait_status("the key rejected and the text filed", |s| {
            s["api_problem"].is_string() && s["failed"] == 1
        })
        .await;
    let shown = world.cli(&["status"]).await;
    assert!(
        shown.starts_with("API key rejected · texts go to Inbox\n")
            && shown.contains("\nAPI: API key rejected (HTTP 401)")
            && shown.contains(" · filed to Inbox 1\n"),
        "{shown}"
    );
    world.db.incoming(ME_CHAT, ME, "second");
    world.osascript.wait_for_calls(2, WITHIN).await;
    let status = world
        .wait_status("the key problem cleared", |s| s["api_problem"].is_null())
        .await;
    bridge.stop().await;
    assert_eq!(status["state"], "running");
    assert_eq!(world.notes("Tasks").len(), 1);
    assert_eq!(world.notes("Inbox").len(), 1);
}

/// Moves the vault away (or breaks it) and back, checking that texts wait meanwhile.
async fn texts_wait_for_the_vault(break_it: impl Fn(&World), mend: impl Fn(&World), why: &str) {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    break_it(&world);
    world.db.incoming(ME_CHAT, ME, "First while away");
    world.db.incoming(ME_CHAT, ME, "Second while away");
    let status = world
        .wait_status("two texts waiting for the vault", |s| s["waiting"] == 2)
        .await;
    let problem = status["vault_problem"].as_str().unwrap();
    assert!(problem.contains(why), "{problem}");
    let shown = world.cli(&["status"]).await;
    assert!(
        shown.starts_with("Vault unavailable · 2 texts waiting\n")
            && shown.contains("\nvault: cannot write to the vault: "),
        "{shown}"
    );
    assert!(world.api.requests().is_empty(), "nothing went to the LLM");
    assert!(
        world.osascript.calls().is_empty(),
        "nobody was told anything yet"
    );
    assert_eq!(
        state::snapshot(&world.data_dir()).claimed.len(),
        2,
        "claimed, not finished"
    );

    mend(&world);
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    let status = world
        .wait_status("nothing waiting, both handled", |s| {
            s["waiting"] == 0 && s["vault_problem"].is_null() && s["handled"] == 2
        })
        .await;
    bridge.stop().await;
    let texts: Vec<&str> = calls.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Saved to Tasks: First while away",
            "Saved to Tasks: Second while away"
        ],
        "handled in order once the vault was back"
    );
    assert_eq!(world.notes("Tasks").len(), 2);
    assert_eq!(status["handled"], 2);
    assert_eq!(
        state::snapshot(&world.data_dir()).claimed,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn texts_wait_while_the_vault_is_missing_and_are_handled_when_it_is_back() {
    texts_wait_for_the_vault(
        |w| std::fs::rename(w.vault(), w.dir.path().join("vault.away")).unwrap(),
        |w| std::fs::rename(w.dir.path().join("vault.away"), w.vault()).unwrap(),
        "does not exist",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn texts_wait_while_the_vault_cannot_be_written() {
    // A file where the vault needs a folder fails every write, even for root.
    texts_wait_for_the_vault(
        |w| {
            let _ = std::fs::remove_dir_all(w.vault().join("_system"));
            std::fs::write(w.vault().join("_system"), b"in the way").unwrap();
        },
        |w| std::fs::remove_file(w.vault().join("_system")).unwrap(),
        "_system",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_chat_db_says_messages_is_not_set_up_and_is_picked_up_once_it_exists() {
    let world = World::new(scripted(capture)).await;
    let path = world.dir.path().join("Messages/later/chat.db");
    let path_text = path.display().to_string();
    let bridge = world.start_with(&[("CHAT_DB_PATH", &path_text)]).await;
    let status = world
        .wait_status("needs setup", |s| s["state"] == "needs_setup")
        .await;
    assert_eq!(status["reason"], "Messages is not set up (no chat.db)");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("no Messages database")
    );

    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let db = FixtureDb::create(&path);
    db.chat(ME_CHAT, ME, false);
    world
        .wait_status("running", |s| s["state"] == "running")
        .await;
    db.incoming(ME_CHAT, ME, "Hello from a new Mac");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    assert_eq!(calls[0].text, "Saved to Tasks: Hello from a new Mac");
}

/// Whether this process runs as root (files it creates belong to uid 0).
fn running_as_root(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").unwrap();
    let uid = std::fs::metadata(&probe).unwrap().uid();
    std::fs::remove_file(&probe).unwrap();
    uid == 0
}

/// Opens every folder and file under `dir` to everyone (for a bridge run as `nobody`).
fn open_up(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir).unwrap();
    if meta.file_type().is_symlink() {
        return;
    }
    let mode = if meta.is_dir() {
        0o777
    } else {
        0o666 | (meta.permissions().mode() & 0o111)
    };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            open_up(&entry.unwrap().path());
        }
    }
}

/// An unreadable chat.db names Full Disk Access, and the bridge keeps checking until it
/// can read it. As root (who reads everything) the bridge runs as `nobody`.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_chat_db_asks_for_full_disk_access_and_keeps_checking() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new(scripted(capture)).await;
    let uid = running_as_root(world.dir.path()).then_some(65_534);
    std::fs::create_dir_all(world.data_dir()).unwrap();
    if uid.is_some() {
        open_up(world.dir.path());
    }
    let db_path = world.db.path().to_path_buf();
    std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut bridge = world.spawn_with(&[], uid);
    bridge.wait_line(crate::util::bridge::READY).await;
    let status = world
        .wait_status("needs setup", |s| s["state"] == "needs_setup")
        .await;
    assert_eq!(status["reason"], "Full Disk Access", "{status:#}");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("Privacy & Security › Full Disk Access"),
        "{status:#}"
    );

    std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    world
        .wait_status("running", |s| s["state"] == "running")
        .await;
    world.db.incoming(ME_CHAT, ME, "Readable again");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    assert_eq!(calls[0].text, "Saved to Tasks: Readable again");
}

fn read_json(path: &std::path::Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Issue 4: corrupt or truncated sessions, ledger, budget and settings files are moved
/// aside under timestamped names, each is reported in the status, and the bridge starts
/// and handles texts.
#[tokio::test(flavor = "multi_thread")]
async fn corrupt_state_files_are_moved_aside_reported_and_the_bridge_starts() {
    let truncated = |valid: &str| valid[..valid.len() / 2].to_string();
    let sessions_ok = r#"{"version":1,"sessions":[]}"#;
    let ledger_ok = r#"{"version":1,"cursor":{"rowid":0,"date":null},"claimed":[],"finished":[]}"#;
    let budget_ok = r#"{"date":"2026-01-01","used":5,"notified":false}"#;
    let settings_ok = r#"{"model":"claude-haiku-4-5"}"#;
    let kinds: Vec<(&str, [String; 4])> = vec![
        (
            "truncated",
            [
                truncated(sessions_ok),
                truncated(ledger_ok),
                truncated(budget_ok),
                truncated(settings_ok),
            ],
        ),
        (
            "garbage",
            [
                "\u{0}\u{1}garbage 🎉".into(),
                "\r\n\u{2028}".into(),
                "[]".into(),
                "nope".into(),
            ],
        ),
        (
            "empty",
            [String::new(), String::new(), String::new(), String::new()],
        ),
        (
            "wrong types",
            [
                r#"{"version":"one","sessions":{}}"#.into(),
                r#"{"version":1,"cursor":{"rowid":"ten"}}"#.into(),
                r#"{"date":"yesterday","used":-1,"notified":0}"#.into(),
                r#"{"allowed_senders":"+15551234567"}"#.into(),
            ],
        ),
    ];
    let names = [
        "sessions.json",
        "ledger.json",
        "budget.json",
        "settings.json",
    ];
    for (kind, contents) in kinds {
        let world = World::new(scripted(capture)).await;
        std::fs::create_dir_all(world.data_dir()).unwrap();
        for (name, bytes) in names.iter().zip(&contents) {
            std::fs::write(world.data_dir().join(name), bytes).unwrap();
        }
        let bridge = world.start().await;
        let status = world.status();
        let moved = status["moved_aside"].as_array().unwrap();
        assert_eq!(moved.len(), 4, "{kind}: {status:#}");
        for (name, bytes) in names.iter().zip(&contents) {
            let stem = name.trim_end_matches(".json");
            let stem = if stem == "budget" {
                "token budget"
            } else {
                stem
            };
            assert!(
                moved.iter().any(|m| m
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{stem} file did not parse"))),
                "{kind}: {name} not reported: {moved:?}"
            );
            let kept: Vec<_> = std::fs::read_dir(world.data_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}.corrupt-")))
                .collect();
            assert_eq!(kept.len(), 1, "{kind}: {name}: {kept:?}");
            assert_eq!(
                std::fs::read(world.data_dir().join(&kept[0])).unwrap(),
                bytes.as_bytes(),
                "{kind}: {name} kept byte for byte"
            );
        }
        world
            .db
            .incoming(ME_CHAT, ME, &format!("After {kind} files"));
        let calls = world.osascript.wait_for_calls(1, WITHIN).await;
        bridge.stop().await;
        assert_eq!(calls[0].text, format!("Saved to Tasks: After {kind} files"));
        // The files written since parse; the old ones are not written again.
        read_json(&world.data_dir().join("sessions.json"));
        assert_eq!(state::check_integrity(&world.data_dir()), Ok(()));
        let snapshot = state::snapshot(&world.data_dir());
        assert_eq!(snapshot.finished.len(), 1, "{kind}: {snapshot:?}");
        for old in ["ledger.json", "budget.json"] {
            assert!(!world.data_dir().join(old).exists(), "{kind}: {old}");
        }
    }
}

/// Issue 8: a data dir from before the state database. The texts `ledger.json` marked
/// finished are not handled again, the text it left claimed is handled once, the day's
/// token count carries over, and both old files are kept aside byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn old_ledger_and_budget_files_are_migrated_and_their_finished_texts_not_handled_again() {
    let world = World::new(scripted(capture)).await;
    let done_once = world.db.incoming(ME_CHAT, ME, "Handled before the upgrade");
    let done_twice = world.db.incoming(ME_CHAT, ME, "Also handled before");
    let left_claimed = world.db.incoming(ME_CHAT, ME, "Claimed when it stopped");
    let claimed = json!({
        "rowid": left_claimed.rowid, "guid": left_claimed.guid,
        "chat": {"guid": ME_CHAT, "identifier": ME, "is_group": false},
        "sender": ME, "text": "Claimed when it stopped",
        "date": chrono::Utc::now().to_rfc3339(),
    });
    let ledger = json!({
        "version": 1,
        "cursor": {"rowid": done_once.rowid - 1, "date": null},
        "claimed": [claimed],
        "finished": [done_once.guid, done_twice.guid],
        "sends": [],
    })
    .to_string();
    let today = chrono::Local::now().date_naive().to_string();
    let budget = json!({"date": today, "used": 123, "notified": false}).to_string();
    std::fs::create_dir_all(world.data_dir()).unwrap();
    std::fs::write(world.data_dir().join("ledger.json"), &ledger).unwrap();
    std::fs::write(world.data_dir().join("budget.json"), &budget).unwrap();

    let bridge = world.start().await;
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    let status = world
        .wait_status("the claimed text handled", |s| s["handled"] == 1)
        .await;
    world.db.incoming(ME_CHAT, ME, "After the upgrade");
    let calls_after = world.osascript.wait_for_calls(2, WITHIN).await;
    bridge.stop().await;

    assert_eq!(calls[0].text, "Saved to Tasks: Claimed when it stopped");
    assert_eq!(calls_after[1].text, "Saved to Tasks: After the upgrade");
    assert_eq!(
        world.osascript.calls().len(),
        2,
        "nothing finished was handled again"
    );
    assert_eq!(world.notes("Tasks").len(), 2);
    assert_eq!(status["moved_aside"], json!([]));
    assert_eq!(
        status["tokens_today"],
        123 + 450,
        "the old count carried over"
    );
    let snapshot = state::snapshot(&world.data_dir());
    assert!(snapshot.claimed.is_empty(), "{snapshot:?}");
    for guid in [&done_once.guid, &done_twice.guid, &left_claimed.guid] {
        assert!(snapshot.finished.contains(guid), "{guid}: {snapshot:?}");
    }
    for (name, bytes) in [("ledger.json", &ledger), ("budget.json", &budget)] {
        assert!(
            !world.data_dir().join(name).exists(),
            "{name} is not used any more"
        );
        let kept: Vec<_> = std::fs::read_dir(world.data_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let file = p.file_name().unwrap().to_string_lossy().into_owned();
                file.starts_with(&format!("{name}.migrated-"))
            })
            .collect();
        assert_eq!(kept.len(), 1, "{name}: {kept:?}");
        assert_eq!(std::fs::read_to_string(&kept[0]).unwrap(), *bytes);
    }
}
