//! `vault_search` in `make bench`: the index over 10,000 notes of ~2 KB (first build, warm
//! queries p50/p95, a note edited on disk until it is found, the reply-path latency while
//! the index builds) and over 100,000 notes (build, warm p95, size on disk, the process's
//! memory with that index open).
//!
//! The vault is generated: words from a fixed vocabulary with a skewed frequency (a few
//! common, most rare), so queries range from thousands of matches to a handful. The rows are
//! appended to `<target>/bench/micro.json` for the one results table. Run without `--bench`
//! (as `cargo test --benches` does) it only checks that everything runs, on a small vault.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bridge::search::{Answer, Filter, Index, Query, follow};
use bridge::vault::{Folder, NewNote, Vault};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use support::{Row, Summary};
use util::rng::Rng;

/// Queries timed per vault, after as many untimed ones.
const QUERIES: usize = 300;
/// Edits timed until found.
const EDITS: usize = 20;
/// How long any wait for the follower may take.
const WITHIN: Duration = Duration::from_secs(120);

/// A word of `vocab` drawn by `rng`, common ones (the start of the list) far more often.
fn word<'v>(rng: &mut Rng, vocab: &'v [String]) -> &'v str {
    let u = (rng.bits() >> 11) as f64 / (1u64 << 53) as f64;
    let i = ((u * u * u) * vocab.len() as f64) as usize;
    &vocab[i.min(vocab.len() - 1)]
}

fn vocabulary() -> Vec<String> {
    let syllables = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "de", "fa", "gu", "pe",
    ];
    let mut words = Vec::new();
    for a in syllables {
        for b in syllables {
            for c in ["", "n", "r", "s", "l"] {
                for d in syllables.iter().take(6) {
                    words.push(format!("{a}{b}{c}{d}"));
                }
            }
        }
    }
    words
}

/// Writes `count` notes of ~2 KB in the content folders, a few levels deep.
fn write_vault(root: &Path, count: usize) {
    let vocab = vocabulary();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..count {
        let folder = Folder::ALL[i % 5].as_str();
        let dir = root.join(folder).join(format!("{:03}", i % 97));
        if i < 97 * 5 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        let title: Vec<&str> = (0..4).map(|_| word(&mut rng, &vocab)).collect();
        let mut body = String::with_capacity(2100);
        while body.len() < 1900 {
            body.push_str(word(&mut rng, &vocab));
            body.push(if rng.bits().is_multiple_of(12) {
                '\n'
            } else {
                ' '
            });
        }
        let text = format!(
            "---\ncreated: 2026-{:02}-{:02}T09:00:00Z\ntags:\n  - topic/{}\n  - priority/normal\n---\n# {}\n\n{body}\n",
            1 + i % 12,
            1 + i % 28,
            word(&mut rng, &vocab),
            title.join(" ")
        );
        std::fs::write(dir.join(format!("note-{i}.md")), text).unwrap();
    }
}

/// The queries timed: common and rare words, two words, a phrase, filters.
fn queries() -> Vec<Query> {
    let vocab = vocabulary();
    let q = |text: String, filter: Filter| Query {
        text,
        filter,
        limit: 10,
    };
    let mut out = Vec::new();
    for i in 0..20 {
        let common = &vocab[i];
        let rare = &vocab[vocab.len() - 1 - i * 7];
        let middle = &vocab[vocab.len() / 3 + i];
        out.push(q(common.clone(), Filter::default()));
        out.push(q(rare.clone(), Filter::default()));
        out.push(q(format!("{middle} {common}"), Filter::default()));
        out.push(q(
            format!("\"{common} {}\"", &vocab[i + 1]),
            Filter::default(),
        ));
        let folder = Filter {
            folder: Some(Folder::Ideas),
            ..Filter::default()
        };
        out.push(q(middle.clone(), folder));
        let tagged = Filter {
            tags: vec!["priority/normal".into()],
            ..Filter::default()
        };
        out.push(q(rare.clone(), tagged));
    }
    out
}

struct Built {
    index: Index,
    cancel: CancellationToken,
    took: Duration,
}

/// Starts the index of `vault` (data in `data`) and waits for its first build.
fn build(rt: &tokio::runtime::Runtime, vault: &Path, data: &Path) -> Built {
    let index = Index::new(vault, data);
    let cancel = CancellationToken::new();
    let mut progress = index.progress();
    let started = Instant::now();
    rt.spawn(follow::run(index.clone(), cancel.clone()));
    rt.block_on(async {
        tokio::time::timeout(WITHIN, progress.wait_for(|p| p.builds >= 1))
            .await
            .expect("the index builds")
            .unwrap();
    });
    Built {
        index,
        cancel,
        took: started.elapsed(),
    }
}

/// Query latencies in milliseconds, warm (after as many untimed queries).
fn time_queries(index: &Index, n: usize) -> Summary {
    let qs = queries();
    for q in qs.iter().cycle().take(n) {
        let (_, answer) = index.search(q);
        assert_eq!(answer, Answer::Index);
    }
    let mut ms = Vec::with_capacity(n);
    for q in qs.iter().cycle().take(n) {
        let t = Instant::now();
        std::hint::black_box(index.search(q));
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Summary::of(&ms).unwrap()
}

/// Milliseconds from an in-place edit (a new word) until a search finds it.
fn time_edits(rt: &tokio::runtime::Runtime, index: &Index, vault: &Path, n: usize) -> Summary {
    let mut ms = Vec::new();
    let path = vault.join("Tasks/000/note-0.md");
    for i in 0..n {
        let word = format!("zedit{i}marker");
        let mut progress = index.progress();
        let before = *progress.borrow();
        let t = Instant::now();
        std::fs::write(&path, format!("# Edited\n\nnow with {word}\n")).unwrap();
        let q = Query {
            text: word,
            filter: Filter::default(),
            limit: 10,
        };
        loop {
            if !index.search(&q).0.is_empty() {
                break;
            }
            assert!(t.elapsed() < WITHIN, "the edit was never found");
            let seen = *progress.borrow_and_update();
            let _ = rt.block_on(async {
                tokio::time::timeout(
                    Duration::from_millis(50),
                    progress.wait_for(|p| p.followed > seen.followed.max(before.followed)),
                )
                .await
            });
        }
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Summary::of(&ms).unwrap()
}

/// Latency of the reply path's vault work (a note written and fsynced) in milliseconds,
/// `n` times, while `busy` runs.
fn note_writes(vault: &Path, n: usize, busy: impl Fn() -> bool) -> Summary {
    let v = Vault::new(vault);
    let mut ms = Vec::new();
    let now = chrono::Local::now();
    for i in 0..n {
        if !busy() && i > 0 {
            break;
        }
        let title = format!("Reply probe {i}");
        let t = Instant::now();
        let note = NewNote {
            folder: Folder::Inbox,
            title: &title,
            content: "probe",
            tags: &[],
            confidence: 90,
            source: None,
        };
        v.write_note(&note, now).unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(10));
    }
    Summary::of(&ms).unwrap()
}

fn disk_bytes(data: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|s| std::fs::metadata(data.join(format!("search/index.sqlite{s}"))).ok())
        .map(|m| m.len())
        .sum()
}

/// The process's resident and peak memory in KB (Linux; `None` elsewhere).
fn rss_kb() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (small, large) = if full { (10_000, 100_000) } else { (200, 400) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rows.extend(ten_thousand(
        &rt,
        small,
        if full { QUERIES } else { 20 },
        if full { EDITS } else { 3 },
    ));
    rows.extend(hundred_thousand(
        &rt,
        large,
        if full { QUERIES } else { 20 },
    ));
    for row in &rows {
        println!("{:<60} {:>28}  {}", row.metric, row.value, row.target);
    }
    if full {
        let path = support::micro_rows_path();
        let mut all: Vec<Row> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        all.extend(rows);
        support::write_json(&path, &all);
        println!("search: rows added to {}", path.display());
    }
}

fn ten_thousand(rt: &tokio::runtime::Runtime, n: usize, queries: usize, edits: usize) -> Vec<Row> {
    let vault = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_vault(vault.path(), n);
    // The reply path's vault work alone, then while the first build runs.
    let idle = note_writes(vault.path(), 30, || true);
    let index_file = data.path().join("search/index.sqlite");
    let building = std::thread::scope(|s| {
        let probe = s.spawn(|| {
            while !index_file.exists() {
                std::thread::yield_now();
            }
            note_writes(vault.path(), 10_000, || !index_ready(&index_file, n))
        });
        let built = build(rt, vault.path(), data.path());
        (built, probe.join().unwrap())
    });
    let (built, during) = building;
    let q = time_queries(&built.index, queries);
    let e = time_edits(rt, &built.index, vault.path(), edits);
    built.cancel.cancel();
    let build_ms = built.took.as_secs_f64() * 1e3;
    vec![
        Row::new(
            format!("search index: first build, {n} notes"),
            support::ms(build_ms),
        )
        .target("≤ 5 s", build_ms <= 5_000.0)
        .num("ms", build_ms),
        Row::new(
            format!("vault_search over {n} notes, warm (n={})", q.n),
            format!("p50 {} · p95 {}", support::ms(q.p50), support::ms(q.p95)),
        )
        .target("p50 ≤ 20 ms, p95 ≤ 50 ms", q.p50 <= 20.0 && q.p95 <= 50.0)
        .num("p50_ms", q.p50)
        .num("p95_ms", q.p95)
        .num("max_ms", q.max),
        Row::new(
            format!("note edited on disk → found by vault_search (n={})", e.n),
            format!("p95 {} · max {}", support::ms(e.p95), support::ms(e.max)),
        )
        .target("≤ 1 s", e.max <= 1_000.0)
        .num("p95_ms", e.p95)
        .num("max_ms", e.max),
        Row::new(
            format!(
                "reply-path note write during the build (n={}; idle p95 {})",
                during.n,
                support::ms(idle.p95)
            ),
            format!("p95 {}", support::ms(during.p95)),
        )
        .target("≤ 60 ms p95", during.p95 <= 60.0)
        .num("p95_ms", during.p95)
        .num("idle_p95_ms", idle.p95),
    ]
}

/// Whether the index file already holds `n` notes (read by a connection of its own).
fn index_ready(file: &Path, n: usize) -> bool {
    let Ok(conn) =
        rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return false;
    };
    conn.query_row("SELECT count(*) FROM notes", [], |r| r.get::<_, i64>(0))
        .is_ok_and(|c| c as usize >= n)
}

fn hundred_thousand(rt: &tokio::runtime::Runtime, n: usize, queries: usize) -> Vec<Row> {
    let vault = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    write_vault(vault.path(), n);
    let built = build(rt, vault.path(), data.path());
    let q = time_queries(&built.index, queries);
    let bytes = disk_bytes(data.path());
    let rss = rss_kb();
    built.cancel.cancel();
    let build_s = built.took.as_secs_f64();
    let mb = |kb: u64| format!("{:.1} MB", kb as f64 / 1024.0);
    let memory = match rss {
        Some((now, peak)) => Row::new(
            format!("bench process RSS with the {n}-note index open"),
            format!("{} (peak {})", mb(now), mb(peak)),
        )
        .target("≤ 60 MB", now <= 60 * 1024)
        .num("kb", now as f64)
        .num("peak_kb", peak as f64),
        None => Row::new(
            "bench process RSS with the index open",
            "not measured (no /proc)",
        )
        .target_unjudged("≤ 60 MB"),
    };
    vec![
        Row::new(
            format!("search index: first build, {n} notes"),
            format!("{build_s:.1} s"),
        )
        .num("s", build_s),
        Row::new(
            format!("vault_search over {n} notes, warm (n={})", q.n),
            format!("p50 {} · p95 {}", support::ms(q.p50), support::ms(q.p95)),
        )
        .target("p95 ≤ 200 ms", q.p95 <= 200.0)
        .num("p50_ms", q.p50)
        .num("p95_ms", q.p95),
        Row::new(
            format!("search index on disk, {n} notes"),
            format!("{:.1} MB", bytes as f64 / 1048576.0),
        )
        .json("bytes", json!(bytes)),
        memory,
    ]
}
