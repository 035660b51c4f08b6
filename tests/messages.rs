//! Issue 15: the bridge behaves as Messages really behaves — a chat with yourself records
//! every reply twice, the model may end a turn with no content, SMS and group chats come
//! through the same database, handles can hold look-alike characters, texts can be huge.
//! Every test runs the real binary against the fake Messages (replies written back as
//! Messages writes them) and the strict fake API, and waits on the status file.

use serde_json::{Value, json};

use crate::util::anthropic::{self as fake, Reply};
use crate::util::bridge::{ME, ME_CHAT, World};
use crate::util::chatdb::{Msg, blob};

const STRANGER: &str = "+447700900123";

use crate::run_step as step;

/// Files every text as a task titled with its first words, confirms with the text quoted.
fn capture(request: &Value) -> Reply {
    let (input, turn) = step(request);
    let title: String = input.chars().take(40).collect();
    let reply = match turn {
        0 => fake::tool_use(
            &format!("toolu_w{}", request["messages"].as_array().unwrap().len()),
            "vault_write",
            json!({"folder": "Tasks", "title": title, "content": input, "tags": ["status/active"], "confidence": 90}),
        ),
        1 => fake::tool_use(
            &format!("toolu_s{}", request["messages"].as_array().unwrap().len()),
            "send_message",
            json!({"message": format!("Saved to Tasks: \"{title}\" (tagged status/active)")}),
        ),
        _ => fake::text("Done."),
    };
    Reply::Message(reply)
}

/// Issue 15: with the person's own Apple ID on the Mac, three texts in the chat with
/// themselves give three replies and three notes: the copies Messages records of each reply
/// (as sent, and as received with a new guid, in `attributedBody` only, quotes curled) are
/// never taken for texts.
#[tokio::test(flavor = "multi_thread")]
async fn three_texts_in_a_chat_with_yourself_get_three_replies_and_three_notes() {
    let world = World::self_chat(capture).await;
    let bridge = world.start().await;
    let texts = [
        "Call \"Sam\" about the lease",
        "idea: a bike shed that's also a greenhouse 🌱",
        "buy oat milk",
    ];
    for text in texts {
        world.db.insert(&Msg {
            destination: Some(ME.to_string()),
            ..Msg::new(ME_CHAT, ME).text(text)
        });
    }
    let status = world
        .wait_status("three captures and their three echoes", |s| {
            s["captured"] == 3 && s["echoes_ignored"] == 3
        })
        .await;
    bridge.stop().await;
    let replies = world.osascript.calls();
    let notes = world.notes("Tasks");
    println!(
        "self-chat: {} texts, {} replies, {} notes, {} echoes ignored",
        texts.len(),
        replies.len(),
        notes.len(),
        status["echoes_ignored"]
    );
    assert_eq!(replies.len(), 3, "{replies:#?}");
    assert_eq!(notes.len(), 3, "{notes:#?}");
    assert_eq!(status["handled"], 3);
    assert!(replies[0].text.contains("\"Call \"Sam\" about the lease\""));
    assert_eq!(world.api.violations(), Vec::<String>::new());
    // Every row of the chat: 3 texts, and each reply twice (sent, received).
    let rows: i64 = world
        .db
        .conn()
        .query_row("SELECT COUNT(*) FROM message", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 9);
}

/// Asks a question, then ends its turn with no content (as the API does after tool
/// results); files the note once the answer comes.
fn asks_then_goes_quiet(request: &Value) -> Reply {
    let (input, turn) = step(request);
    if input.contains("Tuesday") {
        return capture(request);
    }
    let reply = match turn {
        0 => fake::tool_use(
            "toolu_ask",
            "send_message",
            json!({"message": "Which day is dinner with Sam?"}),
        ),
        _ => fake::message(vec![], "end_turn"),
    };
    Reply::Message(reply)
}

/// Issue 15: an empty `end_turn` is not stored; the user's answer reaches the model in a
/// transcript the strict fake accepts, and is captured rather than filed with an apology.
#[tokio::test(flavor = "multi_thread")]
async fn the_answer_after_an_empty_model_turn_reaches_the_model() {
    let world = World::new(asks_then_goes_quiet).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "dinner with sam");
    world.wait_status("the question", |s| s["asked"] == 1).await;
    world.db.incoming(ME_CHAT, ME, "Tuesday");
    world
        .wait_status("the capture", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.api.violations(), Vec::<String>::new());
    for request in world.api.requests() {
        for message in request.messages() {
            assert_ne!(message["content"], json!([]), "{message}");
        }
    }
    let last = world.api.requests().last().unwrap().messages().to_vec();
    let texts: Vec<&str> = last
        .iter()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter_map(|b| b["text"].as_str())
        .collect();
    assert!(
        texts.contains(&"dinner with sam") && texts.contains(&"Tuesday"),
        "{texts:?}"
    );
    assert!(
        world.notes("Inbox").is_empty(),
        "nothing filed with an apology"
    );
    assert_eq!(world.notes("Tasks").len(), 1);
}

/// Issue 15: the real `ExtraData` blob (declared length longer than its string), with
/// `text` NULL, is a text: it reaches the model and is captured.
#[tokio::test(flavor = "multi_thread")]
async fn the_extra_data_blob_with_text_null_is_captured() {
    let world = World::new(capture).await;
    let bridge = world.start().await;
    world
        .db
        .insert(&Msg::new(ME_CHAT, ME).body(blob("ExtraData")));
    world
        .wait_status("the capture", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    let first = &world.api.requests()[0];
    assert_eq!(
        first.messages()[0]["content"][0]["text"],
        "This is parsing  "
    );
}

/// Issue 15: SMS is ignored by default (an SMS sender id is easy to spoof) and handled when
/// `ALLOW_SMS` is set.
#[tokio::test(flavor = "multi_thread")]
async fn sms_is_ignored_by_default_and_handled_when_allowed() {
    let world = World::new(capture).await;
    let sms_chat = "SMS;-;+15551234567";
    let bridge = world.start().await;
    world
        .db
        .insert(&Msg::new(sms_chat, ME).text("by sms").service("SMS"));
    world
        .wait_status("the SMS ignored", |s| s["sms_ignored"] == 1)
        .await;
    bridge.stop().await;
    assert!(world.api.requests().is_empty());

    let bridge = world.start_with(&[("ALLOW_SMS", "true")]).await;
    world.db.insert(
        &Msg::new(sms_chat, ME)
            .text("by sms, allowed")
            .service("SMS"),
    );
    world
        .wait_status("the SMS captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(world.osascript.calls()[0].target, sms_chat);
}

/// Issue 15: a group with an allowed member and a stranger is ignored (and listed with its
/// name and members for the settings window); once allowed by guid, the member's texts are
/// handled and the stranger's never reach the model.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_is_ignored_until_allowed_and_its_strangers_never_reach_the_model() {
    let world = World::new(capture).await;
    let group = "iMessage;+;chat777000111";
    world.db.group(group, "Family 🏡", &[ME, STRANGER]);
    let bridge = world.start().await;
    world.db.incoming(group, ME, "from me, not allowed yet");
    world.db.incoming(group, STRANGER, "from the stranger");
    let status = world
        .wait_status("the group listed", |s| s["groups"][0]["guid"] == group)
        .await;
    bridge.stop().await;
    assert_eq!(status["groups"][0]["name"], "Family 🏡");
    assert_eq!(status["groups"][0]["members"], json!([ME, STRANGER]));
    assert!(world.api.requests().is_empty());

    let bridge = world.start_with(&[("ALLOWED_GROUPS", group)]).await;
    world
        .db
        .incoming(group, STRANGER, "stranger, allowed group");
    world.db.incoming(group, ME, "buy a cake");
    world
        .wait_status("the member captured", |s| s["captured"] == 1)
        .await;
    bridge.stop().await;
    for request in world.api.requests() {
        assert!(
            !request.body.to_string().contains("stranger"),
            "{}",
            request.body
        );
    }
    assert_eq!(world.osascript.calls()[0].target, group);
}

/// Issue 15: a sender written with a Kelvin sign (U+212A) is not the allowed Kate.
#[tokio::test(flavor = "multi_thread")]
async fn a_kelvin_sign_handle_stays_a_stranger() {
    let world = World::new(capture).await;
    let kelvin = "\u{212A}ate@icloud.com";
    let bridge = world
        .start_with(&[("ALLOWED_SENDERS", "kate@icloud.com")])
        .await;
    world.db.incoming(
        "iMessage;-;\u{212A}ate@icloud.com",
        kelvin,
        "it's Kate, honest",
    );
    let status = world
        .wait_status("the stranger", |s| s["strangers"][0]["handle"] == kelvin)
        .await;
    bridge.stop().await;
    assert_eq!(status["handled"], 0);
    assert!(world.api.requests().is_empty());
}

/// Asks about every text (so the session keeps it).
fn asks(request: &Value) -> Reply {
    let (_, turn) = step(request);
    Reply::Message(match turn {
        0 => fake::tool_use(
            "toolu_q",
            "send_message",
            json!({"message": "Which project is this for?"}),
        ),
        _ => fake::text("Asked."),
    })
}

/// Issue 15: a 1 MB text is cut for the model (64 KiB and a note), saved whole to Inbox
/// (in parts under the note cap), the user is told, and the session holds one copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_megabyte_text_is_cut_for_the_model_and_saved_whole() {
    let world = World::new(asks).await;
    let bridge = world.start().await;
    let text: String = (0..60_000).map(|i| format!("line {i:06} é🙂\n")).collect();
    assert!(text.len() > 1_000_000, "{}", text.len());
    world.db.incoming(ME_CHAT, ME, &text);
    world.wait_status("the question", |s| s["asked"] == 1).await;
    bridge.stop().await;

    let first = &world.api.requests()[0];
    let sent = first.messages()[0]["content"][0]["text"].as_str().unwrap();
    assert!(sent.len() < 64 * 1024 + 400, "{}", sent.len());
    assert!(text.starts_with(&sent[..1000]));
    assert!(sent.contains("[Cut here"), "the model is told");
    assert_eq!(world.api.violations(), Vec::<String>::new());

    let told = world.osascript.calls();
    assert!(
        told.iter().any(|c| c.text.contains("very long")),
        "{told:#?}"
    );

    // Inbox: the whole text, part by part, in order.
    let mut parts: Vec<(usize, String)> = world
        .notes("Inbox")
        .into_iter()
        .map(|(_, body)| {
            let heading = body
                .lines()
                .find(|l| l.starts_with("# "))
                .unwrap()
                .to_string();
            let n: usize = heading
                .split("(part ")
                .nth(1)
                .and_then(|p| p.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            let start = body.find(&heading).unwrap() + heading.len() + 2;
            let end = body.rfind("\n\n_Part ").unwrap();
            (n, body[start..end].to_string())
        })
        .collect();
    parts.sort();
    assert!(parts.len() >= 4, "{}", parts.len());
    let whole: String = parts.into_iter().map(|(_, p)| p).collect();
    assert!(whole == text, "the Inbox holds the text whole");

    let sessions = std::fs::read(world.data_dir().join("sessions.json")).unwrap();
    assert!(
        sessions.len() < 2 * 64 * 1024,
        "one copy: {} bytes",
        sessions.len()
    );
    let file = world.sessions_file();
    let pending = file["sessions"][0]["pending_input"].as_str().unwrap();
    assert!(pending.contains("saved whole in Inbox/"), "{pending}");
    assert!(world.status()["oversized"] == 1);
}
