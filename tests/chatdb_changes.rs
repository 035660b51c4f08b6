//! Issue 4 — chat.db changing under a running bridge: WAL checkpoints, the file replaced,
//! the database swapped for one with lower ROWIDs, history backfilled from iCloud, a message
//! row committed before its chat join, and texts that came while the bridge was down.

use chrono::{DateTime, TimeDelta, Utc};

use crate::util::bridge::{ME, ME_CHAT, WITHIN, World};
use crate::util::chatdb::{FixtureDb, Msg, apple_ns};
use crate::{capture, scripted};

fn ago(minutes: i64) -> DateTime<Utc> {
    Utc::now() - TimeDelta::minutes(minutes)
}

fn texts(world: &World) -> Vec<String> {
    world
        .osascript
        .calls()
        .into_iter()
        .map(|c| c.text)
        .collect()
}

fn saved(inputs: &[&str]) -> Vec<String> {
    inputs
        .iter()
        .map(|t| format!("Saved to Tasks: {t}"))
        .collect()
}

/// Renames a new database file over chat.db, as Messages does when it rebuilds it, while
/// the bridge runs, and returns a writer on it. The old writer checkpoints and its WAL is
/// removed first (it would otherwise be taken for the new file's).
fn swap_in(world: &World, build: impl FnOnce(&FixtureDb)) -> FixtureDb {
    let path = world.db.path().to_path_buf();
    let new_path = world.dir.path().join("Messages/rebuilt.db");
    let rebuilt = FixtureDb::create(&new_path);
    rebuilt.chat(ME_CHAT, ME, false);
    build(&rebuilt);
    drop(rebuilt); // the last connection checkpoints and removes its WAL
    retire_wal(world);
    std::fs::rename(&new_path, &path).unwrap();
    FixtureDb::open(&path)
}

fn retire_wal(world: &World) {
    world
        .db
        .conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", world.db.path().display()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wal_checkpoints_and_a_replaced_file_mid_run_lose_and_repeat_nothing() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Before the checkpoint");
    world.osascript.wait_for_calls(1, WITHIN).await;

    // Messages checkpoints its WAL into the database file.
    world
        .db
        .conn()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    world.db.incoming(ME_CHAT, ME, "After the checkpoint");
    world.osascript.wait_for_calls(2, WITHIN).await;
    world.messages.wait_written(2, WITHIN);

    // Messages writes the same rows to a new file and renames it over chat.db.
    let copy = world.dir.path().join("Messages/copy.db");
    world
        .db
        .conn()
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    retire_wal(&world);
    std::fs::rename(&copy, world.db.path()).unwrap();
    let db = FixtureDb::open(world.db.path());
    db.incoming(ME_CHAT, ME, "In the replaced file");
    world.osascript.wait_for_calls(3, WITHIN).await;
    let log = bridge.stop().await;

    assert!(log.contains("chat.db was replaced; reopening"), "{log}");
    assert!(
        !log.contains("re-reading it by date"),
        "the rows lined up: {log}"
    );
    assert_eq!(
        texts(&world),
        saved(&[
            "Before the checkpoint",
            "After the checkpoint",
            "In the replaced file"
        ])
    );
    assert_eq!(world.notes("Tasks").len(), 3);
    assert_eq!(world.api.requests().len(), 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_swapped_for_one_with_lower_rowids_is_re_read_by_date() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    let mut last = None;
    for i in 1..=5 {
        let date = ago(10 - i);
        let msg = Msg::new(ME_CHAT, ME)
            .text(&format!("Old text {i}"))
            .date(apple_ns(date));
        // In one transaction: a row dated minutes ago whose chat join is not there yet
        // would be taken for a malformed one and skipped.
        world.db.conn().execute_batch("BEGIN IMMEDIATE").unwrap();
        last = Some((world.db.insert(&msg), date));
        world.db.conn().execute_batch("COMMIT").unwrap();
    }
    world.osascript.wait_for_calls(5, WITHIN).await;
    world.messages.wait_written(5, WITHIN);
    let (last, last_date) = last.unwrap();

    let db = swap_in(&world, |db| {
        db.insert(
            &Msg::new(ME_CHAT, ME)
                .text("History")
                .date(apple_ns(ago(600))),
        );
        db.insert(&Msg {
            guid: Some(last.guid.clone()),
            ..Msg::new(ME_CHAT, ME)
                .text("Old text 5")
                .date(apple_ns(last_date))
        });
        db.incoming(ME_CHAT, ME, "New in the swapped database");
    });
    assert!(last.rowid > 3, "the new ROWIDs are lower");
    world.osascript.wait_for_calls(6, WITHIN).await;
    db.incoming(ME_CHAT, ME, "Later still");
    world.osascript.wait_for_calls(7, WITHIN).await;
    let log = bridge.stop().await;

    assert!(log.contains("re-reading it by date"), "{log}");
    let mut want: Vec<String> = (1..=5)
        .map(|i| format!("Saved to Tasks: Old text {i}"))
        .collect();
    want.extend(saved(&["New in the swapped database", "Later still"]));
    assert_eq!(texts(&world), want);
    assert_eq!(world.notes("Tasks").len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_thousand_backfilled_rows_with_old_dates_are_not_handled() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    world.db.incoming(ME_CHAT, ME, "Before the sync");
    world.osascript.wait_for_calls(1, WITHIN).await;

    // iCloud brings in three thousand old messages under new ROWIDs. IMMEDIATE: the fake
    // Messages may be writing the first reply back meanwhile; this waits for its lock.
    world.db.conn().execute_batch("BEGIN IMMEDIATE").unwrap();
    for i in 0..3_000 {
        let msg = Msg::new(ME_CHAT, ME)
            .text(&format!("Synced from iCloud {i} 📥"))
            .date(apple_ns(ago(60 + i)));
        world.db.insert(&msg);
    }
    world.db.conn().execute_batch("COMMIT").unwrap();
    world.db.incoming(ME_CHAT, ME, "After the sync");
    world.osascript.wait_for_calls(2, WITHIN).await;
    let status = world
        .wait_status("3000 rows skipped, two texts handled", |s| {
            s["skipped_backfill"] == 3_000 && s["handled"] == 2
        })
        .await;
    bridge.stop().await;

    assert_eq!(texts(&world), saved(&["Before the sync", "After the sync"]));
    assert_eq!(world.api.requests().len(), 6, "only the two real texts");
    assert_eq!(status["handled"], 2);
    assert_eq!(status["skipped_old"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_committed_before_its_join_row_is_handled_once_the_join_lands() {
    let world = World::new(scripted(capture)).await;
    let mut bridge = world.start().await;
    let row = world
        .db
        .insert(&Msg::new(ME_CHAT, ME).text("Joined late").without_join());
    bridge.wait_line("no chat join yet").await;
    assert!(
        world.api.requests().is_empty(),
        "not handled without its chat"
    );
    world.db.join(row.rowid, ME_CHAT);
    world.osascript.wait_for_calls(1, WITHIN).await;
    world.db.incoming(ME_CHAT, ME, "Next");
    world.osascript.wait_for_calls(2, WITHIN).await;
    bridge.stop().await;
    assert_eq!(texts(&world), saved(&["Joined late", "Next"]));
}

/// Texts that came while the bridge was down are handled on start when they are within
/// the catch-up window (`CATCH_UP_HOURS`); older ones are skipped and counted.
#[tokio::test(flavor = "multi_thread")]
async fn texts_from_the_downtime_are_caught_up_within_the_window() {
    let downtime = [
        ("29 hours ago", 29 * 60),
        ("25 hours ago", 25 * 60),
        ("23 hours ago", 23 * 60),
        ("An hour ago 🕐", 60),
    ];
    for (hours, handled) in [(None, 2), (Some("26"), 3), (Some("48"), 4)] {
        let world = World::new(scripted(capture)).await;
        let env: Vec<(&str, &str)> = hours.map(|h| ("CATCH_UP_HOURS", h)).into_iter().collect();
        world.db.insert(
            &Msg::new(ME_CHAT, ME)
                .text("The last text before the stop")
                .date(apple_ns(ago(30 * 60))),
        );
        world.start_with(&env).await.stop().await;

        for (text, minutes) in downtime {
            world.db.insert(
                &Msg::new(ME_CHAT, ME)
                    .text(text)
                    .date(apple_ns(ago(minutes))),
            );
        }
        let bridge = world.start_with(&env).await;
        world.osascript.wait_for_calls(handled, WITHIN).await;
        let status = world
            .wait_status("the old texts counted", |s| {
                s["skipped_old"] == 4 - handled as u64
            })
            .await;
        bridge.stop().await;
        let want: Vec<&str> = downtime[4 - handled..].iter().map(|d| d.0).collect();
        assert_eq!(texts(&world), saved(&want), "window {hours:?}");
        assert_eq!(status["skipped_backfill"], 0);
        assert_eq!(world.notes("Tasks").len(), handled);
    }
}
