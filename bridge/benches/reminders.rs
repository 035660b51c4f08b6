//! Reminders, timed from outside the real release binary: how late each one starts
//! `osascript` after its due time (20 reminders, one a second), and the bridge's CPU while
//! 100 reminders are pending and nothing is due (the scheduler looks at the wall clock
//! every 30 s; nothing else should run), beside the same bridge with no reminders.
//!
//! The reminders are written into the vault as Obsidian would (the only allowed sender gets
//! them); lateness is the fake osascript's own start timestamp minus the due time; CPU comes
//! from `/proc/<pid>/task/*/schedstat`. Run without `--bench` (as `cargo test --benches` does) it only
//! checks, with one reminder, that the driver works.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Local, SecondsFormat, Timelike};
use serde_json::Value;
use util::anthropic::{self as fake, Reply};
use util::bridge::{ME_CHAT, World};

use support::{Row, Summary};

/// Reminders timed for lateness.
const TIMED: usize = 20;
/// Reminders pending while the CPU is measured.
const PENDING: usize = 100;
/// The idle window: several of the scheduler's 30 s looks.
const IDLE: Duration = Duration::from_secs(90);
/// How long the bench waits for what it started.
const WAIT: Duration = Duration::from_secs(120);

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    runtime.block_on(async {
        let mut rows = lateness(if full { TIMED } else { 1 }).await;
        if !full {
            println!("reminders: one reminder ran end to end; `make bench` gives the figures");
            return;
        }
        rows.push(idle_cpu().await);
        support::publish(
            "reminders",
            "reminders (release binary, fake osascript",
            &rows,
        );
    });
}

fn no_model(_: &Value) -> Reply {
    Reply::Message(fake::text("unused"))
}

/// Writes `Tasks/<name>.md` with a reminder at `due` (none when `due` is `None`).
fn put(world: &World, name: &str, due: Option<DateTime<Local>>) {
    let dir = world.vault().join("Tasks");
    std::fs::create_dir_all(&dir).unwrap();
    let reminder = due.map_or(String::new(), |due| {
        let due = due.to_rfc3339_opts(SecondsFormat::Secs, false);
        format!("reminder:\n  due: {due}\n  sent: false\n")
    });
    let text = format!("---\ntags: []\n{reminder}---\n# {name}\n");
    std::fs::write(dir.join(format!("{name}.md")), text).unwrap();
}

fn ns(t: DateTime<Local>) -> u128 {
    t.timestamp_nanos_opt().unwrap() as u128
}

/// `n` reminders one second apart, starting three seconds from now: how late each began.
async fn lateness(n: usize) -> Vec<Row> {
    let world = World::new(no_model).await;
    let first = (Local::now() + chrono::Duration::seconds(3))
        .with_nanosecond(0)
        .unwrap();
    let dues: Vec<DateTime<Local>> = (0..n)
        .map(|i| first + chrono::Duration::seconds(i as i64))
        .collect();
    for (i, due) in dues.iter().enumerate() {
        put(&world, &format!("Timed {i:02}"), Some(*due));
    }
    let bridge = world.start().await;
    let calls = world
        .osascript
        .wait_for_calls(n, WAIT + Duration::from_secs(n as u64))
        .await;
    bridge.stop().await;
    let mut late_ms = Vec::new();
    for (i, due) in dues.iter().enumerate() {
        let text = format!("Reminder: Timed {i:02}");
        let call = calls
            .iter()
            .find(|c| c.text == text)
            .unwrap_or_else(|| panic!("no call for {text}: {calls:#?}"));
        assert_eq!(call.target, ME_CHAT);
        assert!(call.started_ns >= ns(*due), "{text} went early");
        late_ms.push((call.started_ns - ns(*due)) as f64 / 1e6);
    }
    assert_eq!(calls.len(), n, "each once");
    let s = Summary::of(&late_ms).expect("figures");
    vec![
        Row::new(
            format!("reminder lateness, due → osascript start (p50 / p95, {n} reminders)"),
            format!("{} / {}", support::ms(s.p50), support::ms(s.p95)),
        )
        .target("< 1 s", s.p95 < 1000.0)
        .original("up to 5 min (a poll every 5 minutes)")
        .num("p50_ms", s.p50)
        .num("p95_ms", s.p95),
    ]
}

/// CPU of the bridge over [`IDLE`] with [`PENDING`] reminders pending, none due, beside the
/// same bridge and vault (as many notes) without reminders: its chat.db safety poll and the
/// search index's sweep of the notes run in both.
async fn idle_cpu() -> Row {
    let without = idle_percent(false).await;
    let with = idle_percent(true).await;
    Row::new(
        format!(
            "idle CPU with {PENDING} reminders pending ({} s; the same notes without: {without:.4} %)",
            IDLE.as_secs()
        ),
        format!("{with:.4} %"),
    )
    .target("≤ 0.02 %", with <= 0.02)
    .original("a poll every 5 minutes")
    .num("cpu_percent", with)
    .num("cpu_percent_without_reminders", without)
}

/// The bridge's CPU share over [`IDLE`] with [`PENDING`] notes, each with a reminder due
/// tomorrow when `reminders`.
async fn idle_percent(reminders: bool) -> f64 {
    let world = World::new(no_model).await;
    let tomorrow = Local::now() + chrono::Duration::days(1);
    for i in 0..PENDING {
        let due = tomorrow + chrono::Duration::minutes(i as i64);
        put(&world, &format!("Pending {i:03}"), reminders.then_some(due));
    }
    let bridge = world.start().await;
    world
        .wait_status("running", |s| {
            s["state"] == "running" && (!reminders || s["next_reminder"]["title"] == "Pending 000")
        })
        .await;
    // Let start-up work (the search index's first build) finish before the window opens.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pid = bridge.pid();
    let (t0, c0) = (now_s(), cpu_seconds(pid));
    tokio::time::sleep(IDLE).await;
    let (t1, c1) = (now_s(), cpu_seconds(pid));
    bridge.stop().await;
    (c1 - c0) / (t1 - t0) * 100.0
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// CPU seconds `pid` has run: the sum over its threads of `/proc/<pid>/task/<tid>/schedstat`'s
/// first field (nanoseconds on the CPU), finer than the clock ticks of `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}
