//! Issue 16 — one model turn from a text to its reply.
//!
//! The real binary against the strict fake API and the fake `osascript`: a capture done in
//! one turn (`vault_write` carrying its `reply`, and `log_interaction`, as parallel calls)
//! makes exactly one request; a failing `vault_write` sends no reply and its error goes back
//! to the model; a question asked in one turn keeps its tool results, which lead the user
//! message of the answer; the old one-tool-per-turn script makes three requests and no
//! fourth; and a `kill -9` between a note and its reply never sends the reply twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use crate::util::anthropic::{self as fake, Reply};
use crate::util::bridge::{ME, ME_CHAT, WITHIN, World};
use crate::util::wait;
use crate::{capture, scripted};

const TAGS: &[&str] = &["priority/normal", "status/active"];
const TEMPLATE: &str = "Saved to {path} ✅";

fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

/// The one-turn model filing every text as the task "Call the dentist".
fn one_turn() -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    fake::one_turn_capture("Tasks", "Call the dentist", TAGS, TEMPLATE)
}

fn dentist_path() -> String {
    format!("Tasks/{}_call-the-dentist.md", today())
}

fn assert_strict(world: &World) {
    assert_eq!(world.api.violations(), Vec::<String>::new());
}

/// The `tool_result` blocks at the start of a request's last message.
fn last_results(request: &Value) -> Vec<Value> {
    let messages = request["messages"].as_array().unwrap();
    messages.last().unwrap()["content"]
        .as_array()
        .unwrap()
        .iter()
        .take_while(|b| b["type"] == "tool_result")
        .cloned()
        .collect()
}

/// Waits until the ledger has no claimed (unfinished) text.
async fn wait_finished(world: &World) {
    let data_dir = world.data_dir();
    wait::until(&[world.data_dir()], WITHIN, || {
        crate::util::state::read(&data_dir)?
            .claimed
            .is_empty()
            .then_some(())
    })
    .await
    .expect("the text is finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_capture_in_one_turn_writes_replies_with_the_path_and_logs_in_one_request() {
    let world = World::new(one_turn()).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "call the dentist on friday");
    let status = world.wait_status("captured", |s| s["captured"] == 1).await;
    let shown = world.cli(&["status"]).await;
    let log = bridge.stop().await;
    assert!(
        shown.contains("model requests per text: 1.0; the last text took 1"),
        "{shown}"
    );

    let path = dentist_path();
    let calls = world.osascript.calls();
    assert_eq!(calls.len(), 1, "nothing sent twice: {calls:?}");
    assert_eq!(calls[0].target, ME_CHAT);
    assert_eq!(calls[0].text, format!("Saved to {path} ✅"));
    let notes = world.notes("Tasks");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, path);
    assert!(
        notes[0]
            .1
            .ends_with("# Call the dentist\n\ncall the dentist on friday\n"),
        "{}",
        notes[0].1
    );
    let day_log =
        crate::util::bridge::read(&world.vault().join(format!("_system/logs/{}.md", today())));
    assert!(day_log.contains("call the dentist on friday"), "{day_log}");

    let requests = world.api.requests();
    assert_eq!(requests.len(), 1, "exactly one request");
    assert_strict(&world);
    assert_eq!(status["model_requests"], 1);
    assert_eq!(status["model_runs"], 1);
    assert_eq!(status["last_text_requests"], 1);
    let handled = log
        .lines()
        .find(|l| l.contains("text handled"))
        .expect("a handled line");
    assert!(handled.contains("turns=1"), "{handled}");
    assert_eq!(world.sessions_file()["sessions"], json!([]));
}

/// The first turn names a folder that does not exist: that `vault_write` fails (its reply
/// is not sent), its error goes back, and the model's corrected call files and replies.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_vault_write_sends_no_reply_and_the_corrected_one_does() {
    let capture = one_turn();
    let world = World::new(move |body: &Value| {
        let first = body["messages"].as_array().is_some_and(|m| m.len() == 1);
        if !first {
            return capture(body);
        }
        let input = body["messages"][0]["content"][0]["text"].clone();
        Reply::Message(fake::message(
            vec![
                fake::tool_use_block(
                    "toolu_w",
                    "vault_write",
                    json!({"folder": "Taks", "title": "Call the dentist", "content": input,
                           "confidence": 90, "reply": TEMPLATE}),
                ),
                fake::tool_use_block(
                    "toolu_l",
                    "log_interaction",
                    json!({"input": input, "category": "Tasks"}),
                ),
            ],
            "tool_use",
        ))
    })
    .await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "call the dentist");
    world.wait_status("captured", |s| s["captured"] == 1).await;
    bridge.stop().await;

    let requests = world.api.requests();
    assert_eq!(
        requests.len(),
        2,
        "the error went back once, then the run ended"
    );
    assert_strict(&world);
    let results = last_results(&requests[1].body);
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0]["tool_use_id"], "toolu_w");
    assert_eq!(results[0]["is_error"], true);
    assert!(
        results[0]["content"].as_str().unwrap().contains("Taks"),
        "{results:?}"
    );
    assert_eq!(
        results[1]["is_error"],
        Value::Null,
        "the log call succeeded"
    );

    let calls = world.osascript.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].text, format!("Saved to {} ✅", dentist_path()));
    let second_request_at = requests[1]
        .received_at
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert!(
        calls[0].started_ns > second_request_at,
        "no reply went out before the corrected call"
    );
    assert_eq!(world.notes("Tasks").len(), 1);
}

/// A question in one turn (log and send together) ends the run at once; the answer's
/// request starts its user message with the question's kept tool results, and is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_question_in_one_turn_keeps_its_results_and_the_answer_follows_them() {
    let question = "Is this a task or a note? (task / note)";
    let world = World::new(fake::one_turn_question(question, one_turn())).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "the dentist");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    assert_eq!(calls[0].text, question);
    let status = world.wait_status("waiting", |s| s["asked"] == 1).await;
    assert_eq!(status["last_text_requests"], 1);
    assert_eq!(world.api.requests().len(), 1, "asked after one request");

    world.db.incoming(ME_CHAT, ME, "task");
    let status = world.wait_status("captured", |s| s["captured"] == 1).await;
    bridge.stop().await;

    let requests = world.api.requests();
    assert_eq!(requests.len(), 2);
    assert_strict(&world);
    let answer = requests[1].body["messages"].as_array().unwrap();
    assert_eq!(answer.len(), 3, "{answer:?}");
    let content = answer[2]["content"].as_array().unwrap();
    let kinds: Vec<&str> = content
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    // The answer, then the local time the bridge adds after each input (issue 11).
    assert_eq!(kinds, ["tool_result", "tool_result", "text", "text"]);
    assert_eq!(content[2]["text"], "task");
    assert!(content[3]["text"].as_str().unwrap().starts_with("[Now] "));
    let asked: Vec<&Value> = answer[1]["content"].as_array().unwrap().iter().collect();
    assert_eq!(content[0]["tool_use_id"], asked[0]["id"]);
    assert_eq!(content[1]["tool_use_id"], asked[1]["id"]);
    assert_eq!(status["model_requests"], 2);
    assert_eq!(status["model_runs"], 2);

    let calls = world.osascript.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1].text, format!("Saved to {} ✅", dentist_path()));
    assert_eq!(world.sessions_file()["sessions"], json!([]));
}

/// The old way: one tool per turn (vault_write, log_interaction, send_message). The reply
/// goes out after the third request and the run ends there: no fourth.
#[tokio::test(flavor = "multi_thread")]
async fn the_one_tool_per_turn_script_takes_three_requests_and_no_fourth() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Buy stamps");
    let status = world.wait_status("captured", |s| s["captured"] == 1).await;
    let log = bridge.stop().await;

    assert_eq!(world.api.requests().len(), 3);
    assert_strict(&world);
    assert_eq!(status["last_text_requests"], 3);
    let calls = world.osascript.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].text, "Saved to Tasks: Buy stamps");
    assert!(
        log.lines()
            .any(|l| l.contains("text handled") && l.contains("turns=3")),
        "{log}"
    );
}

/// A model whose request number `hang_at` (from 0) never answers; every other request is
/// answered by the one-turn capture.
fn hanging_at(hang_at: usize) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    let seen = AtomicUsize::new(0);
    let capture = one_turn();
    move |body| match seen.fetch_add(1, Ordering::SeqCst) {
        n if n == hang_at => Reply::Hang,
        _ => capture(body),
    }
}

/// `kill -9` after the note is on disk and before its reply went out (Messages refused it,
/// and the model's next request is in flight): after the restart the note is found, not
/// written again, and the reply is sent once.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_between_the_note_and_its_reply_sends_the_reply_once_after_restart() {
    let world = World::new(hanging_at(1)).await;
    let bridge = world.start().await;
    world
        .osascript
        .fail_always(1, "execution error: Messages got an error (-1708)");
    world.db.incoming(ME_CHAT, ME, "call the dentist");
    world.api.wait_for_requests(2, WITHIN).await;
    assert_eq!(world.notes("Tasks").len(), 1, "the note is on disk");
    assert_eq!(world.osascript.calls().len(), 1, "the refused reply");
    bridge.kill().await;
    world.osascript.succeed();

    let bridge = world.start().await;
    world.wait_status("captured", |s| s["captured"] == 1).await;
    wait_finished(&world).await;
    bridge.stop().await;

    let calls = world.osascript.calls();
    let text = format!("Saved to {} ✅", dentist_path());
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(calls.iter().all(|c| c.text == text), "{calls:?}");
    assert_eq!(world.status()["unconfirmed_sends"], 0);
    assert_eq!(
        world.notes("Tasks").len(),
        1,
        "the note was not written twice"
    );
    let requests = world.api.requests();
    let told = last_results(&requests[1].body);
    assert!(
        told[0]["content"]
            .as_str()
            .unwrap()
            .contains("its reply could not be sent"),
        "{told:?}"
    );
    assert_strict(&world);
}

/// `kill -9` while the reply's `osascript` runs: it may have gone out, so after the
/// restart it is reported unconfirmed and never sent again.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_while_the_reply_is_in_flight_reports_it_unconfirmed_never_twice() {
    let world = World::new(one_turn()).await;
    let bridge = world.start().await;
    world.osascript.hang();
    world.db.incoming(ME_CHAT, ME, "call the dentist");
    world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.kill().await;
    world.osascript.release();

    let bridge = world.start().await;
    let status = world
        .wait_status("one unconfirmed reply", |s| {
            s["unconfirmed_sends"] == 1 && s["captured"] == 1
        })
        .await;
    wait_finished(&world).await;
    bridge.stop().await;

    assert_eq!(world.osascript.calls().len(), 1, "never sent twice");
    assert_eq!(world.notes("Tasks").len(), 1);
    assert_eq!(
        status["last_text_requests"], 1,
        "the re-run stopped after its turn"
    );
    assert_eq!(world.api.requests().len(), 2, "one request per run");
    let results = last_results(&world.api.requests()[1].body);
    assert!(results.is_empty(), "the re-run began afresh");
    assert_strict(&world);
}
