//! The index end to end inside the library: built from a vault written as Obsidian would,
//! ranked, following edits and deletions, and rebuilt when its file goes bad.

use std::fs;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;

/// How long a test waits for the follower before failing.
const WITHIN: Duration = Duration::from_secs(20);

fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // Written aside and renamed, as Obsidian and iCloud do: one event, never half a note.
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_str().unwrap()
    ));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, &path).unwrap();
}

fn note(created: &str, tags: &[&str], title: &str, body: &str) -> String {
    let tags: String = tags.iter().map(|t| format!("  - {t}\n")).collect();
    format!("---\ncreated: {created}\ntags:\n{tags}---\n# {title}\n\n{body}\n")
}

/// A vault with a few notes of each kind Obsidian holds.
fn fixture(root: &Path) {
    put(
        root,
        "Tasks/2026-11-01_offsite.md",
        &note(
            "2026-11-01T09:00:00Z",
            &["project/offsite", "priority/high"],
            "Book the offsite venue",
            "Ask Sarah about Lisbon.",
        ),
    );
    put(
        root,
        "Reference/2026-10-01_notes.md",
        &note(
            "2026-10-01T09:00:00Z",
            &["topic/travel"],
            "Travel notes",
            "The offsite could be in Porto or Lisbon.",
        ),
    );
    put(
        root,
        "Ideas/deep/nested/Café idea.md",
        "No frontmatter here.\r\nOpen a café with board games.\r\n",
    );
    put(
        root,
        "Reference/2026-09-01_books.md",
        &note(
            "2026-09-01",
            &["person/sarah", "topic/books"],
            "Books Sarah recommended",
            "Piranesi, and The Dispossessed.",
        ),
    );
    put(
        root,
        "Reference/2026-09-02_tokyo.md",
        &note(
            "2026-09-02",
            &["topic/travel"],
            "東京の本屋",
            "神保町の古書店街。 Москва тоже.",
        ),
    );
    put(
        root,
        "Projects/board.md",
        &note(
            "2026-08-01",
            &[],
            "Game shelf",
            "A board of games, and a game board for chess. See [[Café idea]].",
        ),
    );
    put(
        root,
        "Archive/old.md",
        &note(
            "2025-01-01",
            &["project/offsite"],
            "Last year",
            "Last year's offsite was in Lisbon.",
        ),
    );
    put(
        root,
        "_system/logs/2026-11-01.md",
        "# Interaction Log\n\noffsite offsite offsite\n",
    );
    put(root, "Tasks/.hidden/secret.md", "offsite\n");
    put(root, "Inbox/plain.txt", "offsite\n");
}

struct Running {
    index: Index,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _data: tempfile::TempDir,
    vault: tempfile::TempDir,
}

impl Running {
    async fn start(vault: tempfile::TempDir, data: tempfile::TempDir) -> Running {
        let index = Index::new(vault.path(), data.path());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(follow::run(index.clone(), cancel.clone()));
        let running = Running {
            index,
            cancel,
            task,
            _data: data,
            vault,
        };
        running.until(|p| p.builds >= 1).await;
        running
    }

    fn root(&self) -> &Path {
        self.vault.path()
    }

    async fn until(&self, done: impl Fn(&Progress) -> bool) -> Progress {
        let mut progress = self.index.progress();
        *tokio::time::timeout(WITHIN, progress.wait_for(|p| done(p)))
            .await
            .expect("the follower kept up")
            .unwrap()
    }

    fn ask(&self, text: &str, filter: Filter) -> Vec<String> {
        let (hits, answer) = self.index.search(&Query {
            text: text.into(),
            filter,
            limit: 10,
        });
        assert_eq!(answer, Answer::Index, "{text}");
        hits.into_iter().map(|h| h.path).collect()
    }

    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}

fn all() -> Filter {
    Filter::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranking_follows_title_tags_phrases_accents_and_filters() {
    let vault = tempfile::tempdir().unwrap();
    fixture(vault.path());
    let run = Running::start(vault, tempfile::tempdir().unwrap()).await;
    // Title beats body; newer wins among bodies; _system, hidden and non-notes never match.
    assert_eq!(
        run.ask("offsite", all()),
        [
            "Tasks/2026-11-01_offsite.md",
            "Archive/old.md",
            "Reference/2026-10-01_notes.md"
        ]
    );
    // Accents and case do not matter, either way round.
    // (the game shelf links to the idea: a wikilink's words are words too.)
    assert_eq!(
        run.ask("CAFE", all()),
        ["Ideas/deep/nested/Café idea.md", "Projects/board.md"]
    );
    assert_eq!(
        run.ask("Lisböa lisbon", all()).len(),
        3,
        "any word when no note has all"
    );
    // A phrase matches as a phrase only.
    assert_eq!(
        run.ask("\"board games\"", all()),
        ["Ideas/deep/nested/Café idea.md"]
    );
    assert_eq!(run.ask("\"game board\"", all()), ["Projects/board.md"]);
    // Tags are searched (and weigh more than the body) and filter exactly.
    assert_eq!(
        run.ask("sarah", all()),
        [
            "Reference/2026-09-01_books.md",
            "Tasks/2026-11-01_offsite.md"
        ]
    );
    let tagged = Filter {
        tags: vec!["Project/Offsite".into()],
        ..all()
    };
    let mut found = run.ask("lisbon", tagged);
    found.sort();
    assert_eq!(found, ["Archive/old.md", "Tasks/2026-11-01_offsite.md"]);
    let folder = Filter {
        folder: Some(Folder::Reference),
        ..all()
    };
    assert_eq!(run.ask("lisbon", folder), ["Reference/2026-10-01_notes.md"]);
    // Any script: words inside an unspaced run, Cyrillic.
    assert_eq!(run.ask("本屋", all()), ["Reference/2026-09-02_tokyo.md"]);
    assert_eq!(run.ask("神保町", all()), ["Reference/2026-09-02_tokyo.md"]);
    assert_eq!(run.ask("москва", all()), ["Reference/2026-09-02_tokyo.md"]);
    // Words that look like FTS5 syntax are only words (a syntax error would have made the
    // index unusable and the answer a scan).
    let syntax = run.ask("NEAR(offsite AND) OR * \"", all());
    assert!(!syntax.is_empty());
    assert!(run.ask("zzz", all()).is_empty());
    // Snippets come from the note, around the match, without the title line.
    let (hits, _) = run.index.search(&Query {
        text: "dispossessed".into(),
        filter: all(),
        limit: 10,
    });
    assert_eq!(
        hits,
        [Hit {
            path: "Reference/2026-09-01_books.md".into(),
            title: "Books Sarah recommended".into(),
            tags: vec!["person/sarah".into(), "topic/books".into()],
            created: Some("2026-09-01".into()),
            snippet: "Piranesi, and The Dispossessed.".into(),
        }]
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletions_on_disk_are_followed() {
    let vault = tempfile::tempdir().unwrap();
    fixture(vault.path());
    let run = Running::start(vault, tempfile::tempdir().unwrap()).await;
    let before = *run.index.progress().borrow();
    put(
        run.root(),
        "Reference/2026-09-01_books.md",
        &note("2026-09-01", &[], "Books", "Now about gardening."),
    );
    run.until(|p| p.followed > before.followed).await;
    assert_eq!(
        run.ask("gardening", all()),
        ["Reference/2026-09-01_books.md"]
    );
    assert!(
        run.ask("dispossessed", all()).is_empty(),
        "old words are gone"
    );
    // In place, as an editor that does not rename would.
    let before = *run.index.progress().borrow();
    fs::write(
        run.root().join("Projects/board.md"),
        "# Chess\n\nendgame studies\n",
    )
    .unwrap();
    run.until(|p| p.followed > before.followed).await;
    let deadline = tokio::time::Instant::now() + WITHIN;
    // The write may arrive as several events; each is applied before the next query.
    while run.ask("endgame", all()).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the in-place edit was never seen"
        );
        let seen = *run.index.progress().borrow();
        run.until(|p| p.followed > seen.followed).await;
    }
    let before = *run.index.progress().borrow();
    fs::remove_file(run.root().join("Archive/old.md")).unwrap();
    run.until(|p| p.followed > before.followed).await;
    assert_eq!(
        run.ask("offsite", all()),
        [
            "Tasks/2026-11-01_offsite.md",
            "Reference/2026-10-01_notes.md"
        ]
    );
    // A folder renamed takes its notes along.
    let before = *run.index.progress().borrow();
    fs::rename(
        run.root().join("Ideas/deep"),
        run.root().join("Ideas/shallow"),
    )
    .unwrap();
    run.until(|p| p.followed >= before.followed + 2).await;
    assert_eq!(
        run.ask("cafe", all()),
        ["Ideas/shallow/nested/Café idea.md"]
    );
    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_deleted_index_file_is_rebuilt_and_queries_scan_meanwhile() {
    let vault = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    fixture(vault.path());
    // Before any index: the scan answers, in the same order.
    let cold = Index::new(vault.path(), data.path());
    let (hits, answer) = cold.search(&Query {
        text: "offsite".into(),
        filter: all(),
        limit: 10,
    });
    assert_eq!(answer, Answer::Scan);
    let paths: Vec<&str> = hits.iter().map(|h| h.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "Tasks/2026-11-01_offsite.md",
            "Archive/old.md",
            "Reference/2026-10-01_notes.md"
        ]
    );

    // A truncated file (the bridge was stopped): set aside and built anew.
    let file = data.path().join(INDEX_FILE);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, b"SQLite format 3\0 and then nothing").unwrap();
    let run = Running::start(vault, data).await;
    assert_eq!(
        run.ask("cafe idea", all()),
        ["Ideas/deep/nested/Café idea.md", "Projects/board.md"]
    );

    // Deleted while in use: the next query notices, scans, and the index is rebuilt.
    fs::remove_file(&file).unwrap();
    let (hits, answer) = run.index.search(&Query {
        text: "cafe".into(),
        filter: all(),
        limit: 10,
    });
    assert_eq!((hits.len(), answer), (2, Answer::Scan));
    run.until(|p| p.builds >= 2).await;
    assert!(file.exists());
    assert_eq!(
        run.ask("cafe idea", all()),
        ["Ideas/deep/nested/Café idea.md", "Projects/board.md"]
    );
    run.stop().await;
}
