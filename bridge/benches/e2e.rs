//! The end-to-end benchmark: the real release `second-brain-bridge` timed from outside.
//!
//! It runs the binary as a child process against a fixture chat.db (the real schema), the
//! fake Anthropic server answering at once with the capture sequence (vault_write,
//! log_interaction, send_message, end_turn) and the fake `osascript` first on `PATH`, all
//! from `tests/util`. Nothing is added to the product to be measured: latency is taken
//! from the moment a row's insert committed to the fake osascript's own start timestamp;
//! detection is bounded from above by the fake API's arrival time of a text's first request
//! (and, tighter, by the timestamp of the bridge's own `claimed` debug line); memory and CPU
//! come from `/proc/<pid>`; the processes the bridge starts are counted by `strace -f`
//! (or, without strace, by sampling `/proc/<pid>/task/*/children`).
//!
//! It prints ONE table (every figure with its target and the TypeScript original's figure,
//! the micro-benchmarks' rows merged in from `<target>/bench/micro.json`) and writes it to
//! `<target>/bench/results.json` and `results.md`. Run without `--bench` (as
//! `cargo test --benches` does) it only checks, with one capture, that the driver works.

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use util::anthropic::{self as fake, Recorded, Reply};
use util::bridge::{Bridge, ME, ME_CHAT, World};

use support::{Row, Summary};

/// Where the fake model files every text.
const FOLDER: &str = "Tasks";
/// The tags the fake model gives every note.
const TAGS: &[&str] = &["priority/normal", "status/active"];
/// Texts of realistic length and variety; each use gets a number so that every text is
/// unique and its reply can be told apart.
const TEXTS: [&str; 10] = [
    "Call the dentist about the crown on Friday",
    "Idea: a bird feeder camera that posts to the family chat",
    "Book the team offsite for March, somewhere with a lake",
    "Read The Pragmatic Programmer again",
    "Café with Noor ☕ next Tuesday at 10",
    "Renew the passport before the Lisbon trip",
    "مراجعة الميزانية مع سارة",
    "Project: repaint the kitchen, get three quotes",
    "Water the plants on Thursday 🌱",
    "Look up flights to Lisbon in May",
];
/// The other conversations of the burst across chats.
const OTHER_CHATS: usize = 10;
/// The gap of the paced pattern.
const SPACING: Duration = Duration::from_secs(3);
/// Timed starts.
const STARTS: usize = 5;
/// The idle window for CPU.
const IDLE: Duration = Duration::from_secs(30);
/// Captures watched by strace.
const CENSUS: usize = 5;
/// The bridge's default safety-net poll of chat.db (`CHAT_DB_POLL_MS`), in seconds.
const POLL_SECS: f64 = 1.5;
/// How long one wait for replies may take.
const WAIT: Duration = Duration::from_secs(60);
/// The log filter: production's `info`, plus the intake's `claimed` line (one per batch) and
/// the reader's note of a row read before its chat join.
const LOG_LEVEL: &str = "info,bridge::intake=debug,bridge::chatdb=debug";

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    runtime.block_on(async {
        if full {
            full_run().await;
        } else {
            smoke_run().await;
        }
    });
}

// ---- the world ----

/// The reply the fake model sends for `input`.
fn reply_to(input: &str) -> String {
    format!("Saved to {FOLDER}: {input}")
}

/// The capture sequence for whatever text a run started with, titled after it.
fn responder() -> impl Fn(&Value) -> Reply + Send + Sync + 'static {
    |body| {
        let input = first_text(body).unwrap_or_default().to_string();
        fake::capture_flow(FOLDER, &input, TAGS, &reply_to(&input))(body)
    }
}

/// The text that started an agent run: the first user message's first text block.
fn first_text(body: &Value) -> Option<&str> {
    body["messages"][0]["content"][0]["text"].as_str()
}

/// The handle and chat of the `n`th other conversation.
fn other(n: usize) -> (String, String) {
    let handle = format!("+1555987{n:04}");
    let chat = format!("iMessage;-;{handle}");
    (handle, chat)
}

/// Environment for every start: production logging, every benchmark sender allowed.
fn bridge_env() -> Vec<(String, String)> {
    let mut allowed = vec![ME.to_string()];
    allowed.extend((0..OTHER_CHATS).map(|n| other(n).0));
    vec![
        ("LOG_LEVEL".into(), LOG_LEVEL.into()),
        ("ALLOWED_SENDERS".into(), allowed.join(",")),
        // One sender sends all 50 texts within two minutes: speed is measured here, not the
        // per-sender rate limit (tests/abuse.rs covers that).
        ("RATE_LIMIT_PER_MINUTE".into(), "100000".into()),
    ]
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

async fn new_world() -> World {
    let world = World::new(responder()).await;
    for n in 0..OTHER_CHATS {
        let (handle, chat) = other(n);
        world.db.chat(&chat, &handle, false);
    }
    world
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

fn ns_of(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos()
}

fn ms_between(from_ns: u128, to_ns: u128) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e6
}

/// One text written into chat.db.
#[derive(Clone, Debug)]
struct Sent {
    text: String,
    chat: String,
    rowid: i64,
    /// When both of its rows (message, then chat join) had committed.
    at_ns: u128,
}

/// The counter that makes every text unique.
struct Texts(usize);

impl Texts {
    fn next(&mut self) -> String {
        let text = format!("{} (#{})", TEXTS[self.0 % TEXTS.len()], self.0 + 1);
        self.0 += 1;
        text
    }
}

/// Writes one incoming text as Messages does and notes when it was committed.
fn send(world: &World, chat: &str, sender: &str, text: String) -> Sent {
    let inserted = world.db.incoming(chat, sender, &text);
    Sent {
        at_ns: now_ns(),
        text,
        chat: chat.to_string(),
        rowid: inserted.rowid,
    }
}

/// Waits until every text so far has its reply (`calls` in all) and its `captured` line.
async fn await_replies(world: &World, bridge: &mut Bridge, calls: usize, texts: usize) {
    world.osascript.wait_for_calls(calls, WAIT).await;
    for _ in 0..texts {
        bridge.wait_line("captured").await;
    }
}

// ---- /proc ----

/// CPU time of a process: whole, from `/proc/<pid>/stat` (clock ticks), and per thread,
/// from `/proc/<pid>/task/<tid>/schedstat` (nanoseconds).
#[derive(Clone, Debug, Default)]
struct Cpu {
    ticks: u64,
    child_ticks: u64,
    threads_ns: HashMap<u32, u64>,
    /// Each thread's name (`comm`).
    names: HashMap<u32, String>,
}

fn read_cpu(pid: u32) -> Cpu {
    let mut cpu = Cpu::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the command name, which ends with the last ')': state is first, so
        // utime (field 14) is at 11, stime 12, cutime 13, cstime 14.
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest)
            .unwrap_or_default()
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        if fields.len() > 14 {
            cpu.ticks = fields[11] + fields[12];
            cpu.child_ticks = fields[13] + fields[14];
        }
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let ns = std::fs::read_to_string(task.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse().ok()));
            if let Some(ns) = ns {
                cpu.threads_ns.insert(tid, ns);
            }
            if let Ok(name) = std::fs::read_to_string(task.path().join("comm")) {
                cpu.names.insert(tid, name.trim().to_string());
            }
        }
    }
    cpu
}

/// CPU seconds between two samples: (from ticks, from per-thread nanoseconds, children's
/// from ticks). Threads that ended between the samples are missing from the second.
fn cpu_between(a: &Cpu, b: &Cpu, hz: f64) -> (f64, f64, f64) {
    let ticks = b.ticks.saturating_sub(a.ticks) as f64 / hz;
    let children = b.child_ticks.saturating_sub(a.child_ticks) as f64 / hz;
    let ns: u64 = b
        .threads_ns
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(a.threads_ns.get(tid).copied().unwrap_or(0)))
        .sum();
    (ticks, ns as f64 / 1e9, children)
}

/// The CPU time between `a` and `b` of each thread name (threads of one name summed), most
/// first: `tokio-runtime-w 1.2 ms, search-index 0.1 ms`.
fn cpu_by_thread(a: &Cpu, b: &Cpu) -> String {
    let mut by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for (tid, ns) in &b.threads_ns {
        let spent = ns.saturating_sub(a.threads_ns.get(tid).copied().unwrap_or(0));
        let name = b.names.get(tid).map_or("?", String::as_str);
        *by_name.entry(name).or_default() += spent;
    }
    let mut spent: Vec<(&str, u64)> = by_name.into_iter().filter(|(_, ns)| *ns > 0).collect();
    spent.sort_by_key(|(_, ns)| std::cmp::Reverse(*ns));
    let parts: Vec<String> = (spent.iter())
        .map(|(name, ns)| format!("{name} {:.2} ms", *ns as f64 / 1e6))
        .collect();
    parts.join(", ")
}

/// `VmRSS`, `VmHWM`, `Threads`… of `/proc/<pid>/status`, as a number (kB for sizes).
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

// ---- the run ----

async fn smoke_run() {
    let world = new_world().await;
    let env = bridge_env();
    let mut bridge = world.start_with(&env_refs(&env)).await;
    let sent = send(&world, ME_CHAT, ME, Texts(0).next());
    await_replies(&world, &mut bridge, 1, 1).await;
    bridge.stop().await;
    let calls = world.osascript.calls();
    assert_eq!(calls[0].text, reply_to(&sent.text));
    assert!(
        world.api.violations().is_empty(),
        "{:?}",
        world.api.violations()
    );
    println!("e2e: one capture ran end to end; `make bench` gives the figures");
}

/// A pattern's texts and what became of them.
struct Pattern {
    name: &'static str,
    sent: Vec<Sent>,
}

async fn full_run() {
    let hz = clock_ticks();
    let before = MachineBefore::now();
    let world = new_world().await;
    let env = bridge_env();
    let env = env_refs(&env);
    let mut texts = Texts(0);
    let mut rows = vec![start_row(&world, &env).await];

    let mut bridge = world.start_with(&env).await;
    let run = drive(&world, &mut bridge, &mut texts).await;
    let log = bridge.stop().await;
    eprintln!("e2e: idle measured");
    let out = support::out_dir();
    if let Err(err) = std::fs::write(out.join("e2e-bridge.log"), &log) {
        eprintln!("bench: cannot keep the bridge's log: {err}");
    }
    let requests = world.api.requests();
    let violations = world.api.violations();
    assert!(
        violations.is_empty(),
        "the fake API refused requests: {violations:?}"
    );
    let all_calls = world.osascript.calls();
    let captures: usize = run.patterns.iter().map(|p| p.sent.len()).sum();

    rows.extend(latency_rows(&run.patterns, &all_calls, &requests, &log));
    rows.extend(request_rows(&requests, &run.patterns));
    let census = census(&world, &env, &mut texts).await;
    rows.extend(census_rows(&census, all_calls.len(), captures));
    rows.extend(cpu_rows(&run, hz, captures));
    rows.extend(memory_rows(&run));
    rows.extend(micro_rows());
    rows.push(app_memory());
    publish(&rows, &before, &out);
}

/// The machine's load and pressure when the run began.
struct MachineBefore {
    load: String,
    cpu: Option<u64>,
    io: Option<u64>,
    at: Instant,
}

impl MachineBefore {
    fn now() -> MachineBefore {
        MachineBefore {
            load: load_average(),
            cpu: pressure("cpu"),
            io: pressure("io"),
            at: Instant::now(),
        }
    }
}

/// Start-up: spawn → the ready line, five times over the same data directory.
async fn start_row(world: &World, env: &[(&str, &str)]) -> Row {
    let mut starts_ms = Vec::new();
    let mut stops_ms = Vec::new();
    for _ in 0..STARTS {
        let spawned = Instant::now();
        let bridge = world.start_with(env).await;
        starts_ms.push(spawned.elapsed().as_secs_f64() * 1e3);
        let stopping = Instant::now();
        bridge.stop().await;
        stops_ms.push(stopping.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!("e2e: start-up measured");
    let starts = Summary::of(&starts_ms).expect("starts");
    Row::new(
        format!("start-up: spawn → ready line (median of {STARTS})"),
        format!(
            "{} (min {}, max {})",
            support::ms(starts.p50),
            support::ms(starts_ms.iter().copied().fold(f64::MAX, f64::min)),
            support::ms(starts.max)
        ),
    )
    .target("≤ 100 ms", starts.p50 <= 100.0)
    .original("0.6–0.7 s")
    .json("starts_ms", json!(starts_ms))
    .json("stops_ms", json!(stops_ms))
}

/// What the load and the idle time after it showed.
struct Run {
    patterns: Vec<Pattern>,
    cpu_before: Cpu,
    cpu_after: Cpu,
    load_secs: f64,
    idle_before: Cpu,
    idle_after: Cpu,
    /// (VmRSS kB, threads) after start, after the load, and idle after it.
    rss_start: (u64, u64),
    rss_after: (u64, u64),
    /// (VmHWM kB, threads) at the end of the load, and VmHWM after the 10-chat burst.
    peak: (u64, u64),
    peak_after_burst: u64,
}

fn rss(pid: u32, key: &str) -> (u64, u64) {
    (
        status_field(pid, key).unwrap_or(0),
        status_field(pid, "Threads").unwrap_or(0),
    )
}

/// The load (four patterns), then [`IDLE`] of idle time.
async fn drive(world: &World, bridge: &mut Bridge, texts: &mut Texts) -> Run {
    let pid = bridge.pid();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = rss(pid, "VmRSS");
    let cpu_before = read_cpu(pid);
    let load_started = Instant::now();
    let (patterns, peak_after_burst) = load(world, bridge, texts).await;
    let cpu_after = read_cpu(pid);
    let load_secs = load_started.elapsed().as_secs_f64();
    let peak = rss(pid, "VmHWM");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_before = read_cpu(pid);
    tokio::time::sleep(IDLE).await;
    let idle_after = read_cpu(pid);
    Run {
        patterns,
        cpu_before,
        cpu_after,
        load_secs,
        idle_before,
        idle_after,
        rss_start,
        rss_after: rss(pid, "VmRSS"),
        peak,
        peak_after_burst,
    }
}

/// The four patterns of texts; returns them and VmHWM after the 10-chat burst.
async fn load(world: &World, bridge: &mut Bridge, texts: &mut Texts) -> (Vec<Pattern>, u64) {
    let pid = bridge.pid();
    let mut patterns = Vec::new();
    let mut calls = 0;

    // 10 isolated texts, each after the previous one was handled.
    let mut sent = Vec::new();
    for _ in 0..10 {
        sent.push(send(world, ME_CHAT, ME, texts.next()));
        calls += 1;
        await_replies(world, bridge, calls, 1).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    patterns.push(Pattern {
        name: "isolated texts",
        sent,
    });
    eprintln!("e2e: isolated texts done");

    // 20 texts, 3 s apart.
    let mut sent = Vec::new();
    let paced = tokio::time::Instant::now();
    for i in 0..20 {
        tokio::time::sleep_until(paced + SPACING * i).await;
        sent.push(send(world, ME_CHAT, ME, texts.next()));
    }
    calls += 20;
    await_replies(world, bridge, calls, 20).await;
    patterns.push(Pattern {
        name: "20 texts 3 s apart",
        sent,
    });
    eprintln!("e2e: paced texts done");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A burst of 10 texts in 10 conversations.
    let sent = (0..OTHER_CHATS)
        .map(|n| {
            let (handle, chat) = other(n);
            send(world, &chat, &handle, texts.next())
        })
        .collect();
    calls += OTHER_CHATS;
    await_replies(world, bridge, calls, OTHER_CHATS).await;
    let peak_after_burst = status_field(pid, "VmHWM").unwrap_or(0);
    patterns.push(Pattern {
        name: "burst of 10 in 10 chats",
        sent,
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A burst of 10 texts in one conversation (handled in order, one at a time).
    let sent = (0..10)
        .map(|_| send(world, ME_CHAT, ME, texts.next()))
        .collect();
    calls += 10;
    await_replies(world, bridge, calls, 10).await;
    patterns.push(Pattern {
        name: "burst of 10 in one chat",
        sent,
    });
    eprintln!("e2e: bursts done");
    (patterns, peak_after_burst)
}

/// Reply latency per pattern, then detection (first API request, and the `claimed` line).
fn latency_rows(
    patterns: &[Pattern],
    all_calls: &[util::osascript::Call],
    requests: &[Recorded],
    log: &str,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let by_reply: HashMap<&str, &util::osascript::Call> =
        all_calls.iter().map(|c| (c.text.as_str(), c)).collect();
    let first_requests = first_requests(requests);
    let claimed = claimed_lines(log);
    let mut detect_ms = Vec::new();
    let mut claim_ms = Vec::new();
    for pattern in patterns {
        let mut latencies = Vec::new();
        for s in &pattern.sent {
            let reply = reply_to(&s.text);
            let call = by_reply
                .get(reply.as_str())
                .unwrap_or_else(|| panic!("no reply for {:?}", s.text));
            assert_eq!(call.target, s.chat, "the reply went to the text's chat");
            latencies.push(ms_between(s.at_ns, call.started_ns));
            if let Some(at) = first_requests.get(s.text.as_str()) {
                detect_ms.push(ms_between(s.at_ns, *at));
            }
            if let Some((_, at)) = claimed.iter().find(|(cursor, _)| *cursor >= s.rowid) {
                claim_ms.push(ms_between(s.at_ns, *at));
            }
        }
        rows.push(latency_row(pattern, &latencies));
    }
    rows.push(detection_row(&detect_ms, log));
    rows.extend(claim_row(&claim_ms));
    rows
}

fn detection_row(detect_ms: &[f64], log: &str) -> Row {
    let detect = Summary::of(detect_ms).expect("every text reached the API");
    let prompt = detect_ms.iter().filter(|ms| **ms <= 100.0).count();
    let early_reads = log
        .lines()
        .filter(|l| l.contains("no chat join yet"))
        .count();
    Row::new(
        format!("detection ≤ insert → first API request (n={})", detect.n),
        format!(
            "p50 {} · p95 {} · max {}; {prompt} of {} within 100 ms, the rest found by the \
                 {POLL_SECS} s poll; {early_reads} reads saw a message row before its chat join",
            support::ms(detect.p50),
            support::ms(detect.p95),
            support::ms(detect.max),
            detect.n,
        ),
    )
    .num("within_100ms", prompt as f64)
    .num("reads_before_chat_join", early_reads as f64)
    .target("p95 ≤ 20 ms", detect.p95 <= 20.0)
    .original("414 ms p50")
    .num("p50_ms", detect.p50)
    .num("p95_ms", detect.p95)
    .num("max_ms", detect.max)
}

/// The tighter bound on detection: insert → the bridge's `claimed` log line.
fn claim_row(claim_ms: &[f64]) -> Option<Row> {
    let claim = Summary::of(claim_ms)?;
    Some(
        Row::new(
            format!(
                "  tighter: insert → the bridge's `claimed` log line (n={})",
                claim.n
            ),
            format!(
                "p50 {} · p95 {} · max {}",
                support::ms(claim.p50),
                support::ms(claim.p95),
                support::ms(claim.max)
            ),
        )
        .num("p50_ms", claim.p50)
        .num("p95_ms", claim.p95)
        .num("max_ms", claim.max),
    )
}

/// The processes the bridge started, and its fsyncs (strace only).
fn census_rows(census: &Result<Census, String>, calls: usize, captures: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    let calls_per = calls as f64 / captures as f64;
    let (census_text, census_ok, census_data) = match census {
        Ok(c) => {
            let others: Vec<&String> = c
                .children
                .iter()
                .filter(|p| p.as_str() != "osascript")
                .collect();
            let text = format!(
                "{calls_per:.0} osascript per capture ({} calls / {captures} captures); {}: {} \
                 children in {} captures, all osascript: {}",
                calls,
                c.method,
                c.children.len(),
                c.captures,
                if others.is_empty() { "yes" } else { "NO" }
            );
            let ok = others.is_empty() && c.children.len() == c.captures && calls_per == 1.0;
            let data = json!({
                "method": c.method,
                "children": c.children,
                "captures_watched": c.captures,
                "threads_started": c.threads,
                "fake_osascript_own_children": c.grandchildren,
            });
            (text, ok, data)
        }
        Err(why) => (
            format!("{calls_per:.0} osascript per capture; other children not checked: {why}"),
            calls_per == 1.0,
            json!({ "error": why }),
        ),
    };
    rows.push(
        Row::new("processes spawned per capture", census_text)
            .target("1 (osascript)", census_ok)
            .original("47")
            .num("osascript_calls_per_capture", calls_per)
            .json("census", census_data),
    );
    if let Ok(c) = census
        && c.method == "strace -f"
    {
        let per = c.fsyncs as f64 / c.captures as f64;
        let ms_per = c.fsync_secs * 1e3 / c.captures as f64;
        rows.push(
            Row::new(
                format!("  fsync per capture (strace -T, {} captures)", c.captures),
                format!(
                    "{per:.1} calls, {} waited in them ({} per call); by file: {}; atomic \
                     replaces: {}",
                    support::ms(ms_per),
                    support::ms(c.fsync_secs * 1e3 / c.fsyncs.max(1) as f64),
                    per_capture(&c.synced, c.captures),
                    per_capture(&c.replaced, c.captures),
                ),
            )
            .target("≤ 8", per <= 8.0)
            .original("27.2 (before the state database)")
            .json("replaced_per_run", json!(c.replaced))
            .json("fsyncs_by_file_per_run", json!(c.synced))
            .num("fsyncs_per_capture", per)
            .num("fsync_ms_per_capture", ms_per),
        );
    }
    rows
}

/// CPU per capture and while idle.
fn cpu_rows(run: &Run, hz: f64, captures: usize) -> Vec<Row> {
    let (load_ticks, load_sched, load_children) = cpu_between(&run.cpu_before, &run.cpu_after, hz);
    let cpu_per = if load_sched > 0.0 {
        load_sched
    } else {
        load_ticks
    } / captures as f64;
    let (idle_ticks, idle_sched, _) = cpu_between(&run.idle_before, &run.idle_after, hz);
    let idle_cpu = if idle_sched > 0.0 {
        idle_sched
    } else {
        idle_ticks
    };
    let idle_pct = idle_cpu / IDLE.as_secs_f64() * 100.0;
    let load_secs = run.load_secs;
    let mut rows = Vec::new();
    rows.push(
        Row::new(
            format!("CPU per capture (bridge process, {captures} captures)"),
            format!(
                "{:.4} CPU-s ({:.3} s in {load_secs:.0} s of load; /proc stat ticks: {:.2} s; \
                 the fake osascript's own: {:.3} s)",
                cpu_per,
                if load_sched > 0.0 {
                    load_sched
                } else {
                    load_ticks
                },
                load_ticks,
                load_children
            ),
        )
        .target("≤ 0.02 CPU-s", cpu_per <= 0.02)
        .original("1.46 CPU-s")
        .num("cpu_s_per_capture", cpu_per)
        .num("load_cpu_s_schedstat", load_sched)
        .num("load_cpu_s_ticks", load_ticks)
        .num("children_cpu_s_ticks", load_children)
        .num("load_secs", load_secs),
    );

    rows.push(
        Row::new(
            format!("CPU while idle ({} s)", IDLE.as_secs()),
            format!(
                "{idle_pct:.4} % ({:.1} ms; /proc stat ticks: {:.0} ms; by thread: {})",
                idle_cpu * 1e3,
                idle_ticks * 1e3,
                cpu_by_thread(&run.idle_before, &run.idle_after)
            ),
        )
        .target("≤ 0.02 %", idle_pct <= 0.02)
        .num("percent", idle_pct)
        .num("cpu_ms_schedstat", idle_sched * 1e3)
        .num("cpu_ms_ticks", idle_ticks * 1e3),
    );

    rows
}

/// Memory after start, at the peak of the load, and idle after it.
fn memory_rows(run: &Run) -> Vec<Row> {
    let ((rss_start, threads_start), (rss_after, threads_after)) = (run.rss_start, run.rss_after);
    let ((peak, threads_peak), peak_after_burst) = (run.peak, run.peak_after_burst);
    let mut rows = Vec::new();
    rows.push(
        Row::new(
            "RSS idle after start (VmRSS)",
            format!("{} ({threads_start} threads)", mb(rss_start)),
        )
        .target("≤ 25 MB", rss_start <= 25 * 1024)
        .original("147 MB")
        .num("kb", rss_start as f64),
    );
    rows.push(
        Row::new(
            "RSS peak over the whole load (VmHWM)",
            format!(
                "{} (after the 10-chat burst: {}; {threads_peak} threads)",
                mb(peak),
                mb(peak_after_burst)
            ),
        )
        .target("≤ 40 MB", peak <= 40 * 1024)
        .original("2.64 GB")
        .num("kb", peak as f64)
        .num("kb_after_chat_burst", peak_after_burst as f64),
    );
    rows.push(
        Row::new(
            "RSS idle after load (VmRSS)",
            format!("{} ({threads_after} threads)", mb(rss_after)),
        )
        .target("≤ 25 MB", rss_after <= 25 * 1024)
        .original("147 MB (idle)")
        .num("kb", rss_after as f64),
    );
    rows
}

/// The micro-benchmarks' rows (`cargo bench --bench micro` leaves them).
fn micro_rows() -> Vec<Row> {
    match std::fs::read(support::micro_rows_path())
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<Row>>(&b).ok())
    {
        Some(micro) => micro,
        None => vec![Row::new(
            "micro-benchmarks",
            "not run (`cargo bench --bench micro` writes them)",
        )],
    }
}

/// Prints the table with the machine line and writes results.json and results.md.
fn publish(rows: &[Row], before: &MachineBefore, out: &Path) {
    let elapsed = before.at.elapsed().as_secs_f64();
    let stalled = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(b), Some(a)) => format!("{:.0} %", (a.saturating_sub(b)) as f64 / 1e4 / elapsed),
        _ => "?".into(),
    };
    let machine = format!(
        "{}; load average {} before, {} after; some task stalled on CPU {} and on \
         I/O {} of the run (PSI)",
        machine(),
        before.load,
        load_average(),
        stalled(before.cpu, pressure("cpu")),
        stalled(before.io, pressure("io")),
    );
    let date = chrono::Local::now().format("%Y-%m-%d %H:%M").to_string();
    println!("\n{date} · {machine}\n\n{}", support::render_text(rows));
    support::write_json(
        &out.join("results.json"),
        &json!({ "date": date, "machine": machine, "rows": rows }),
    );
    let markdown = format!(
        "Measured {date} on {machine}.\n\n{}",
        support::render_markdown(rows)
    );
    if let Err(err) = std::fs::write(out.join("results.md"), markdown) {
        eprintln!("bench: cannot write results.md: {err}");
    }
    println!("written to {}", out.join("results.json").display());
}

fn latency_row(pattern: &Pattern, latencies: &[f64]) -> Row {
    let s = Summary::of(latencies).expect("a pattern has texts");
    let row = Row::new(
        format!("reply latency, {} (n={})", pattern.name, s.n),
        format!(
            "p50 {} · p95 {} · max {}",
            support::ms(s.p50),
            support::ms(s.p95),
            support::ms(s.max)
        ),
    )
    .num("p50_ms", s.p50)
    .num("p95_ms", s.p95)
    .num("max_ms", s.max)
    .json("latencies_ms", json!(latencies));
    let target = "p50 ≤ 30 ms, p95 ≤ 60 ms";
    let met = s.p50 <= 30.0 && s.p95 <= 60.0;
    match pattern.name {
        "isolated texts" => row.target(target, met).original("1602 ms / 2053 ms"),
        "20 texts 3 s apart" => row.target(target, met).original("11.3 s / 18.9 s"),
        "burst of 10 in 10 chats" => row
            .target(target, met)
            .original("12.3 s / 17.5 s (burst of 10)"),
        _ => row
            .target_unjudged("— (serial by design)")
            .original("12.3 s / 17.5 s (burst of 10)"),
    }
}

/// The arrival time of each text's first request (the one whose transcript is only it).
fn first_requests(requests: &[Recorded]) -> HashMap<&str, u128> {
    let mut out = HashMap::new();
    for r in requests {
        if r.messages().len() == 1
            && let Some(text) = first_text(&r.body)
        {
            out.entry(text).or_insert(ns_of(r.received_at));
        }
    }
    out
}

/// The intake's `claimed … cursor=N` lines: (cursor, timestamp in ns), in order.
fn claimed_lines(log: &str) -> Vec<(i64, u128)> {
    log.lines()
        .filter(|line| line.contains("bridge::intake") && line.contains(" claimed "))
        .filter_map(|line| {
            let stamp = line.split_whitespace().next()?;
            let at = chrono::DateTime::parse_from_rfc3339(stamp).ok()?;
            let cursor = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("cursor="))?
                .parse()
                .ok()?;
            let ns = u128::try_from(at.timestamp_nanos_opt()?).ok()?;
            Some((cursor, ns))
        })
        .collect()
}

/// What the requests of the captured texts came to.
struct RequestTally<'a> {
    /// Per capture (by its text): requests, body bytes, cacheable bytes, header bytes.
    per: BTreeMap<&'a str, (usize, usize, usize, usize)>,
    /// Every distinct tools + system prefix.
    prefixes: HashSet<String>,
    /// Whether every request marked the end of its system prompt and tools cacheable.
    marked: bool,
}

/// Tallies the requests whose first text is one of the patterns' texts.
fn tally_requests<'a>(requests: &'a [Recorded], patterns: &[Pattern]) -> RequestTally<'a> {
    let inputs: HashSet<&str> = patterns
        .iter()
        .flat_map(|p| p.sent.iter().map(|s| s.text.as_str()))
        .collect();
    let mut tally = RequestTally {
        per: BTreeMap::new(),
        prefixes: HashSet::new(),
        marked: true,
    };
    let is_cached = |v: &Value| v["cache_control"]["type"] == "ephemeral";
    let ends_cached = |v: &Value| v.as_array().and_then(|a| a.last()).is_some_and(is_cached);
    for r in requests {
        let Some(text) = first_text(&r.body).filter(|t| inputs.contains(t)) else {
            continue;
        };
        let system = serde_json::to_string(&r.body["system"]).unwrap_or_default();
        let tools = serde_json::to_string(&r.body["tools"]).unwrap_or_default();
        tally.marked &= ends_cached(&r.body["system"]) && ends_cached(&r.body["tools"]);
        let headers: usize = r.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        let entry = tally.per.entry(text).or_default();
        entry.0 += 1;
        entry.1 += r.bytes;
        entry.2 += system.len() + tools.len();
        entry.3 += headers;
        tally.prefixes.insert(format!("{tools}{system}"));
    }
    tally
}

/// Requests and bytes per captured text, and the cacheable prefix.
fn request_rows(requests: &[Recorded], patterns: &[Pattern]) -> Vec<Row> {
    let RequestTally {
        per,
        prefixes,
        marked,
    } = tally_requests(requests, patterns);
    let n = per.len().max(1) as f64;
    let reqs: Vec<f64> = per.values().map(|v| v.0 as f64).collect();
    let bytes: Vec<f64> = per.values().map(|v| v.1 as f64).collect();
    let cacheable: f64 = per.values().map(|v| v.2 as f64).sum::<f64>() / n;
    let headers: f64 = per.values().map(|v| v.3 as f64).sum::<f64>() / n;
    let reqs_s = Summary::of(&reqs).expect("requests were made");
    let bytes_s = Summary::of(&bytes).expect("requests were made");
    let uncached = bytes_s.mean - cacheable;
    let prefix_len = prefixes.iter().next().map_or(0, String::len);
    vec![
        Row::new(
            format!("API requests per capture (n={})", per.len()),
            format!("{:.0} (max {:.0})", reqs_s.mean, reqs_s.max),
        )
        .original("7")
        .num("mean", reqs_s.mean)
        .num("max", reqs_s.max),
        Row::new(
            "request bytes per capture (JSON bodies)",
            format!(
                "{} (max {}); of which cacheable prefix {} ({} per request), not cacheable {}; \
                 headers ≈ {} more",
                support::kb(bytes_s.mean),
                support::kb(bytes_s.max),
                support::kb(cacheable),
                support::kb(prefix_len as f64),
                support::kb(uncached),
                support::kb(headers)
            ),
        )
        .target("≤ 15 KB", bytes_s.mean <= 15_000.0)
        .original("365 KB")
        .num("bytes_mean", bytes_s.mean)
        .num("bytes_max", bytes_s.max)
        .num("cacheable_bytes_mean", cacheable)
        .num("uncached_bytes_mean", uncached)
        .num("header_bytes_mean", headers)
        .num("prefix_bytes_per_request", prefix_len as f64),
        Row::new(
            "system prompt + tools marked cache_control, byte-identical in every request",
            format!(
                "marked: {}; distinct prefixes: {}",
                if marked { "yes" } else { "NO" },
                prefixes.len()
            ),
        )
        .target("cacheable", marked && prefixes.len() == 1)
        .num("distinct_prefixes", prefixes.len() as f64),
    ]
}

// ---- which processes the bridge starts ----

/// What the bridge started during a few captures.
struct Census {
    method: &'static str,
    captures: usize,
    /// The program each direct child ran (file name), in order.
    children: Vec<String>,
    /// Processes the children started in turn (the fake osascript runs `date` and `mv`).
    grandchildren: usize,
    /// Threads the bridge started meanwhile.
    threads: usize,
    /// `fsync`/`fdatasync` calls the bridge made, and the seconds they took (strace only).
    fsyncs: usize,
    fsync_secs: f64,
    /// Files the bridge replaced by renaming (its atomic writes), by kind (strace only).
    replaced: BTreeMap<String, usize>,
    /// The bridge's fsyncs by the kind of file synced (strace only).
    synced: BTreeMap<String, usize>,
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// Whether `strace` exists and may trace here (ptrace can be forbidden in containers).
fn usable_strace() -> Option<PathBuf> {
    let strace = find_program("strace")?;
    let works = std::process::Command::new(&strace)
        .args([
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=process",
            "true",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    works.then_some(strace)
}

/// Runs [`CENSUS`] isolated captures on a fresh start and lists every process the bridge
/// started: with `strace -f` when it can, else by sampling `/proc` every millisecond.
async fn census(world: &World, env: &[(&str, &str)], texts: &mut Texts) -> Result<Census, String> {
    let before = world.osascript.calls().len();
    match usable_strace() {
        Some(strace) => {
            let trace = world.dir.path().join("strace.txt");
            let wrapper: Vec<OsString> = vec![
                strace.into_os_string(),
                "-f".into(),
                "-qq".into(),
                "-o".into(),
                trace.clone().into_os_string(),
                "-T".into(),
                // File descriptors shown with their paths, so fsyncs are counted per file.
                "-y".into(),
                "-e".into(),
                "trace=process,fsync,fdatasync,rename,renameat,renameat2".into(),
                "-e".into(),
                "signal=none".into(),
            ];
            let wrapper: Vec<&OsStr> = wrapper.iter().map(OsString::as_os_str).collect();
            let mut bridge = world.start_wrapped(&wrapper, env).await;
            let tracer = bridge.pid();
            let pid = children_of(tracer)
                .into_iter()
                .next()
                .ok_or("strace has no child")?;
            run_isolated(world, &mut bridge, texts, before).await;
            bridge.stop_process(pid).await;
            let text = std::fs::read_to_string(&trace).map_err(|e| e.to_string())?;
            let mut census = parse_strace(&text).ok_or("the strace output has no bridge")?;
            census.captures = CENSUS;
            Ok(census)
        }
        None => {
            let mut bridge = world.start_with(env).await;
            let pid = bridge.pid();
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || sample_children(pid, &stop))
            };
            run_isolated(world, &mut bridge, texts, before).await;
            stop.store(true, Ordering::Relaxed);
            let children = sampler.join().map_err(|_| "the sampler failed")?;
            bridge.stop().await;
            Ok(Census {
                method: "sampled /proc/<pid>/task/*/children every 1 ms (no usable strace)",
                captures: CENSUS,
                children,
                grandchildren: 0,
                threads: 0,
                fsyncs: 0,
                fsync_secs: 0.0,
                replaced: BTreeMap::new(),
                synced: BTreeMap::new(),
            })
        }
    }
}

async fn run_isolated(world: &World, bridge: &mut Bridge, texts: &mut Texts, before: usize) {
    for i in 1..=CENSUS {
        send(world, ME_CHAT, ME, texts.next());
        await_replies(world, bridge, before + i, 1).await;
    }
}

/// The children of every thread of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    list.split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// Polls the children of `pid` until `stop`; returns the program name of each one seen.
fn sample_children(pid: u32, stop: &AtomicBool) -> Vec<String> {
    let mut seen: BTreeMap<u32, String> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        for child in children_of(pid) {
            seen.entry(child).or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{child}/comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_else(|_| "?".into())
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    seen.into_values().collect()
}

/// Reads `strace -f -T -e trace=process,fsync,fdatasync,rename…` output: the first `execve` is the bridge; a clone
/// with `CLONE_THREAD` is a thread of its caller's process, any other clone, fork or vfork
/// a new process whose program is its last successful `execve`. Lines of different tasks
/// interleave (a new task may show up before its creator's clone returns), so the owners
/// of threads are resolved only once everything is read.
fn parse_strace(text: &str) -> Option<Census> {
    let mut trace = Trace::default();
    for line in text.lines() {
        trace.line(line);
    }
    trace.census()
}

/// What [`parse_strace`] has read so far.
#[derive(Default)]
struct Trace {
    /// A task's call cut by `<unfinished ...>`, until it resumes.
    pending: HashMap<u32, String>,
    /// The bridge: the first task to `execve`.
    root: Option<u32>,
    /// Thread id → the task that created it.
    thread_of: HashMap<u32, u32>,
    /// New process → the task that created it.
    spawned_by: BTreeMap<u32, u32>,
    program: HashMap<u32, String>,
    /// (task, seconds, kind of file) of every fsync or fdatasync.
    syncs: Vec<(u32, f64, String)>,
    /// (task, kind of file) of every rename.
    renames: Vec<(u32, String)>,
}

impl Trace {
    /// Reads one line: `<pid> <call>`, a call cut by `<unfinished ...>`, or its resumption.
    fn line(&mut self, line: &str) {
        let Some((pid, rest)) = line.split_once(' ') else {
            return;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            return;
        };
        let rest = rest.trim_start();
        if let Some(start) = rest.strip_suffix("<unfinished ...>") {
            self.pending.insert(pid, start.to_string());
            return;
        }
        let call = if rest.starts_with("<...") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            format!("{}{tail}", self.pending.remove(&pid).unwrap_or_default())
        } else {
            rest.to_string()
        };
        self.call(pid, &call);
    }

    /// Records one whole call of task `pid`.
    fn call(&mut self, pid: u32, call: &str) {
        let name = call.split('(').next().unwrap_or("");
        let result: Option<i64> = call
            .rsplit_once(" = ")
            .and_then(|(_, r)| r.split_whitespace().next()?.parse().ok());
        match name {
            "execve" if result == Some(0) => {
                let path = call.split('"').nth(1).unwrap_or("?");
                let file = Path::new(path)
                    .file_name()
                    .map_or(path.to_string(), |f| f.to_string_lossy().into_owned());
                self.root.get_or_insert(pid);
                self.program.insert(pid, file);
            }
            "rename" | "renameat" | "renameat2" if result == Some(0) => {
                // The target is the last quoted path.
                let target = call.split('"').rev().nth(1).unwrap_or("?");
                self.renames.push((pid, kind_of_file(target)));
            }
            "fsync" | "fdatasync" => {
                // `-T` ends the line with the time spent: `<0.004012>`.
                let secs = call
                    .rsplit_once('<')
                    .and_then(|(_, t)| t.trim_end().strip_suffix('>')?.parse().ok())
                    .unwrap_or(0.0);
                // `-y` names the descriptor's file: `fsync(7</path/state.db-wal>)` (the call may be
                // split by `<unfinished ...>`, so only up to the first `>`).
                let file = call
                    .split_once('<')
                    .and_then(|(_, rest)| rest.split_once('>'))
                    .map_or_else(|| "?".to_string(), |(path, _)| kind_of_file(path));
                self.syncs.push((pid, secs, file));
            }
            "clone" | "clone3" | "fork" | "vfork" => {
                let Some(child) = result
                    .and_then(|r| u32::try_from(r).ok())
                    .filter(|c| *c > 0)
                else {
                    return;
                };
                if call.contains("CLONE_THREAD") {
                    self.thread_of.insert(child, pid);
                } else {
                    self.spawned_by.insert(child, pid);
                }
            }
            _ => {}
        }
    }

    /// The process a task belongs to.
    fn process_of(&self, mut task: u32) -> u32 {
        while let Some(creator) = self.thread_of.get(&task) {
            task = *creator;
        }
        task
    }

    /// Counts what the bridge's process did (its threads included), once all is read.
    fn census(self) -> Option<Census> {
        let root = self.root?;
        let direct: Vec<u32> = (self.spawned_by.iter())
            .filter(|(_, creator)| self.process_of(**creator) == root)
            .map(|(child, _)| *child)
            .collect();
        let grandchildren = (self.spawned_by.values())
            .filter(|creator| direct.contains(&self.process_of(**creator)))
            .count();
        let threads = (self.thread_of.keys())
            .filter(|t| self.process_of(**t) == root)
            .count();
        let syncs: Vec<(f64, &str)> = (self.syncs.iter())
            .filter(|(task, _, _)| self.process_of(*task) == root)
            .map(|(_, secs, file)| (*secs, file.as_str()))
            .collect();
        let renames = (self.renames.iter())
            .filter(|(task, _)| self.process_of(*task) == root)
            .map(|(_, kind)| kind.as_str());
        let children = direct
            .iter()
            .map(|c| (self.program.get(c).cloned()).unwrap_or_else(|| "(no exec)".into()));
        Some(Census {
            method: "strace -f",
            captures: 0,
            children: children.collect(),
            grandchildren,
            threads,
            fsyncs: syncs.len(),
            fsync_secs: syncs.iter().map(|(secs, _)| secs).sum(),
            synced: tally(syncs.iter().map(|(_, file)| *file)),
            replaced: tally(renames),
        })
    }
}

/// How many times each kind occurs.
fn tally<'a>(kinds: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    kinds.fold(BTreeMap::new(), |mut counts, kind| {
        *counts.entry(kind.to_string()).or_insert(0) += 1;
        counts
    })
}

/// `kind 1.0, other 2.0`: counts per capture.
fn per_capture(counts: &BTreeMap<String, usize>, captures: usize) -> String {
    counts
        .iter()
        .map(|(kind, n)| format!("{kind} {:.1}", *n as f64 / captures as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a file the bridge writes is: a note, the interaction log, or a state file's name.
fn kind_of_file(path: &str) -> String {
    let name = Path::new(path)
        .file_name()
        .map_or(path.to_string(), |n| n.to_string_lossy().into_owned());
    // A temporary written whole before its rename (`.<name>.<pid>-<n>.tmp`, persist.rs and
    // vault/write.rs) counts as the file it becomes; a note's temporary is named by its stem.
    if let Some(stem) = temporary_of(&name) {
        let in_data = Path::new(path).with_file_name("state.db").exists();
        return if in_data || stem.ends_with(".json") {
            stem.to_string()
        } else {
            "note".into()
        };
    }
    if Path::new(path).is_dir() {
        format!("folder {name}")
    } else if path.contains("/_system/logs/") {
        "interaction log".into()
    } else if name.ends_with(".md") {
        "note".into()
    } else {
        name
    }
}

/// The name a temporary `.<name>.<pid>-<n>.tmp` stands for.
fn temporary_of(name: &str) -> Option<&str> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (stem, serial) = inner.rsplit_once('.')?;
    let (pid, n) = serial.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then_some(stem)
}

// ---- the app and the machine ----

/// The menu-bar app's memory, when it has been built and `scripts/app-memory.sh` exists.
/// That helper gets the app binary and prints `closed_kb=N` and `open_kb=N` (total RSS of
/// the app's processes, window closed and open, under Xvfb). The app is never built here.
fn app_memory() -> Row {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let helper = repo.join("scripts/app-memory.sh");
    let app = support::target_dir().join("release/second-brain");
    let metric = "app: total RSS, window closed / open (Xvfb)";
    if !helper.is_file() || !app.is_file() {
        println!("app: not measured");
        return Row::new(
            metric,
            format!(
                "app: not measured (no {} or no release build at {})",
                "scripts/app-memory.sh",
                app.display()
            ),
        );
    }
    let output = std::process::Command::new(&helper).arg(&app).output();
    let text = output
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.parse::<u64>().ok())
    };
    match (field("closed_kb="), field("open_kb=")) {
        (Some(closed), Some(open)) => Row::new(metric, format!("{} / {}", mb(closed), mb(open)))
            .num("closed_kb", closed as f64)
            .num("open_kb", open as f64),
        _ => {
            println!("app: not measured");
            Row::new(metric, "app: not measured (the helper printed no figures)")
        }
    }
}

/// Microseconds during which some task waited for `resource` ("cpu", "io"), from
/// `/proc/pressure/<resource>`.
fn pressure(resource: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/pressure/{resource}")).ok()?;
    let some = text.lines().find(|l| l.starts_with("some"))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// The 1-minute load average: other work on the machine skews every figure.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// "2 × AMD EPYC, 23 GiB, Debian GNU/Linux 12 (bookworm), Linux 6.1".
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|x| x.1.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| {
                l.strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(String::new(), |kb| format!(", {} GiB", kb / 1024 / 1024));
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "unknown OS".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    format!("{cores} × {model}{memory}, {os}, Linux {kernel}")
}
