//! Issue 4 — nothing lost, nothing twice, across `kill -9`.
//!
//! The crash test feeds 200 texts across four chats to the headless binary and kills it
//! with SIGKILL at random moments (seeded; set `CRASH_SEED` to replay a run), restarting it
//! each time; every state file must parse, and the state database pass SQLite's integrity
//! check, after every kill. At the end every text has
//! exactly one note, and no text was answered twice. A reply in flight at a kill is never
//! sent again (it may have gone out); those are counted and printed, and only they may lack
//! a reply. A second test pins that down with a send held open across the kill.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::bridge::{ME, ME_CHAT, WITHIN, World};
use crate::util::chatdb::Msg;
use crate::util::rng::Rng;
use crate::util::{state, wait};
use crate::{capture, scripted};

/// How many texts are fed.
const TEXTS: usize = 200;
/// At least this many kills.
const KILLS: usize = 24;
/// The whole test must end within this.
const DEADLINE: Duration = Duration::from_secs(85);

fn seed() -> u64 {
    match std::env::var("CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("CRASH_SEED is a number"),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            (nanos as u64) | 1
        }
    }
}

/// Parses `path` if it exists; a state file that exists must always be whole JSON.
fn parses(path: &Path) -> Result<(), String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .map(|_| ())
            .map_err(|e| format!("{} does not parse after a kill: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The source guid in a note's frontmatter.
fn source_of(body: &str) -> Option<&str> {
    body.lines()
        .find_map(|l| l.strip_prefix("source: imessage:"))
        .map(str::trim)
}

/// The guids the bridge logged as replies left unconfirmed by a kill.
fn unconfirmed_in(log: &str, into: &mut BTreeSet<String>) {
    for line in log.lines().filter(|l| l.contains("reply unconfirmed")) {
        if let Some(rest) = line.split("source=").nth(1) {
            // The source is logged escaped (`?source`), so in quotes.
            let field = rest.split_whitespace().next().unwrap_or("");
            into.insert(field.trim_matches('"').to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_texts_survive_random_kills_with_no_loss_and_no_double_reply() {
    let started = Instant::now();
    let seed = seed();
    println!("crash test seed: {seed} (CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let chats: Vec<(String, String)> = (1..=4)
        .map(|i| {
            let handle = format!("+1555000000{i}");
            (format!("iMessage;-;{handle}"), handle)
        })
        .collect();
    let allowed = chats
        .iter()
        .map(|(_, h)| h.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let env = [
        ("ALLOWED_SENDERS", allowed.as_str()),
        ("RATE_LIMIT_PER_MINUTE", "100000"),
        ("CHAT_DB_POLL_MS", "200"),
        ("LOG_LEVEL", "info"),
    ];
    let world = World::new(scripted(capture)).await;
    for (guid, handle) in &chats {
        world.db.chat(guid, handle, false);
    }
    // The first start only seeds the cursor.
    world.start_with(&env).await.stop().await;

    let mut fed: HashMap<String, String> = HashMap::new(); // guid -> text
    let mut unconfirmed = BTreeSet::new();
    let mut kills = 0;
    while kills < KILLS || fed.len() < TEXTS {
        assert!(started.elapsed() < DEADLINE / 2, "feeding took too long");
        let bridge = world.spawn_with(&env, None);
        // Up to 12 texts per run, spread over the chats.
        let batch = (1 + rng.below(12) as usize).min(TEXTS - fed.len());
        for _ in 0..batch {
            let n = fed.len();
            let (chat, handle) = &chats[rng.below(chats.len() as u64) as usize];
            let text = format!("Crash text {n:03} from {handle}");
            let row = world.db.insert(&Msg::new(chat, handle).text(&text));
            fed.insert(row.guid, text);
        }
        // A random moment: during start-up, mid-batch or idle.
        let delay = Duration::from_millis(rng.below(700));
        tokio::time::sleep(delay).await;
        let log = bridge.kill().await;
        unconfirmed_in(&log, &mut unconfirmed);
        kills += 1;
        for name in ["sessions.json", "status.json"] {
            if let Err(problem) = parses(&world.data_dir().join(name)) {
                panic!("{problem} (seed {seed}, kill {kills})");
            }
        }
        if let Err(problem) = state::check_integrity(&world.data_dir()) {
            panic!("{problem} (seed {seed}, kill {kills})");
        }
    }

    // The last run finishes everything.
    let bridge = world.start_with(&env).await;
    let tasks = world.vault().join("Tasks");
    let data_dir = world.data_dir();
    let left = DEADLINE.saturating_sub(started.elapsed()).max(WITHIN);
    let done = wait::until(&[tasks.clone(), world.data_dir()], left, || {
        let notes = std::fs::read_dir(&tasks).ok()?.count();
        let idle = state::read(&data_dir)?.claimed.is_empty();
        (notes >= TEXTS && idle).then_some(())
    })
    .await;
    if done.is_none() {
        panic!(
            "not everything was handled (seed {seed}); log:\n{}",
            bridge.log()
        );
    }
    let log = bridge.stop().await;
    unconfirmed_in(&log, &mut unconfirmed);
    let data_leftovers: Vec<String> = std::fs::read_dir(world.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(
        data_leftovers.is_empty(),
        "temporary files left in the data directory after a clean run: {data_leftovers:?}"
    );

    // Exactly one note per text, each carrying its source.
    let notes = world.notes("Tasks");
    let strays: Vec<String> = std::fs::read_dir(&tasks)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !notes.iter().any(|(p, _)| p.ends_with(n.as_str())))
        .collect();
    // A kill may leave a hidden temporary file (never a note, never shown by Obsidian).
    assert!(
        strays
            .iter()
            .all(|n| n.starts_with('.') && n.ends_with(".tmp")),
        "only hidden temporary files besides notes: {strays:?}"
    );
    let mut by_source: BTreeMap<String, usize> = BTreeMap::new();
    for (path, body) in &notes {
        let source = source_of(body).unwrap_or_else(|| panic!("{path} has no source: {body:?}"));
        *by_source.entry(source.to_string()).or_default() += 1;
        let text = fed
            .get(source)
            .unwrap_or_else(|| panic!("{path}: unknown source"));
        assert!(body.contains(text.as_str()), "{path}: {body}");
    }
    let lost: Vec<&String> = fed.keys().filter(|g| !by_source.contains_key(*g)).collect();
    let twice: Vec<(&String, &usize)> = by_source.iter().filter(|(_, n)| **n > 1).collect();

    // Replies: one per text, except that one unconfirmed at a kill may be missing.
    let mut replies: HashMap<&str, usize> = HashMap::new();
    for call in world.osascript.calls() {
        if let Some(text) = call.text.strip_prefix("Saved to Tasks: ") {
            *replies
                .entry(fed.values().find(|t| *t == text).map_or("?", |t| t))
                .or_default() += 1;
        }
    }
    let guid_of: HashMap<&str, &str> = fed.iter().map(|(g, t)| (t.as_str(), g.as_str())).collect();
    let replied_twice: Vec<&str> = replies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| *t)
        .collect();
    let unanswered: Vec<&str> = fed
        .values()
        .map(String::as_str)
        .filter(|t| !replies.contains_key(t))
        .collect();

    println!(
        "crash test: seed {seed}, {kills} kills, {} texts, {} notes, lost {}, notes twice {}, \
         replied twice {}, replies in flight at a kill {} (not resent; {} of them never went \
         out), hidden temporary files left {}, {:.1} s",
        fed.len(),
        notes.len(),
        lost.len(),
        twice.len(),
        replied_twice.len(),
        unconfirmed.len(),
        unanswered.len(),
        strays.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= 20);
    assert_eq!(fed.len(), TEXTS);
    assert!(lost.is_empty(), "texts lost (seed {seed}): {lost:?}");
    assert!(twice.is_empty(), "notes twice (seed {seed}): {twice:?}");
    assert!(!replies.contains_key("?"), "a reply to no text");
    for text in &replied_twice {
        assert!(
            unconfirmed.contains(guid_of[text]),
            "{text:?} was answered twice without a send in flight at a kill (seed {seed})"
        );
    }
    for text in &unanswered {
        assert!(
            unconfirmed.contains(guid_of[text]),
            "{text:?} got no reply and none was in flight at a kill (seed {seed})"
        );
    }
    assert!(started.elapsed() < DEADLINE, "took {:?}", started.elapsed());
}

/// A reply whose `osascript` is still running when the bridge is killed may have gone
/// out: after the restart the text is handled again (its note is found, not duplicated)
/// but the reply is not sent again, and the status says one reply is unconfirmed.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_in_flight_at_a_kill_is_not_sent_again() {
    let world = World::new(scripted(capture)).await;
    let bridge = world.start().await;
    world.osascript.hang();
    world.db.incoming(ME_CHAT, ME, "Buy stamps");
    world.osascript.wait_for_calls(1, WITHIN).await;
    bridge.kill().await;
    world.osascript.release();

    let bridge = world.start().await;
    let status = world
        .wait_status("one unconfirmed reply", |s| s["unconfirmed_sends"] == 1)
        .await;
    let data_dir = world.data_dir();
    wait::until(&[world.data_dir()], WITHIN, || {
        state::read(&data_dir)?.claimed.is_empty().then_some(())
    })
    .await
    .expect("the text is finished");
    let log = bridge.stop().await;

    let calls = world.osascript.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].text, "Saved to Tasks: Buy stamps");
    assert_eq!(world.notes("Tasks").len(), 1);
    assert!(log.contains("reply unconfirmed"), "{log}");
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("may not have been delivered"), "{error}");
    // The re-run asked the LLM again, and ended with the unconfirmed reply's turn (issue
    // 16): three requests before the kill, three after.
    assert_eq!(world.api.requests().len(), 6);
}

/// Issue 8: a SIGTERM sent the moment the ready line appears stops the bridge cleanly (exit
/// 0, "stopped" logged), start after start: the benchmark's start-up loop once saw the bridge
/// end otherwise. `Bridge::run` now polls the shutdown future (which installs the signal
/// handlers) before intake can log "ready"; the race it closes was not reproduced here, so
/// this guards the clean stop rather than proving that fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_right_after_the_ready_line_is_a_clean_stop() {
    let world = World::new(scripted(capture)).await;
    for _ in 0..8 {
        let bridge = world.start().await;
        // `stop` sends SIGTERM at once and asserts a successful exit.
        let log = bridge.stop().await;
        assert!(log.contains("stopped"), "{log}");
    }
}
