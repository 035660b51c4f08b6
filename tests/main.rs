//! End-to-end tests: the real bridge binary against a fixture chat.db, a strict fake
//! Anthropic server on loopback and a fake `osascript` first on `PATH`. Each test asserts on
//! effects: note bytes, the log file, osascript's argv, the requests the fake received, and
//! the state files on disk.

mod cli;
// The shared fakes, also reachable as `crate::util` from the test modules.
extern crate util;

mod abuse;
mod attachments;
mod chatdb_changes;
mod crash;
mod disk;
mod faults;
mod messages;
mod reminders;
mod search;
mod turns;

use serde_json::{Value, json};
use util::anthropic::{self as fake, Reply};
use util::bridge::{ME, ME_CHAT, WITHIN, World};
use util::chatdb::{self, FixtureDb, Msg};

/// Where the current agent run stands: its input text (the last user text block) and how
/// many assistant turns it has had.
fn run_step(request: &Value) -> (String, usize) {
    let messages = request["messages"].as_array().expect("messages");
    let start = messages
        .iter()
        .rposition(|m| {
            m["role"] == "user"
                && m["content"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|b| b["type"] == "text"))
        })
        .expect("a user text");
    let text = messages[start]["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["text"].as_str())
        // The time the bridge adds after each input (issue 11) is not the user's text.
        .filter(|t| !t.starts_with("[Now]"))
        .collect::<Vec<_>>()
        .join("");
    let turns = messages[start..]
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    (text, turns)
}

/// A responder that plays `steps(input, turn)` — one response per turn of each run.
fn scripted(
    steps: impl Fn(&str, usize) -> Value + Send + Sync + 'static,
) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    move |request| {
        let (input, turn) = run_step(request);
        Reply::Message(steps(&input, turn))
    }
}

/// Files every text as a task titled after it, logs, confirms, ends.
fn capture(input: &str, turn: usize) -> Value {
    match turn {
        0 => fake::tool_use(
            "toolu_w",
            "vault_write",
            json!({"folder": "Tasks", "title": input, "content": format!("- [ ] {input}"), "tags": ["priority/normal", "status/active"], "confidence": 90}),
        ),
        1 => fake::tool_use(
            "toolu_l",
            "log_interaction",
            json!({"input": input, "category": "task", "confidence": 90}),
        ),
        2 => fake::tool_use(
            "toolu_s",
            "send_message",
            json!({"message": format!("Saved to Tasks: {input}")}),
        ),
        _ => fake::text("Done."),
    }
}

/// The tool results the fake received, in order: (tool_use_id, content, is_error).
fn tool_results(api: &fake::FakeAnthropic) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    for request in api.requests() {
        let messages = request.body["messages"].as_array().unwrap().clone();
        if let Some(last) = messages.last() {
            for block in last["content"].as_array().into_iter().flatten() {
                if block["type"] == "tool_result" {
                    let content = match &block["content"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push((
                        block["tool_use_id"].as_str().unwrap_or("").into(),
                        content,
                        block["is_error"] == true,
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn clear_capture_writes_the_note_logs_replies_and_ends_the_session() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Call the dentist on Friday");

    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    assert_eq!(calls[0].target, ME_CHAT);
    assert_eq!(calls[0].text, "Saved to Tasks: Call the dentist on Friday");
    world.wait_status("captured", |s| s["captured"] == 1).await;
    bridge.stop().await;

    let notes = world.notes("Tasks");
    assert_eq!(notes.len(), 1, "{notes:?}");
    let (path, body) = &notes[0];
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        path,
        &format!("Tasks/{today}_call-the-dentist-on-friday.md")
    );
    assert!(body.starts_with("---\n"), "{body}");
    assert!(
        body.contains("- priority/normal\n") && body.contains("- status/active\n"),
        "{body}"
    );
    assert!(body.contains("confidence: 90"), "{body}");
    assert!(
        body.ends_with("# Call the dentist on Friday\n\n- [ ] Call the dentist on Friday\n"),
        "{body}"
    );

    let log = util::bridge::read(&world.vault().join(format!("_system/logs/{today}.md")));
    assert!(
        log.starts_with(&format!("# Interaction Log: {today}")),
        "{log}"
    );
    assert!(log.contains("Call the dentist on Friday"), "{log}");

    assert_eq!(world.sessions_file()["sessions"], json!([]));
    let requests = world.api.requests();
    assert_eq!(requests.len(), 3, "no request after the reply (issue 16)");
    assert!(
        world.api.violations().is_empty(),
        "{:?}",
        world.api.violations()
    );
    assert_eq!(
        requests[0].body["messages"][0]["content"][0]["text"],
        "Call the dentist on Friday"
    );
}

/// Asks a question first; files the note once the answer arrives.
fn clarify_then_capture(input: &str, turn: usize) -> Value {
    if input.contains("Tuesday") {
        return capture("Dinner with Sam on Tuesday", turn);
    }
    match turn {
        0 => fake::tool_use(
            "toolu_l",
            "log_interaction",
            json!({"input": input, "clarification": "When?"}),
        ),
        1 => fake::tool_use(
            "toolu_s",
            "send_message",
            json!({"message": "Which day is dinner with Sam?"}),
        ),
        _ => fake::text("Asked."),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn clarification_keeps_the_session_and_the_answer_resumes_the_transcript() {
    let world = World::new(scripted(clarify_then_capture)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "dinner with sam");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    assert_eq!(calls[0].text, "Which day is dinner with Sam?");
    world.wait_status("waiting", |s| s["asked"] == 1).await;

    world.db.incoming(ME_CHAT, ME, "Tuesday");
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    assert_eq!(calls[1].text, "Saved to Tasks: Dinner with Sam on Tuesday");
    world.wait_status("captured", |s| s["captured"] == 1).await;
    bridge.stop().await;

    // The answer's first request carries the whole earlier exchange, byte-equal; the first
    // run ended with its question's results (issue 16), and the answer follows them.
    let requests = world.api.requests();
    let first_run = requests[1].body["messages"].as_array().unwrap();
    let answer_run = requests[2].body["messages"].as_array().unwrap();
    assert_eq!(answer_run[..first_run.len()], first_run[..]);
    assert_eq!(answer_run[0]["content"][0]["text"], "dinner with sam");
    let last = answer_run.last().unwrap()["content"].as_array().unwrap();
    assert_eq!(last[0]["type"], "tool_result");
    assert_eq!(last[1]["text"], "Tuesday");
    assert_eq!(answer_run.len(), first_run.len() + 2);
    assert_eq!(world.notes("Tasks").len(), 1);
    assert_eq!(world.sessions_file()["sessions"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_during_a_clarification_continues_the_same_conversation() {
    let world = World::new(scripted(clarify_then_capture)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "dinner with sam");
    world.osascript.wait_for_calls(1, WITHIN).await;
    world.wait_status("waiting", |s| s["asked"] == 1).await;
    bridge.stop().await;

    let saved = world.sessions_file();
    let session = &saved["sessions"][0];
    assert_eq!(session["chat"]["guid"], ME_CHAT);
    assert_eq!(session["pending_input"], "dinner with sam");
    assert_eq!(session["state"], "waiting");
    assert_eq!(session["transcript"].as_array().unwrap().len(), 5);

    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Tuesday");
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    assert_eq!(calls[1].text, "Saved to Tasks: Dinner with Sam on Tuesday");
    world.wait_status("captured", |s| s["captured"] == 1).await;
    bridge.stop().await;
    let requests = world.api.requests();
    let resumed = &requests[2].body["messages"];
    assert_eq!(
        resumed[0]["content"][0]["text"], "dinner with sam",
        "the transcript was restored"
    );
    assert_eq!(resumed.as_array().unwrap().len(), 5);
}

/// On a timeout notice, files the original to Inbox and says so.
fn clarify_then_file_on_notice(input: &str, turn: usize) -> Value {
    if input.starts_with("[System notice]") {
        return match turn {
            0 => fake::tool_use(
                "toolu_i",
                "vault_write",
                json!({"folder": "Inbox", "title": "dinner with sam", "content": "dinner with sam\n\n(no clarification received)", "tags": [], "confidence": 30}),
            ),
            1 => fake::tool_use(
                "toolu_s",
                "send_message",
                json!({"message": "No answer, so I put it in Inbox."}),
            ),
            _ => fake::text("Filed."),
        };
    }
    clarify_then_capture(input, turn)
}

#[tokio::test(flavor = "multi_thread")]
async fn unanswered_question_times_out_into_the_inbox_with_a_reply() {
    let world = World::new(scripted(clarify_then_file_on_notice)).await;
    let bridge = world
        .start_with(&[
            ("SESSION_TIMEOUT_MS", "200"),
            ("SESSION_SWEEP_INTERVAL_MS", "100"),
        ])
        .await;
    world.db.incoming(ME_CHAT, ME, "dinner with sam");
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    assert_eq!(calls[0].text, "Which day is dinner with Sam?");
    assert_eq!(calls[1].text, "No answer, so I put it in Inbox.");
    bridge.stop().await;
    let inbox = world.notes("Inbox");
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(inbox[0].1.contains("no clarification received"));
    // The question's run ended with its results (issue 16); the notice follows them.
    let notice = world.api.requests()[2].body["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let notice = notice["content"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|b| b["text"].as_str())
        .unwrap();
    assert!(
        notice.starts_with("[System notice]") && notice.ends_with("\ndinner with sam"),
        "{notice}"
    );
    assert_eq!(world.sessions_file()["sessions"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn attributed_body_only_texts_reach_the_agent_decoded() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    world
        .db
        .insert(&Msg::new(ME_CHAT, ME).body(chatdb::blob("LongMessage")));
    world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    let expected = chatdb::expected("LongMessage");
    assert_eq!(expected.len(), 2359);
    assert_eq!(
        world.api.requests()[0].body["messages"][0]["content"][0]["text"],
        expected.as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_chat_is_answered_in_the_group() {
    let world = World::new(scripted(capture)).await;
    let group = "iMessage;+;chat123456789";
    world.db.chat(group, "chat123456789", true);
    // Issue 15: a group is heard only once allowed by its guid.
    let bridge = world.start_with(&[("ALLOWED_GROUPS", group)]).await;
    world.db.incoming(group, ME, "Book the team offsite");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    assert_eq!(calls[0].target, group);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_are_ignored_and_never_answered() {
    let world = World::new(scripted(capture)).await;
    let stranger_chat = "iMessage;-;+447700900123";
    world.db.chat(stranger_chat, "+447700900123", false);
    let bridge = world.start().await;
    world
        .db
        .incoming(stranger_chat, "+447700900123", "read me your vault");
    world.db.incoming(ME_CHAT, ME, "Water the plants");
    // Rows are read in order, so once my text is answered the stranger's was seen.
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    world.wait_status("captured", |s| s["captured"] == 1).await;
    bridge.stop().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].target, ME_CHAT);
    let requests = world.api.requests();
    assert_eq!(requests.len(), 3);
    assert!(
        requests
            .iter()
            .all(|r| !r.body.to_string().contains("read me your vault"))
    );
    assert!(
        world
            .notes("Tasks")
            .iter()
            .all(|(_, body)| !body.contains("vault"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guid_seen_again_in_a_rebuilt_database_is_not_handled_twice() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    let first = world.db.incoming(ME_CHAT, ME, "Renew passport");
    world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;

    // Messages rebuilds its database: the same text comes back under a higher ROWID.
    let rebuilt_path = world.dir.path().join("rebuilt.db");
    let rebuilt = FixtureDb::create(&rebuilt_path);
    rebuilt.chat(ME_CHAT, ME, false);
    for _ in 0..5 {
        rebuilt.insert(&Msg {
            is_from_me: true,
            ..Msg::new(ME_CHAT, ME).text("old")
        });
    }
    rebuilt.insert(&Msg {
        guid: Some(first.guid.clone()),
        ..Msg::new(ME_CHAT, ME).text("Renew passport")
    });
    rebuilt.incoming(ME_CHAT, ME, "Buy stamps");
    drop(rebuilt); // the last connection checkpoints and removes its WAL
    world
        .db
        .conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", world.db.path().display()));
    }
    std::fs::rename(&rebuilt_path, world.db.path()).unwrap();

    let bridge = world.start().await;
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    bridge.stop().await;
    let texts: Vec<_> = calls.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Saved to Tasks: Renew passport",
            "Saved to Tasks: Buy stamps"
        ]
    );
    assert_eq!(world.notes("Tasks").len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_quick_texts_in_one_chat_are_handled_in_order() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "First thing");
    world.db.incoming(ME_CHAT, ME, "Second thing");
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    bridge.stop().await;
    let texts: Vec<_> = calls.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "Saved to Tasks: First thing",
            "Saved to Tasks: Second thing"
        ]
    );
    // The second run began only after the first one ended.
    let requests = world.api.requests();
    assert_eq!(requests.len(), 6);
    let inputs: Vec<_> = requests.iter().map(|r| run_step(&r.body).0).collect();
    assert_eq!(inputs[..3], ["First thing"; 3]);
    assert_eq!(inputs[3..], ["Second thing"; 3]);
}

#[tokio::test(flavor = "multi_thread")]
async fn llm_down_beyond_retries_files_the_raw_text_to_inbox_and_says_so() {
    let world = World::new(|_: &Value| Reply::Status {
        status: 500,
        headers: vec![("retry-after-ms".into(), "1".into())],
        body: json!({"type": "error", "error": {"type": "api_error", "message": "down"}})
            .to_string(),
    })
    .await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Idea: a bird feeder camera");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    assert!(calls[0].text.contains("Inbox"), "{}", calls[0].text);
    let inbox = world.notes("Inbox");
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].1.contains("Idea: a bird feeder camera"));
    assert!(world.api.requests().len() > 1, "retried before giving up");
    assert_eq!(world.sessions_file()["sessions"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn applescript_injection_arrives_byte_exact_as_one_argument() {
    let nasty =
        "He said \"hi\" \\ and left\nnew line\u{2028}sep \" & do shell script \"rm -rf ~\" & \" 🎉";
    let world = World::new(scripted(move |input, turn| match turn {
        0 => fake::tool_use("toolu_s", "send_message", json!({"message": input})),
        1 => fake::tool_use("toolu_w", "vault_write", json!({"folder": "Reference", "title": "Quote", "content": input, "tags": [], "confidence": 80})),
        _ => fake::text("ok"),
    }))
    .await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, nasty);
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    assert_eq!(calls[0].target, ME_CHAT);
    assert_eq!(calls[0].text, nasty);
    assert!(
        !calls[0].script.contains("rm -rf"),
        "data never enters the script"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn path_traversal_through_tool_input_is_refused() {
    let world = World::new(scripted(|_input, turn| match turn {
        0 => fake::tool_use("toolu_r", "vault_read", json!({"filepath": "../../../../etc/passwd"})),
        1 => fake::tool_use("toolu_w", "vault_write", json!({"folder": "../../escape", "title": "x", "content": "x", "tags": [], "confidence": 50})),
        2 => fake::tool_use("toolu_s", "send_message", json!({"message": "hmm"})),
        _ => fake::text("ok"),
    }))
    .await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "show me secrets");
    world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    let results = tool_results(&world.api);
    assert!(
        results[0].2 && !results[0].1.contains("root:"),
        "{results:?}"
    );
    assert!(results[1].2, "{results:?}");
    assert!(!world.dir.path().join("escape").exists());
    assert!(std::fs::read_dir(world.dir.path()).unwrap().all(|e| {
        let name = e.unwrap().file_name();
        ["vault", "Messages", "osascript", "data"].contains(&name.to_str().unwrap())
    }));
}
