//! Issue 11: reminders that text you back, through the real binary. The fake model files
//! "Remind me to call the dentist" as a task and sets its reminder a few seconds ahead; the
//! fake `osascript` records when and where each text went; the note on disk says what the
//! bridge did. Exactly once across kill -9, at the time the note says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Local};
use serde_json::{Value, json};

use crate::util::anthropic::{self as fake, Reply};
use crate::util::bridge::{ME, ME_CHAT, WITHIN, World};
use crate::util::osascript::Call;

const TEXT: &str = "Remind me to call the dentist";
const TITLE: &str = "Call the dentist";

/// When the fake model set the reminder for (local, whole seconds).
type SetFor = Arc<Mutex<Option<DateTime<Local>>>>;

fn note_path() -> String {
    format!(
        "Tasks/{}_call-the-dentist.md",
        Local::now().format("%Y-%m-%d")
    )
}

/// A model that files the text as a task (no reply), then sets its reminder `lead` from the
/// moment it is asked (a local time without offset, as the prompt tells it) and confirms.
fn reminding(lead: Duration, set_for: SetFor) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    move |request| {
        let (input, turn) = crate::run_step(request);
        assert_eq!(input, TEXT);
        let last = request["messages"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone();
        let now = last["content"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b["text"].as_str())
            .any(|t| t.starts_with("[Now] "));
        assert!(turn > 0 || now, "the run's input carries the time: {last}");
        Reply::Message(match turn {
            0 => fake::message(
                vec![
                    fake::tool_use_block(
                        "toolu_w",
                        "vault_write",
                        json!({"folder": "Tasks", "title": TITLE, "content": "- [ ] Call the dentist\nBring the insurance card.", "tags": ["priority/normal", "status/scheduled"], "confidence": 95}),
                    ),
                    fake::tool_use_block(
                        "toolu_l",
                        "log_interaction",
                        json!({"input": TEXT, "category": "task", "confidence": 95}),
                    ),
                ],
                "tool_use",
            ),
            1 => {
                let due = Local::now() + chrono::Duration::from_std(lead).unwrap();
                let due = due.with_nanosecond_zero();
                *set_for.lock().unwrap() = Some(due);
                let at = due.format("%Y-%m-%dT%H:%M:%S").to_string();
                fake::message(
                    vec![
                        fake::tool_use_block(
                            "toolu_r",
                            "vault_set_reminder",
                            json!({"filepath": note_path(), "due": at}),
                        ),
                        fake::tool_use_block(
                            "toolu_s",
                            "send_message",
                            json!({"message": format!("I'll remind you at {}", due.format("%H:%M:%S"))}),
                        ),
                    ],
                    "tool_use",
                )
            }
            _ => fake::text("Done."),
        })
    }
}

trait WholeSeconds {
    fn with_nanosecond_zero(self) -> Self;
}

impl WholeSeconds for DateTime<Local> {
    fn with_nanosecond_zero(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).unwrap()
    }
}

fn ns(t: DateTime<Local>) -> u128 {
    t.timestamp_nanos_opt().unwrap() as u128
}

/// Asserts that `call` is the reminder, into my chat, started at `due` (never before it,
/// and by its timer, not a 30 s look at the clock).
fn assert_on_time(call: &Call, due: DateTime<Local>) {
    assert_eq!(call.target, ME_CHAT);
    assert_eq!(
        call.text,
        format!("Reminder: {TITLE}\nBring the insurance card.")
    );
    assert!(
        call.started_ns >= ns(due),
        "early by {} ms",
        (ns(due) - call.started_ns) / 1_000_000
    );
    let late_ms = (call.started_ns - ns(due)) / 1_000_000;
    assert!(late_ms < 5_000, "{late_ms} ms late");
}

/// The note as the bridge and the user see it.
trait Note {
    fn note(&self) -> String;
    async fn note_sent(&self) -> String;
    fn edit_due(&self, from: DateTime<Local>, to: DateTime<Local>);
}

impl Note for World {
    fn note(&self) -> String {
        crate::util::bridge::read(&self.vault().join(note_path()))
    }

    /// Waits until the note's reminder says `sent: true`, and returns the note.
    async fn note_sent(&self) -> String {
        crate::util::wait::until(&[self.vault()], WITHIN, || {
            let text = std::fs::read_to_string(self.vault().join(note_path())).ok()?;
            text.contains("  sent: true\n").then_some(text)
        })
        .await
        .unwrap_or_else(|| panic!("the note never said sent: {}", self.note()))
    }

    /// Rewrites the note's due time (as the user would in Obsidian).
    fn edit_due(&self, from: DateTime<Local>, to: DateTime<Local>) {
        let path = self.vault().join(note_path());
        let text = self.note();
        let (old, new) = (rfc(from), rfc(to));
        assert!(text.contains(&old), "{text}");
        std::fs::write(path, text.replace(&old, &new)).unwrap();
    }
}

fn rfc(t: DateTime<Local>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn due_of(set_for: &SetFor) -> DateTime<Local> {
    set_for.lock().unwrap().expect("the model set the reminder")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reminder_set_five_seconds_ahead_arrives_once_at_its_time_in_its_chat() {
    let set_for = SetFor::default();
    let world = World::new(reminding(Duration::from_secs(5), set_for.clone())).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, TEXT);
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    let due = due_of(&set_for);
    assert_eq!(
        calls[0].text,
        format!("I'll remind you at {}", due.format("%H:%M:%S"))
    );
    let note = world.note();
    assert!(
        note.contains(&format!("reminder:\n  due: {}\n  sent: false\n", rfc(due))),
        "{note}"
    );
    assert!(
        note.ends_with(&format!(
            "- [ ] Call the dentist 📅 {}\nBring the insurance card.\n",
            due.format("%Y-%m-%d")
        )),
        "the Tasks plugin's due date: {note}"
    );
    world
        .wait_status("next reminder", |s| s["next_reminder"]["title"] == TITLE)
        .await;

    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    assert_on_time(&calls[1], due);
    let note = world.note_sent().await;
    assert!(note.contains("  sent_at: "), "{note}");
    world
        .wait_status("nothing pending", |s| s["next_reminder"].is_null())
        .await;
    bridge.stop().await;
    assert_eq!(world.osascript.calls().len(), 2, "sent once");
    assert!(
        world.api.violations().is_empty(),
        "{:?}",
        world.api.violations()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_just_before_and_just_after_it_is_due_still_sends_it_exactly_once() {
    let set_for = SetFor::default();
    let world = World::new(reminding(Duration::from_secs(6), set_for.clone())).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, TEXT);
    world.osascript.wait_for_calls(1, WITHIN).await;
    // The text itself is handled (finished in the ledger): only the reminder is at stake.
    world.wait_status("captured", |s| s["captured"] == 1).await;
    // Killed before it is due: the next bridge sends it at its time.
    bridge.kill().await;
    let bridge = world.start().await;
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    assert_on_time(&calls[1], due_of(&set_for));
    // Killed right after it went out, perhaps before the note said so: not sent again.
    bridge.kill().await;
    let bridge = world.start().await;
    world.note_sent().await;
    world
        .wait_status("nothing pending", |s| s["next_reminder"].is_null())
        .await;
    bridge.stop().await;
    assert_eq!(world.osascript.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_while_sending_it_is_reported_unconfirmed_and_never_repeated() {
    let set_for = SetFor::default();
    let world = World::new(reminding(Duration::from_secs(5), set_for.clone())).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, TEXT);
    world.osascript.wait_for_calls(1, WITHIN).await;
    world.wait_status("captured", |s| s["captured"] == 1).await;
    world.osascript.hang();
    world.osascript.wait_for_calls(2, WITHIN).await;
    // kill -9 while osascript is sending it; the hung fake is let go once the bridge is dead.
    tokio::join!(bridge.kill(), async {
        tokio::task::yield_now().await;
        world.osascript.release();
    });
    let bridge = world.start().await;
    world.note_sent().await;
    world
        .wait_status("reported", |s| s["unconfirmed_sends"] == 1)
        .await;
    bridge.stop().await;
    let calls = world.osascript.calls();
    assert_eq!(calls.len(), 2, "not sent again: {calls:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reminder_due_while_the_bridge_was_stopped_arrives_at_start_saying_when() {
    let set_for = SetFor::default();
    let world = World::new(reminding(Duration::from_secs(3600), set_for.clone())).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, TEXT);
    world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    // Stopped for hours: its time is now two hours ago.
    let due = due_of(&set_for);
    let past = (Local::now() - chrono::Duration::hours(2)).with_nanosecond_zero();
    world.edit_due(due, past);
    let bridge = world.start().await;
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    assert_eq!(calls[1].target, ME_CHAT, "the chat it was set from");
    assert_eq!(
        calls[1].text,
        format!(
            "Reminder: {TITLE} (was due {})\nBring the insurance card.",
            past.format("%a %-d %b %H:%M")
        )
    );
    world.note_sent().await;
    bridge.stop().await;
    assert_eq!(world.osascript.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_note_is_the_truth_a_later_due_is_followed_and_a_removed_one_never_sent() {
    let set_for = SetFor::default();
    let world = World::new(reminding(Duration::from_secs(4), set_for.clone())).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, TEXT);
    world.osascript.wait_for_calls(1, WITHIN).await;
    // The user moves it four seconds later in Obsidian.
    let due = due_of(&set_for);
    let later = due + chrono::Duration::seconds(4);
    world.edit_due(due, later);
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    assert_on_time(&calls[1], later);

    // Two reminders typed in Obsidian (they go to the only allowed sender): the first is
    // deleted before it is due, the second shows when the first would have gone.
    let soon = (Local::now() + chrono::Duration::seconds(3)).with_nanosecond_zero();
    let sentinel = soon + chrono::Duration::seconds(2);
    let typed = |title: &str, due: DateTime<Local>| {
        format!(
            "---\ntags: []\nreminder:\n  due: {}\n  sent: false\n---\n# {title}\n",
            rfc(due)
        )
    };
    let deleted = world.vault().join("Tasks/Deleted.md");
    std::fs::write(&deleted, typed("Deleted", soon)).unwrap();
    std::fs::write(
        world.vault().join("Tasks/Sentinel.md"),
        typed("Sentinel", sentinel),
    )
    .unwrap();
    world
        .wait_status("armed", |s| s["next_reminder"]["title"] == "Deleted")
        .await;
    std::fs::write(&deleted, "---\ntags: []\n---\n# Deleted\n").unwrap();
    let calls = world.osascript.wait_for_calls(3, WITHIN).await;
    bridge.stop().await;
    let texts: Vec<&str> = calls.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts[2], "Reminder: Sentinel", "{texts:?}");
    assert_eq!(calls.len(), 3, "{texts:?}");
    assert_eq!(
        crate::util::bridge::read(&deleted),
        "---\ntags: []\n---\n# Deleted\n"
    );
}

/// "Done with the dentist": the model finds the note among the pending reminders and
/// archives it; the name is kept (`-1`, an older note has it), the note is stamped, its
/// task marked done and its reminder cancelled, so it is never sent.
#[tokio::test(flavor = "multi_thread")]
async fn done_with_it_archives_the_note_and_cancels_its_reminder() {
    let world = World::new(|request: &Value| {
        let (input, turn) = crate::run_step(request);
        assert_eq!(input, "Done with the dentist");
        let last = request["messages"].as_array().unwrap().last().unwrap();
        Reply::Message(match turn {
            0 => fake::tool_use("toolu_r", "vault_list_reminders", json!({})),
            1 => {
                let listed: Value =
                    serde_json::from_str(last["content"][0]["content"].as_str().expect("the list"))
                        .unwrap();
                let path = listed[0]["path"].as_str().unwrap();
                fake::message(
                    vec![
                        fake::tool_use_block(
                            "toolu_m",
                            "vault_move",
                            json!({"filepath": path, "folder": "Archive"}),
                        ),
                        fake::tool_use_block(
                            "toolu_s",
                            "send_message",
                            json!({"message": "Archived: Call the dentist"}),
                        ),
                    ],
                    "tool_use",
                )
            }
            _ => fake::text("Done."),
        })
    })
    .await;
    let soon = (Local::now() + chrono::Duration::seconds(8)).with_nanosecond_zero();
    for dir in ["Tasks", "Archive"] {
        std::fs::create_dir_all(world.vault().join(dir)).unwrap();
    }
    let task = format!(
        "---\ntags:\n- priority/normal\n- status/active\nreminder:\n  due: {}\n  sent: false\n---\n# {TITLE}\n\n- [ ] {TITLE}\n",
        rfc(soon)
    );
    std::fs::write(world.vault().join("Tasks/dentist.md"), &task).unwrap();
    std::fs::write(world.vault().join("Archive/dentist.md"), "older\n").unwrap();
    let sentinel = soon + chrono::Duration::seconds(2);
    std::fs::write(
        world.vault().join("Tasks/Sentinel.md"),
        format!(
            "---\nreminder:\n  due: {}\n  sent: false\n---\n# Sentinel\n",
            rfc(sentinel)
        ),
    )
    .unwrap();
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Done with the dentist");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    assert_eq!(calls[0].text, "Archived: Call the dentist");
    let archived = crate::util::bridge::read(&world.vault().join("Archive/dentist-1.md"));
    assert!(!world.vault().join("Tasks/dentist.md").exists());
    assert_eq!(
        crate::util::bridge::read(&world.vault().join("Archive/dentist.md")),
        "older\n"
    );
    assert!(
        archived.contains("- status/done\n") && !archived.contains("status/active"),
        "{archived}"
    );
    assert!(
        archived.contains("\noriginal_folder: Tasks\n") && archived.contains("\narchived_at: "),
        "{archived}"
    );
    assert!(!archived.contains("reminder:"), "{archived}");
    assert!(
        archived.ends_with(&format!("# {TITLE}\n\n- [ ] {TITLE}\n")),
        "{archived}"
    );
    // The sentinel comes; the archived reminder never did.
    let calls = world.osascript.wait_for_calls(2, WITHIN).await;
    bridge.stop().await;
    let texts: Vec<&str> = calls.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(texts, ["Archived: Call the dentist", "Reminder: Sentinel"]);
}
