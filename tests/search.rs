//! Issue 12: questions texted are answered from the vault through `vault_search`, and the
//! morning digest goes out once a day. The real binary, the strict fake API, the fake
//! `osascript`; the vault written as Obsidian writes it.

use std::path::Path;

use serde_json::{Value, json};

use crate::util::anthropic::{self as fake, Reply};
use crate::util::bridge::{ME, ME_CHAT, WITHIN, World};

/// Notes written by hand, as Obsidian holds them: frontmatter or none, nested folders,
/// wikilinks, CRLF, other scripts.
fn hand_written(vault: &Path) {
    let put = |rel: &str, text: &str| {
        let path = vault.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    put(
        "Reference/2026-11-20_books-sarah.md",
        "---\ncreated: 2026-11-20T18:02:11+01:00\ntags:\n  - person/sarah\n  - topic/books\n---\n# Books Sarah recommended\n\nPiranesi; The Dispossessed. Ask [[Sarah]] about the third one.\n",
    );
    put(
        "Projects/offsite/Planning.md",
        "# Offsite planning\r\n\r\nVenue shortlist: Lisbon, Porto.\r\nBudget in [[Budget 2027]].\r\n",
    );
    put(
        "Ideas/東京.md",
        "# 東京の本屋めぐり\n\n神保町で古本を探す。\n",
    );
    put(
        "Reference/Café.md",
        "No heading. Best café near the office: Tartine.\n",
    );
    put(
        "_system/logs/2026-11-20.md",
        "# Interaction Log: 2026-11-20\n\nbooks sarah books sarah\n",
    );
}

/// Generated notes around them: ~2 KB each, words that do not collide with the questions.
fn generated(vault: &Path, n: usize) {
    for i in 0..n {
        let folder = [
            "Tasks",
            "Ideas",
            "Reference",
            "Projects",
            "Inbox",
            "Archive",
        ][i % 6];
        let dir = vault.join(folder).join(format!("batch{}", i % 7));
        std::fs::create_dir_all(&dir).unwrap();
        let body = format!("lorem ipsum note {i} dolor sit amet ").repeat(60);
        let text = format!(
            "---\ncreated: 2026-01-{:02}\ntags: [topic/filler{}]\n---\n# Filler {i}\n\n{body}\n",
            1 + i % 28,
            i % 5
        );
        std::fs::write(dir.join(format!("filler-{i}.md")), text).unwrap();
    }
}

/// Files under the content folders and their bytes, to prove nothing was written.
fn snapshot(vault: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![vault.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(vault)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("_system") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// A model that answers every text as a question: `vault_search` with `query`, then
/// `log_interaction` (category query), then a reply naming the first hit's title.
fn answers(query: &'static str) -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    move |request| {
        let (input, turn) = crate::run_step(request);
        let reply = match turn {
            0 => fake::tool_use(
                "toolu_q",
                "vault_search",
                json!({"query": query, "limit": 5}),
            ),
            1 => fake::tool_use(
                "toolu_l",
                "log_interaction",
                json!({"input": input, "category": "query", "confidence": 95}),
            ),
            2 => {
                let hits = last_search(request);
                let title = hits[0]["title"].as_str().unwrap_or("nothing").to_string();
                fake::tool_use(
                    "toolu_s",
                    "send_message",
                    json!({"message": format!("From your notes: {title}")}),
                )
            }
            _ => fake::text("Answered."),
        };
        Reply::Message(reply)
    }
}

/// The hits of the last `vault_search` result in the transcript.
fn last_search(request: &Value) -> Vec<Value> {
    let messages = request["messages"].as_array().unwrap();
    for message in messages.iter().rev() {
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] == "tool_result" && block["tool_use_id"] == "toolu_q" {
                assert_ne!(block["is_error"], true, "{block}");
                let text = block["content"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| block["content"][0]["text"].as_str().unwrap().to_string());
                return serde_json::from_str(&text).unwrap();
            }
        }
    }
    panic!("no vault_search result in {request}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_is_answered_from_the_vault_and_writes_no_note() {
    let world = World::new(answers("sarah books")).await;
    generated(&world.vault(), 300);
    hand_written(&world.vault());
    let before = snapshot(&world.vault());
    let bridge = world.start().await;
    world
        .db
        .incoming(ME_CHAT, ME, "Which books did Sarah recommend?");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    assert_eq!(calls[0].target, ME_CHAT);
    assert_eq!(calls[0].text, "From your notes: Books Sarah recommended");
    world
        .wait_status("answered", |s| s["answered"] == 1 && s["sessions"] == 0)
        .await;
    // Answered: no question pending, no session left to time out into Inbox.
    assert_eq!(world.status()["asked"], 0);
    bridge.stop().await;

    let requests = world.api.requests();
    let hits = last_search(&requests[2].body);
    assert_eq!(hits[0]["path"], "Reference/2026-11-20_books-sarah.md");
    assert_eq!(hits[0]["tags"], json!(["person/sarah", "topic/books"]));
    assert_eq!(hits[0]["created"], "2026-11-20T18:02:11+01:00");
    assert_eq!(
        hits[0]["snippet"],
        "Piranesi; The Dispossessed. Ask [[Sarah]] about the third one."
    );
    assert!(hits.len() <= 5, "{hits:?}");
    assert!(
        world.api.violations().is_empty(),
        "{:?}",
        world.api.violations()
    );
    // The model was offered the tool, with its schema.
    let tools = requests[0].body["tools"].as_array().unwrap();
    let search = tools
        .iter()
        .find(|t| t["name"] == "vault_search")
        .expect("offered");
    assert_eq!(search["input_schema"]["required"], json!(["query"]));
    // Nothing in the vault changed but the day's log, which has the query.
    assert_eq!(snapshot(&world.vault()), before);
    let today = chrono::Local::now().format("%Y-%m-%d").to_string();
    let log = crate::util::bridge::read(&world.vault().join(format!("_system/logs/{today}.md")));
    assert!(
        log.contains("query") && log.contains("Which books did Sarah recommend?"),
        "{log}"
    );
    // The index lives in the data dir, never in the vault.
    assert!(world.data_dir().join("search/index.sqlite").is_file());
    assert!(
        !snapshot(&world.vault())
            .iter()
            .any(|(p, _)| p.contains("sqlite"))
    );
}

/// Searches for whatever the text says, replies with every hit's path.
fn searches(request: &Value) -> Reply {
    let (input, turn) = crate::run_step(request);
    let reply = match turn {
        0 => fake::tool_use("toolu_q", "vault_search", json!({"query": input})),
        1 => {
            let hits = last_search(request);
            let paths: Vec<&str> = hits.iter().filter_map(|h| h["path"].as_str()).collect();
            let message = if paths.is_empty() {
                "none".to_string()
            } else {
                paths.join(", ")
            };
            fake::tool_use("toolu_s", "send_message", json!({"message": message}))
        }
        _ => fake::text("Answered."),
    };
    Reply::Message(reply)
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_deletions_and_a_broken_index_file_are_followed_through_the_binary() {
    let world = World::new(searches).await;
    generated(&world.vault(), 120);
    hand_written(&world.vault());
    let bridge = world.start().await;
    let ask = |n: usize, text: &'static str| {
        let world = &world;
        async move {
            world.db.incoming(ME_CHAT, ME, text);
            world.osascript.wait_for_calls(n, WITHIN).await[n - 1]
                .text
                .clone()
        }
    };
    assert_eq!(ask(1, "lisbon").await, "Projects/offsite/Planning.md");
    assert_eq!(ask(2, "cafe").await, "Reference/Café.md");
    assert_eq!(ask(3, "本屋").await, "Ideas/東京.md");
    // Edited in place, as Obsidian saves: found by its new words, not its old ones.
    std::fs::write(
        world.vault().join("Projects/offsite/Planning.md"),
        "# Offsite planning\n\nVenue chosen: Sintra.\n",
    )
    .unwrap();
    assert_eq!(ask(4, "sintra").await, "Projects/offsite/Planning.md");
    assert_eq!(ask(5, "lisbon").await, "none");
    std::fs::remove_file(world.vault().join("Reference/Café.md")).unwrap();
    assert_eq!(ask(6, "cafe").await, "none");
    bridge.stop().await;

    // Truncated while the bridge was stopped: rebuilt, and answered meanwhile.
    let file = world.data_dir().join("search/index.sqlite");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let _ = std::fs::remove_file(world.data_dir().join("search/index.sqlite-wal"));
    let bridge = world.start().await;
    assert_eq!(ask(7, "sintra").await, "Projects/offsite/Planning.md");
    index_holds(&world, 123).await;
    // Deleted while running: the next question still finds the note.
    std::fs::remove_file(&file).unwrap();
    assert_eq!(ask(8, "sintra").await, "Projects/offsite/Planning.md");
    index_holds(&world, 123).await;
    bridge.stop().await;
}

/// Waits (on file events in the index's folder) until the index file holds `n` notes.
async fn index_holds(world: &World, n: i64) {
    let file = world.data_dir().join("search/index.sqlite");
    let counted = crate::util::wait::until(&[world.data_dir().join("search")], WITHIN, || {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = rusqlite::Connection::open_with_flags(&file, flags).ok()?;
        let count: i64 = conn
            .query_row("SELECT count(*) FROM notes", [], |r| r.get(0))
            .ok()?;
        (count == n).then_some(count)
    })
    .await;
    assert_eq!(counted, Some(n), "the index file never held {n} notes");
}

/// The settings file with the digest on, at this minute, for [`ME`].
fn digest_on(world: &World) {
    std::fs::create_dir_all(world.data_dir()).unwrap();
    let now = chrono::Local::now().format("%H:%M").to_string();
    let settings = json!({"digest": {"enabled": true, "time": now, "recipient": ME}});
    std::fs::write(world.data_dir().join("settings.json"), settings.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_digest_is_texted_once_a_day_even_across_a_kill() {
    let world = World::new(|_| Reply::error(400, "invalid_request_error", "no texts here")).await;
    hand_written(&world.vault());
    std::fs::create_dir_all(world.vault().join("Tasks")).unwrap();
    std::fs::write(
        world.vault().join("Tasks/visa.md"),
        "---\ntags: [priority/urgent, status/active]\n---\n# Renew the visa\n",
    )
    .unwrap();
    std::fs::create_dir_all(world.vault().join("Inbox")).unwrap();
    std::fs::write(world.vault().join("Inbox/x.md"), "# Something unsorted\n").unwrap();
    digest_on(&world);

    // (The digest's outcome is logged before the ready line, so wait for it alone.)
    let mut bridge = world.spawn_with(&[], None);
    let line = bridge.wait_line("morning digest").await;
    assert!(line.contains("outcome=Sent"), "{line}");
    let calls = world.osascript.wait_for_calls(1, WITHIN).await;
    let today = chrono::Local::now().date_naive();
    assert_eq!(calls[0].target, ME_CHAT);
    assert_eq!(
        calls[0].text,
        format!(
            "Good morning! {}\nUrgent and high tasks (1):\n• Renew the visa\nInbox: 1 note waiting: Something unsorted",
            today.format("%a %-d %b")
        )
    );
    bridge.kill().await;

    // Started again the same day, the vault changed meanwhile: not sent again.
    std::fs::write(world.vault().join("Inbox/y.md"), "# Another\n").unwrap();
    let mut bridge = world.spawn_with(&[], None);
    let line = bridge.wait_line("morning digest").await;
    assert!(line.contains("outcome=AlreadyClaimed"), "{line}");
    bridge.wait_line(crate::util::bridge::READY).await;
    bridge.stop().await;
    assert_eq!(world.osascript.calls().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_preview_prints_the_text_and_sends_nothing() {
    let world = World::new(|_| Reply::error(400, "invalid_request_error", "unused")).await;
    std::fs::create_dir_all(world.vault().join("Tasks")).unwrap();
    std::fs::write(
        world.vault().join("Tasks/a.md"),
        "---\ntags: [priority/high]\n---\n# Send the invoice\n",
    )
    .unwrap();
    let out = world
        .cli(&["digest", "preview", "--date", "2026-12-02"])
        .await;
    assert_eq!(
        out,
        "Good morning! Wed 2 Dec\nUrgent and high tasks (1):\n• Send the invoice\n"
    );
    std::fs::remove_file(world.vault().join("Tasks/a.md")).unwrap();
    assert_eq!(
        world.cli(&["digest", "preview"]).await,
        "",
        "nothing to say: no text"
    );
    assert!(world.osascript.calls().is_empty());
}
