//! Micro-benchmarks of the bridge's hot paths, in process: the session store under a steady
//! 1,000 mutations per second (the caller's cost of `put`, and how long until each change
//! is on disk), opening a store of 10,000 sessions, `Vault::list` over 10,000 notes (cold:
//! a fresh `Vault`; warm: its header cache filled) and decoding the LongMessage
//! `attributedBody`.
//!
//! Timed benchmarks use criterion with short warm-up and measurement times, so that the
//! whole `make bench` stays within its budget; the store load is a fixed-rate loop timed
//! here. Every fixture lives in its own temporary directory. The rows go to
//! `<target>/bench/micro.json`, where the end-to-end driver picks them up for the one
//! results table. Run without `--bench` (as `cargo test --benches` does) it only checks that
//! every benchmark works, on small fixtures.

use util::chatdb;
mod support;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use bridge::chatdb::Chat;
use bridge::sessions::{Session, SessionState, SessionStore};
use bridge::typedstream;
use bridge::vault::{Folder, ListQuery, NewNote, Vault};
use chrono::{DateTime, Local, TimeDelta, Utc};
use criterion::Criterion;
use notify::{RecursiveMode, Watcher as _};
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use support::{Row, Summary};

/// The sizes of one run: the real ones, or small ones for a check.
struct Scale {
    /// Sessions in the store opened by `sessions/open`.
    open_sessions: usize,
    /// Notes in the listed vault.
    notes: usize,
    /// Sessions in the store under load.
    load_sessions: usize,
    /// How long the load runs.
    load_for: Duration,
}

const FULL: Scale = Scale {
    open_sessions: 10_000,
    notes: 10_000,
    load_sessions: 100,
    load_for: Duration::from_secs(5),
};

const CHECK: Scale = Scale {
    open_sessions: 50,
    notes: 60,
    load_sessions: 10,
    load_for: Duration::from_millis(200),
};

/// One mutation every millisecond.
const LOAD_PERIOD: Duration = Duration::from_millis(1);
/// The target for one `put`, in microseconds.
const PUT_TARGET_US: f64 = 10.0;
/// Idle sessions older than this are dropped on open; every fixture session is younger.
const SESSION_TIMEOUT: Duration = Duration::from_secs(3600);

fn main() {
    let started = SystemTime::now();
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { &FULL } else { &CHECK };
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .nresamples(10_000)
        .without_plots()
        .configure_from_args();

    // Criterion filters its own benchmarks; the fixtures and the load are skipped here too.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wanted("typedstream/long_message") {
        bench_typedstream(&mut criterion);
    }
    if wanted("vault_list/cold") || wanted("vault_list/warm") {
        bench_vault_list(&mut criterion, scale);
    }
    let mut store_bytes = None;
    if wanted("sessions/open") {
        store_bytes = Some(bench_sessions_open(&mut criterion, scale));
    }
    let mut rows = Vec::new();
    if wanted("sessions/load") {
        rows.push(store_under_load(scale));
    }
    rows.extend(criterion_rows(started, scale, store_bytes));
    if full {
        let path = support::micro_rows_path();
        support::write_json(&path, &rows);
        println!(
            "micro: {} rows written to {} for the results table",
            rows.len(),
            path.display()
        );
    } else {
        println!("micro: every benchmark ran once; `make bench` gives the figures");
    }
}

// ---- fixtures ----

fn chat(n: usize) -> Chat {
    Chat {
        guid: format!("iMessage;-;+1555{n:07}"),
        identifier: format!("+1555{n:07}"),
        is_group: false,
    }
}

/// A session as a clarifying question leaves it: waiting, with the six-item transcript of
/// the question (text, log_interaction, its result, send_message, its result, final text).
fn waiting_session(n: usize, now: DateTime<Utc>) -> Session {
    let chat = chat(n);
    let input = format!("dinner with sam number {n}");
    let question = "Which day is dinner with Sam?";
    let sender = chat.identifier.clone();
    let mut session = Session::new(chat, sender, now - TimeDelta::minutes(5));
    session.transcript = vec![
        json!({"role": "user", "content": [{"type": "text", "text": input}]}),
        json!({"role": "assistant", "content": [
            {"type": "text", "text": "I'll ask which day."},
            {"type": "tool_use", "id": format!("toolu_{n}_1"), "name": "log_interaction",
             "input": {"input": input, "confidence": 40, "clarification": question}}]}),
        json!({"role": "user", "content": [{"type": "tool_result",
            "tool_use_id": format!("toolu_{n}_1"), "content": "_system/logs/2025-03-01.md"}]}),
        json!({"role": "assistant", "content": [{"type": "tool_use",
            "id": format!("toolu_{n}_2"), "name": "send_message", "input": {"message": question}}]}),
        json!({"role": "user", "content": [{"type": "tool_result",
            "tool_use_id": format!("toolu_{n}_2"), "content": "sent"}]}),
        json!({"role": "assistant", "content": [{"type": "text", "text": "Asked."}]}),
    ];
    session.state = SessionState::Waiting {
        original: input,
        question: Some(question.to_string()),
    };
    session.message_count = 1;
    session.input_tokens = 0;
    session.output_tokens = 180;
    session
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// Writes `count` sessions to `path` through the store itself, so the file is the
/// product's own.
fn write_sessions_file(rt: &tokio::runtime::Runtime, path: &Path, count: usize) {
    let now = Utc::now();
    let tracker = TaskTracker::new();
    let (store, _) = {
        let _entered = rt.enter();
        SessionStore::open(path.to_path_buf(), SESSION_TIMEOUT, now, &tracker)
            .expect("open the fixture store")
    };
    for n in 0..count {
        store.put(waiting_session(n, now));
    }
    rt.block_on(store.flush()).expect("save the fixture store");
    drop(store);
    tracker.close();
    rt.block_on(tracker.wait());
}

// ---- the session store under load ----

/// Puts one session every millisecond for `scale.load_for` on a store of
/// `scale.load_sessions` sessions, timing each `put` at the caller. A watcher reads the
/// file after every change of it: each put raises a marker (`input_tokens` = its sequence
/// number), so the largest marker in the file says which puts are on disk. A put's
/// persistence lag is the time from the start of the put to the first read of the file
/// that contains it (an upper bound: it includes the watcher's own delay). A put slower than
/// the target is classified by this thread's context switches during it: preempted
/// (involuntary), blocked (voluntary: waiting on a lock), or neither (on CPU all along).
fn store_under_load(scale: &Scale) -> Row {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sessions.json");
    let now = Utc::now();
    write_sessions_file(&rt, &path, scale.load_sessions);
    let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());

    let tracker = TaskTracker::new();
    let (store, report) = {
        let _entered = rt.enter();
        SessionStore::open(path.clone(), SESSION_TIMEOUT, now, &tracker).expect("open the store")
    };
    assert_eq!(
        report.loaded, scale.load_sessions,
        "the fixture store loads"
    );
    let templates: Vec<Session> = (0..scale.load_sessions)
        .map(|n| waiting_session(n, now))
        .collect();

    let (observer, watcher) = watch_markers(dir.path(), &path);
    let count = (scale.load_for.as_micros() / LOAD_PERIOD.as_micros()) as usize;
    let start = Instant::now();
    let puts = put_every_period(&store, &templates, count, start);
    let load_secs = start.elapsed().as_secs_f64();
    rt.block_on(store.flush()).expect("the last puts are saved");
    // The watcher has seen the rename of the last save; stop it and collect what it read.
    drop(watcher);
    let observed = observer.join().expect("the watcher thread");
    drop(store);
    tracker.close();
    rt.block_on(tracker.wait());

    load_row(scale, file_bytes, load_secs, &puts, &observed)
}

/// The row of [`store_under_load`].
fn load_row(
    scale: &Scale,
    file_bytes: u64,
    load_secs: f64,
    puts: &Puts,
    observed: &Observed,
) -> Row {
    let (preempted, blocked, on_cpu) = (puts.preempted, puts.blocked, puts.on_cpu);
    let count = puts.put_us.len();
    let lags_ms = lags(&puts.put_at, &observed.reads);
    let saves = observed.saves.len();
    let gaps_ms: Vec<f64> = observed
        .saves
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    let gaps = Summary::of(&gaps_ms);
    let undisturbed = Summary::of(&puts.undisturbed_us);
    let empty = Summary::of(&puts.empty_us).expect("puts were made");
    let empty_slow = puts
        .empty_us
        .iter()
        .filter(|us| **us > PUT_TARGET_US)
        .count();
    let missing = count - lags_ms.len();
    let put = Summary::of(&puts.put_us).expect("puts were made");
    let lag = Summary::of(&lags_ms);
    let value = match lag {
        Some(lag) => format!(
            "put p50 {} · p99 {} · max {} ({} of {count} over {PUT_TARGET_US} µs: {preempted} \
             preempted, {blocked} blocked, {on_cpu} on CPU; p99 of puts never switched out {}; \
             an empty timed region: p99 {}, max {}, {empty_slow} over {PUT_TARGET_US} µs); \
             on disk after p50 {} · p95 {} · max {} ({saves} saves in {load_secs:.1} s, \
             longest gap between two saves {})",
            support::us(put.p50),
            support::us(put.p99),
            support::us(put.max),
            preempted + blocked + on_cpu,
            undisturbed.map_or("—".into(), |u| support::us(u.p99)),
            support::us(empty.p99),
            support::us(empty.max),
            support::ms(lag.p50),
            support::ms(lag.p95),
            support::ms(lag.max),
            gaps.map_or("—".into(), |g| support::ms(g.max)),
        ),
        None => "no save was observed".to_string(),
    };
    let met = lag.is_some_and(|l| l.max <= 100.0) && put.p99 <= PUT_TARGET_US && missing == 0;
    let row = Row::new(
        format!(
            "session store at 1,000 puts/s for {} s ({} sessions, {} file)",
            scale.load_for.as_secs_f64(),
            scale.load_sessions,
            support::kb(file_bytes as f64)
        ),
        value,
    )
    .target(
        format!("put ≤ {PUT_TARGET_US} µs at the caller (p99); on disk ≤ 100 ms (max)"),
        met,
    )
    .num("puts", count as f64)
    .num("load_secs", load_secs)
    .num("file_bytes", file_bytes as f64)
    .num("puts_never_seen_on_disk", missing as f64)
    .num("saves", saves as f64);
    let row = put_nums(row, puts, put, undisturbed, empty, empty_slow)
        .num("save_gap_p50_ms", gaps.map_or(f64::NAN, |g| g.p50))
        .num("save_gap_max_ms", gaps.map_or(f64::NAN, |g| g.max));
    match lag {
        Some(lag) => row
            .num("lag_p50_ms", lag.p50)
            .num("lag_p95_ms", lag.p95)
            .num("lag_max_ms", lag.max),
        None => row,
    }
}

/// The figures of the puts themselves.
fn put_nums(
    row: Row,
    puts: &Puts,
    put: Summary,
    undisturbed: Option<Summary>,
    empty: Summary,
    empty_slow: usize,
) -> Row {
    row.num("put_p50_us", put.p50)
        .num("put_p99_us", put.p99)
        .num("put_max_us", put.max)
        .num("slow_puts_preempted", puts.preempted as f64)
        .num("slow_puts_blocked", puts.blocked as f64)
        .num("slow_puts_on_cpu", puts.on_cpu as f64)
        .num(
            "put_p99_us_never_switched_out",
            undisturbed.map_or(f64::NAN, |u| u.p99),
        )
        .num("empty_region_p99_us", empty.p99)
        .num("empty_region_max_us", empty.max)
        .num("empty_regions_over_target", empty_slow as f64)
}

/// Each put's time at the caller and start, and why the slow ones were slow.
struct Puts {
    put_us: Vec<f64>,
    put_at: Vec<Instant>,
    /// Puts over the target that were preempted, blocked, or neither (on CPU all along).
    preempted: usize,
    blocked: usize,
    on_cpu: usize,
    /// The puts never switched out.
    undisturbed_us: Vec<f64>,
    /// The same measurement around nothing: what the machine alone adds.
    empty_us: Vec<f64>,
}

/// Puts `count` sessions (copies of `templates`, each raising the marker), one every
/// [`LOAD_PERIOD`] from `start`, timing each and classifying the slow ones by this
/// thread's context switches during them.
fn put_every_period(
    store: &SessionStore,
    templates: &[Session],
    count: usize,
    start: Instant,
) -> Puts {
    let mut puts = Puts {
        put_us: Vec::with_capacity(count),
        put_at: Vec::with_capacity(count),
        preempted: 0,
        blocked: 0,
        on_cpu: 0,
        undisturbed_us: Vec::with_capacity(count),
        empty_us: Vec::with_capacity(count),
    };
    for i in 0..count {
        let due = start + LOAD_PERIOD * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut session = templates[i % templates.len()].clone();
        session.input_tokens = i as u64 + 1;
        session.last_activity = Utc::now();
        let switches = context_switches();
        let before = Instant::now();
        store.put(session);
        let took = before.elapsed().as_secs_f64() * 1e6;
        let (voluntary, involuntary) = context_switches();
        let slow = usize::from(took > PUT_TARGET_US);
        if involuntary > switches.1 {
            puts.preempted += slow;
        } else if voluntary > switches.0 {
            puts.blocked += slow;
        } else {
            puts.on_cpu += slow;
            puts.undisturbed_us.push(took);
        }
        puts.put_us.push(took);
        puts.put_at.push(before);
        let nothing = Instant::now();
        black_box(());
        puts.empty_us.push(nothing.elapsed().as_secs_f64() * 1e6);
    }
    puts
}

/// What the watcher thread saw.
struct Observed {
    /// When it read the file and the largest marker in it, for each read that found newer
    /// puts.
    reads: Vec<(Instant, u64)>,
    /// When each save (the rename of the file into place) was seen.
    saves: Vec<Instant>,
}

/// Starts a thread that, after every change of `file` (seen by a file watch on `dir`),
/// reads it and notes when it was read and its largest marker; it also counts the file's
/// events (one per save: the rename into place). The thread ends when the returned watcher
/// is dropped.
fn watch_markers(
    dir: &Path,
    file: &Path,
) -> (
    std::thread::JoinHandle<Observed>,
    notify::RecommendedWatcher,
) {
    let (tx, rx) = mpsc::channel::<Instant>();
    let name = file.file_name().map(|n| n.to_os_string());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        // The reader's own opens must not count (nor wake it again).
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == name.as_deref()) {
            let _ = tx.send(Instant::now());
        }
    })
    .expect("create a file watcher");
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .expect("watch the store's directory");
    let file = file.to_path_buf();
    let observer = std::thread::spawn(move || {
        let mut seen: Vec<(Instant, u64)> = Vec::new();
        let mut saves = Vec::new();
        while let Ok(event) = rx.recv() {
            saves.push(event);
            while let Ok(event) = rx.try_recv() {
                saves.push(event);
            }
            let at = Instant::now();
            if let Some(marker) = largest_marker(&file)
                && seen.last().is_none_or(|(_, last)| marker > *last)
            {
                seen.push((at, marker));
            }
        }
        Observed { reads: seen, saves }
    });
    (observer, watcher)
}

/// The largest `input_tokens` in a sessions file, or `None` if it cannot be read. A scan for
/// the key rather than a parse, so that watching costs the measured writer little CPU.
fn largest_marker(file: &Path) -> Option<u64> {
    const KEY: &[u8] = b"\"input_tokens\":";
    let bytes = std::fs::read(file).ok()?;
    let mut largest = None;
    let mut rest = &bytes[..];
    while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
        rest = &rest[at + KEY.len()..];
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        let value = std::str::from_utf8(&rest[..digits])
            .ok()?
            .parse::<u64>()
            .ok()?;
        largest = largest.max(Some(value));
    }
    largest
}

/// This thread's (voluntary, involuntary) context switches so far, from
/// `/proc/thread-self/status`; zeros where it cannot be read.
fn context_switches() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
    )
}

/// For each put `i` (marker `i + 1`), milliseconds from its start to the first read that
/// found it on disk. Puts never seen are left out.
fn lags(put_at: &[Instant], seen: &[(Instant, u64)]) -> Vec<f64> {
    let mut out = Vec::with_capacity(put_at.len());
    let mut next = 0;
    for (i, at) in put_at.iter().enumerate() {
        let marker = i as u64 + 1;
        while next < seen.len() && seen[next].1 < marker {
            next += 1;
        }
        let Some((read_at, _)) = seen.get(next) else {
            break;
        };
        out.push(read_at.saturating_duration_since(*at).as_secs_f64() * 1e3);
    }
    out
}

// ---- criterion benchmarks ----

fn bench_typedstream(c: &mut Criterion) {
    let blob = chatdb::blob("LongMessage");
    let expected = chatdb::expected("LongMessage");
    assert_eq!(
        typedstream::decode_text(&blob).as_deref(),
        Some(expected.as_str())
    );
    c.benchmark_group("typedstream")
        .bench_function("long_message", |b| {
            b.iter(|| typedstream::decode_text(black_box(&blob)))
        });
}

/// A vault of `count` notes written by `Vault::write_note`, spread over the content
/// folders and over the last 400 days. Each write syncs to disk, which on a busy disk takes
/// minutes for 10,000 notes, so they are written in memory (`/dev/shm`) where it exists and
/// then copied into `root`. The vault refuses to live under a system folder such as `/dev`,
/// so the notes are written in memory only where that place would be accepted.
fn make_vault(root: &Path, count: usize) {
    let scratch = tempfile::tempdir_in("/dev/shm")
        .ok()
        .filter(|s| bridge::vault::check_vault_place(s.path(), None).is_ok());
    let written = scratch.as_ref().map_or(root, |s| s.path());
    write_notes(written, count);
    if written != root {
        copy_tree(written, root);
    }
}

/// Copies the files below `from` into `to`, folders included, without syncing.
fn copy_tree(from: &Path, to: &Path) {
    for entry in walk(from) {
        let target = to.join(entry.strip_prefix(from).expect("below the scratch vault"));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).expect("create a vault folder");
        }
        std::fs::copy(&entry, &target).expect("copy a fixture note");
    }
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read a scratch folder")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

fn write_notes(root: &Path, count: usize) {
    let vault = Vault::new(root);
    let tags = [
        "priority/normal".to_string(),
        "status/active".to_string(),
        "person/sam".to_string(),
    ];
    let now = Local::now();
    for n in 0..count {
        let folder = Folder::ALL[n % Folder::ALL.len()];
        let title = format!("Note {n} about the garden, the dentist and the offsite");
        let content = format!(
            "- [ ] Follow up on item {n}\n\nSome context for note {n}, a couple of lines \
             long,\nwith a [link](https://example.com/{n}) and a #tag.\n"
        );
        let note = NewNote {
            folder,
            title: &title,
            content: &content,
            tags: &tags,
            confidence: 90,
            source: None,
        };
        let when = now - TimeDelta::minutes((n as i64 * 57) % (400 * 24 * 60));
        vault.write_note(&note, when).expect("write a fixture note");
    }
}

fn bench_vault_list(c: &mut Criterion, scale: &Scale) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().to_path_buf();
    let made = Instant::now();
    make_vault(&root, scale.notes);
    eprintln!(
        "micro: wrote {} notes in {:.1} s",
        scale.notes,
        made.elapsed().as_secs_f64()
    );
    let query = ListQuery::default();
    let listed = Vault::new(&root).list(&query).expect("list the vault");
    assert_eq!(listed.len(), query.limit.min(scale.notes));

    let mut group = c.benchmark_group("vault_list");
    group.sample_size(10);
    group.bench_function("cold", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let vault = Vault::new(&root);
                let start = Instant::now();
                black_box(vault.list(&query).expect("list"));
                total += start.elapsed();
            }
            total
        })
    });
    let warm = Vault::new(&root);
    warm.list(&query).expect("fill the cache");
    group.bench_function("warm", |b| {
        b.iter(|| black_box(warm.list(&query).expect("list")))
    });
    group.finish();
}

/// Returns the size of the store's file.
fn bench_sessions_open(c: &mut Criterion, scale: &Scale) -> u64 {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("sessions.json");
    write_sessions_file(&rt, &path, scale.open_sessions);
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let mut group = c.benchmark_group("sessions");
    group.sample_size(10);
    group.bench_function("open", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tracker = TaskTracker::new();
                let (store, report) = {
                    // The store spawns its writer, so it opens inside the runtime.
                    let _entered = rt.enter();
                    let start = Instant::now();
                    let opened =
                        SessionStore::open(path.clone(), SESSION_TIMEOUT, Utc::now(), &tracker)
                            .expect("open the store");
                    total += start.elapsed();
                    opened
                };
                assert_eq!(report.loaded, scale.open_sessions);
                drop(store);
                tracker.close();
                rt.block_on(tracker.wait());
            }
            total
        })
    });
    group.finish();
    bytes
}

/// The median of a criterion benchmark's latest run, in nanoseconds, if it ran after
/// `since`.
fn criterion_median_ns(group: &str, function: &str, since: SystemTime) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| support::target_dir().join("criterion"));
    let file = home.join(group).join(function).join("new/estimates.json");
    let fresh = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    if !fresh {
        return None;
    }
    let estimates: Value = serde_json::from_slice(&std::fs::read(&file).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

fn criterion_rows(since: SystemTime, scale: &Scale, store_bytes: Option<u64>) -> Vec<Row> {
    let median = |g, f| criterion_median_ns(g, f, since);
    let mut rows = Vec::new();
    let not_run = "not run".to_string();

    let open = median("sessions", "open");
    rows.push(
        Row::new(
            format!(
                "open a store of {} waiting sessions ({} file)",
                scale.open_sessions,
                store_bytes.map_or("?".into(), |b| support::kb(b as f64))
            ),
            open.map_or(not_run.clone(), |ns| support::ms(ns / 1e6)),
        )
        .num("median_ms", open.map_or(f64::NAN, |ns| ns / 1e6)),
    );

    let cold = median("vault_list", "cold");
    rows.push(
        Row::new(
            format!(
                "vault_list over {} notes, cold (fresh Vault, OS cache warm)",
                scale.notes
            ),
            cold.map_or(not_run.clone(), |ns| support::ms(ns / 1e6)),
        )
        .num("median_ms", cold.map_or(f64::NAN, |ns| ns / 1e6)),
    );

    let warm = median("vault_list", "warm");
    let warm_row = Row::new(
        format!("vault_list over {} notes, warm", scale.notes),
        warm.map_or(not_run.clone(), |ns| support::ms(ns / 1e6)),
    )
    .num("median_ms", warm.map_or(f64::NAN, |ns| ns / 1e6));
    rows.push(match warm {
        Some(ns) => warm_row.target("≤ 100 ms", ns / 1e6 <= 100.0),
        None => warm_row.target_unjudged("≤ 100 ms"),
    });

    let decode = median("typedstream", "long_message");
    rows.push(
        Row::new(
            "typedstream: decode the LongMessage attributedBody (2,359 chars)",
            decode.map_or(not_run, |ns| support::us(ns / 1e3)),
        )
        .num("median_us", decode.map_or(f64::NAN, |ns| ns / 1e3)),
    );
    rows
}
