//! Issue 4 — abuse: a per-sender rate limit, a daily token budget (persisted with its date),
//! one polite notice per limit window rather than one per text, and no replies to the
//! bridge's own messages.

use serde_json::json;

use crate::util::bridge::{ME, ME_CHAT, WITHIN, World};
use crate::util::chatdb::Msg;
use crate::{capture, scripted};

fn texts(world: &World) -> Vec<String> {
    world
        .osascript
        .calls()
        .into_iter()
        .map(|c| c.text)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_is_cut_off_at_the_rate_limit_with_one_notice() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start_with(&[("RATE_LIMIT_PER_MINUTE", "3")]).await;
    for i in 1..=8 {
        world.db.incoming(ME_CHAT, ME, &format!("Flood {i}"));
    }
    let status = world
        .wait_status("five texts over the limit", |s| s["rate_limited"] == 5)
        .await;
    world.osascript.wait_for_calls(4, WITHIN).await;
    bridge.stop().await;

    let sent = texts(&world);
    assert_eq!(sent.len(), 4, "{sent:?}");
    assert_eq!(
        sent[..3],
        [
            "Saved to Tasks: Flood 1",
            "Saved to Tasks: Flood 2",
            "Saved to Tasks: Flood 3"
        ]
    );
    assert!(
        sent[3].contains("faster than I can file them (more than 3 a minute)"),
        "{}",
        sent[3]
    );
    assert_eq!(
        world.api.requests().len(),
        9,
        "only three texts reached the LLM"
    );
    assert_eq!(world.notes("Tasks").len(), 3);
    assert_eq!(status["handled"], 3);
    let ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(world.data_dir().join("ledger.json")).unwrap())
            .unwrap();
    assert_eq!(
        ledger["claimed"],
        json!([]),
        "limited texts are finished, not left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_token_budget_sends_texts_to_inbox_with_one_notice_a_day() {
    let world = World::new(scripted(capture)).await;
    // One capture costs 3 × (120 + 30) = 450 counted tokens (its run ends with the reply,
    // issue 16); cache reads are not counted.
    let env = [("DAILY_TOKEN_BUDGET", "400")];
    let bridge = world.start_with(&env).await;
    world.db.incoming(ME_CHAT, ME, "Within the budget");
    world.osascript.wait_for_calls(1, WITHIN).await;
    world.db.incoming(ME_CHAT, ME, "Over the budget");
    world.db.incoming(ME_CHAT, ME, "Still over 💸");
    let status = world
        .wait_status("two texts over budget", |s| s["over_budget"] == 2)
        .await;
    world.osascript.wait_for_calls(2, WITHIN).await;
    bridge.stop().await;

    assert_eq!(status["tokens_today"], 450);
    let sent = texts(&world);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0], "Saved to Tasks: Within the budget");
    assert!(sent[1].contains("today's AI budget"), "{}", sent[1]);
    assert_eq!(world.api.requests().len(), 3);
    let inbox = world.notes("Inbox");
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    assert!(inbox.iter().any(|(_, b)| b.contains("Over the budget")));
    assert!(inbox.iter().any(|(_, b)| b.contains("Still over 💸")));
    assert!(
        inbox
            .iter()
            .all(|(_, b)| b.contains("today's token budget is used up"))
    );

    // A restart the same day keeps the count and the notice already given.
    let budget: serde_json::Value =
        serde_json::from_slice(&std::fs::read(world.data_dir().join("budget.json")).unwrap())
            .unwrap();
    assert_eq!(budget["used"], 450);
    assert_eq!(budget["notified"], true);
    let bridge = world.start_with(&env).await;
    world.db.incoming(ME_CHAT, ME, "After a restart");
    world
        .wait_status("one more over budget", |s| s["over_budget"] == 1)
        .await;
    bridge.stop().await;
    assert_eq!(texts(&world).len(), 2, "no second notice today");
    assert_eq!(world.api.requests().len(), 3);
    assert_eq!(world.notes("Inbox").len(), 3);
}

/// The bridge never answers its own messages: rows sent from this Mac — its replies
/// included — never reach the LLM or get a reply, whatever they say.
#[tokio::test(flavor = "multi_thread")]
async fn the_bridge_never_replies_to_its_own_messages() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    for text in [
        "Saved to Tasks: Call mom",
        "Which day is dinner with Sam?",
        "remind me to buy milk",
    ] {
        world.db.insert(&Msg {
            is_from_me: true,
            ..Msg::new(ME_CHAT, ME).text(text)
        });
    }
    world.db.incoming(ME_CHAT, ME, "The only text from me");
    world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.stop().await;
    assert_eq!(texts(&world), ["Saved to Tasks: The only text from me"]);
    let requests = world.api.requests();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        let body = request.body.to_string();
        assert!(
            !body.contains("Call mom") && !body.contains("buy milk"),
            "{body}"
        );
    }
}
