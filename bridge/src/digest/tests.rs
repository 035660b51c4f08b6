//! The digest's text for a fixture vault, its schedule on a paused clock, and its
//! exactly-once send through the ledger.

use std::fs;

use chrono::NaiveDate;
use tokio::time::Instant;

use super::*;
use crate::allowlist::Allowlist;
use crate::sender::Sender;
use crate::status::StatusBoard;

fn put(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn task(created: &str, tags: &[&str], title: &str) -> String {
    format!(
        "---\ncreated: {created}\ntags: [{}]\n---\n# {title}\n\n- [ ] {title}\n",
        tags.join(", ")
    )
}

fn reminder(due: &str, sent: bool, title: &str) -> String {
    format!("---\ncreated: 2026-11-20\nreminder:\n  due: {due}\n  sent: {sent}\n---\n# {title}\n")
}

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 2).unwrap()
}

fn at(h: u32, m: u32) -> NaiveDateTime {
    date().and_hms_opt(h, m, 0).unwrap()
}

/// A vault with something for every part, and things that must stay out of each.
fn fixture(root: &Path) {
    put(
        root,
        "Tasks/dentist.md",
        &reminder("2026-12-02T09:30:00", false, "Call the dentist"),
    );
    put(
        root,
        "Ideas/late.md",
        &reminder("2026-12-02 17:05", false, "Water the plants"),
    );
    put(
        root,
        "Tasks/sent.md",
        &reminder("2026-12-02T08:00:00", true, "Already texted"),
    );
    put(
        root,
        "Tasks/tomorrow.md",
        &reminder("2026-12-03T09:00:00", false, "Tomorrow's"),
    );
    put(
        root,
        "Archive/old.md",
        &reminder("2026-12-02T10:00:00", false, "Archived"),
    );
    put(
        root,
        "Tasks/offsite.md",
        &task(
            "2026-11-01T09:00:00Z",
            &["priority/high", "status/active"],
            "Book the offsite venue",
        ),
    );
    put(
        root,
        "Tasks/passport.md",
        &task("2026-10-01", &["priority/urgent"], "Renew passport"),
    );
    put(
        root,
        "Tasks/deep/newer.md",
        &task("2026-11-15", &["Priority/High"], "File the expenses"),
    );
    put(
        root,
        "Tasks/normal.md",
        &task("2026-11-02", &["priority/normal"], "Buy milk"),
    );
    put(
        root,
        "Tasks/done.md",
        &task(
            "2026-11-03",
            &["priority/high", "status/done"],
            "Done already",
        ),
    );
    put(
        root,
        "Ideas/high.md",
        &task("2026-11-04", &["priority/high"], "An idea, not a task"),
    );
    put(
        root,
        "Archive/high.md",
        &task("2026-11-04", &["priority/urgent"], "Archived task"),
    );
    for (day, title) in [(21, "A"), (22, "B"), (23, "C"), (24, "D")] {
        put(
            root,
            &format!("Inbox/{title}.md"),
            &task(&format!("2026-11-{day}"), &[], &format!("Inbox {title}")),
        );
    }
    put(root, "Inbox/.hidden.md", &task("2026-11-30", &[], "Hidden"));
    put(
        root,
        "_system/logs/2026-12-01.md",
        "# Interaction Log: 2026-12-01\n",
    );
}

#[test]
fn the_digest_of_a_fixture_vault_reads_exactly() {
    let dir = tempfile::tempdir().unwrap();
    fixture(dir.path());
    let text = compose(&gather(dir.path(), date()), date()).unwrap();
    assert_eq!(
        text,
        "Good morning! Wed 2 Dec\n\
         Due today (2):\n\
         • 09:30 Call the dentist\n\
         • 17:05 Water the plants\n\
         Urgent and high tasks (3):\n\
         • Renew passport\n\
         • File the expenses\n\
         • Book the offsite venue\n\
         Inbox: 4 notes waiting: Inbox D; Inbox C; Inbox B; …"
    );
}

#[test]
fn nothing_due_means_no_digest() {
    let dir = tempfile::tempdir().unwrap();
    put(
        dir.path(),
        "Tasks/normal.md",
        &task("2026-11-02", &["priority/normal"], "Buy milk"),
    );
    put(
        dir.path(),
        "Tasks/tomorrow.md",
        &reminder("2026-12-03T09:00:00", false, "Tomorrow's"),
    );
    put(
        dir.path(),
        "Archive/high.md",
        &task("2026-11-04", &["priority/urgent"], "Archived"),
    );
    assert_eq!(gather(dir.path(), date()), Day::default());
    assert_eq!(compose(&Day::default(), date()), None);
    let one = Day {
        inbox: 1,
        inbox_titles: vec!["Only".into()],
        ..Day::default()
    };
    assert_eq!(
        compose(&one, date()).unwrap(),
        "Good morning! Wed 2 Dec\nInbox: 1 note waiting: Only"
    );
}

#[test]
fn a_long_day_is_cut_to_fit_a_text() {
    let long = "A very long reminder title that goes on and on well past sixty characters";
    let day = Day {
        reminders: (0..30)
            .map(|i| {
                (
                    NaiveTime::from_hms_opt(9, i, 0).unwrap(),
                    format!("{long} {i}"),
                )
            })
            .collect(),
        tasks: (0..30).map(|i| format!("Task {i} 👩‍👩‍👧 {long}")).collect(),
        inbox: 12,
        inbox_titles: vec![long.into(), "b".into(), "c".into()],
    };
    let text = compose(&day, date()).unwrap();
    assert!(
        text.chars().count() <= MAX_CHARS,
        "{} chars:\n{text}",
        text.chars().count()
    );
    assert!(
        text.contains("Due today (30):") && text.contains("• …and"),
        "{text}"
    );
    assert!(text.contains("Urgent and high tasks (30):"), "{text}");
    assert!(text.contains("Inbox: 12 notes waiting"), "{text}");
}

#[test]
fn the_plan_sends_at_its_time_late_until_noon_and_once() {
    let eight = NaiveTime::from_hms_opt(8, 0, 0).unwrap();
    let next = date().succ_opt().unwrap().and_time(eight);
    let cases = [
        (at(7, 59), false, Step::Wait(at(8, 0))),
        (at(8, 0), false, Step::Send(date())),
        (at(11, 59), false, Step::Send(date())),
        (at(12, 0), false, Step::Skip(date())),
        (at(23, 0), false, Step::Skip(date())),
        (at(8, 0), true, Step::Wait(next)),
        (at(0, 0), false, Step::Wait(at(8, 0))),
    ];
    for (now, handled, want) in cases {
        assert_eq!(plan(now, eight, handled), want, "{now} handled={handled}");
    }
    // A digest set after 11:00 may still go out an hour late.
    let half_past_eleven = NaiveTime::from_hms_opt(11, 30, 0).unwrap();
    assert_eq!(
        plan(at(12, 29), half_past_eleven, false),
        Step::Send(date())
    );
    assert_eq!(
        plan(at(12, 30), half_past_eleven, false),
        Step::Skip(date())
    );
}

/// Local time that moves with tokio's (paused) clock.
struct PausedClock {
    start: NaiveDateTime,
    t0: Instant,
}

impl Clock for PausedClock {
    fn now(&self) -> NaiveDateTime {
        self.start + chrono::Duration::from_std(self.t0.elapsed()).unwrap()
    }
}

/// Runs the schedule from `start` on the paused clock until `n` sends: each day sent and
/// how long after the start, in minutes.
async fn sends_from(start: NaiveDateTime, n: usize) -> Vec<(NaiveDate, u64)> {
    let clock = PausedClock {
        start,
        t0: Instant::now(),
    };
    let cancel = CancellationToken::new();
    let mut sent = Vec::new();
    let t0 = clock.t0;
    on_schedule(DEFAULT_TIME, &clock, cancel.clone(), |day| {
        sent.push((day, t0.elapsed().as_secs() / 60));
        if sent.len() == n {
            cancel.cancel();
        }
        async { Sent::Sent }
    })
    .await;
    sent
}

#[tokio::test(start_paused = true)]
async fn on_a_paused_clock_the_digest_goes_at_its_time_once_a_day() {
    let next = date().succ_opt().unwrap();
    // Started before 08:00: at 08:00, then at 08:00 the next day, not in between.
    assert_eq!(
        sends_from(at(6, 30), 2).await,
        [(date(), 90), (next, 90 + 24 * 60)]
    );
    // Started (or woken) at 10:15 with the day's digest not sent: at once.
    assert_eq!(sends_from(at(10, 15), 1).await, [(date(), 0)]);
    // Started at 12:30: that day is skipped; the next day's goes at 08:00.
    assert_eq!(sends_from(at(12, 30), 1).await, [(next, 19 * 60 + 30)]);
}

struct World {
    dir: tempfile::TempDir,
    fake: util::osascript::FakeOsascript,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        fixture(&dir.path().join("vault"));
        let fake = util::osascript::FakeOsascript::install(&dir.path().join("osascript"));
        World { dir, fake }
    }

    /// The digest sender as a freshly started bridge has it (the ledger read from disk).
    fn digests(&self) -> (Digests<SystemClock>, Arc<Ledger>) {
        let (ledger, _) = Ledger::open(self.dir.path().join("ledger.json")).unwrap();
        let ledger = Arc::new(ledger);
        let sender = Sender::with_program(self.fake.program());
        let allowed = Allowlist::parse(&["+15551234567"]).unwrap();
        let settings = DigestSettings {
            enabled: true,
            ..DigestSettings::default()
        };
        let digests = Digests {
            schedule: settings.schedule(&allowed).unwrap().unwrap(),
            vault: self.dir.path().join("vault"),
            outbox: Outbox::new(sender, Arc::clone(&ledger), StatusBoard::new(None)),
            ledger: Arc::clone(&ledger),
            clock: SystemClock,
        };
        (digests, ledger)
    }
}

#[tokio::test]
async fn a_day_is_sent_once_across_restarts_and_crashes() {
    let world = World::new();
    let (digests, _) = world.digests();
    assert_eq!(digests.send(date()).await, Sent::Sent);
    let calls = world.fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].target, "iMessage;-;+15551234567");
    assert!(
        calls[0]
            .text
            .starts_with("Good morning! Wed 2 Dec\nDue today (2):"),
        "{}",
        calls[0].text
    );
    // Restarted the same day, with the vault changed (another text): not sent again.
    put(&world.dir.path().join("vault"), "Inbox/E.md", "# Inbox E\n");
    let (digests, _) = world.digests();
    assert_eq!(digests.send(date()).await, Sent::AlreadyClaimed);
    assert_eq!(world.fake.calls().len(), 1);
    // The next day's send fails: it is not tried again that day, by this bridge or the
    // next (at most once: the day is taken before the send, so a kill -9 mid-send is the
    // same case).
    let next = date().succ_opt().unwrap();
    world
        .fake
        .fail_next(1, "execution error: Messages got an error (-1700)");
    let (digests, _) = world.digests();
    assert!(matches!(digests.send(next).await, Sent::Failed(_)));
    assert_eq!(digests.send(next).await, Sent::AlreadyClaimed);
    let (digests, _) = world.digests();
    assert_eq!(digests.send(next).await, Sent::AlreadyClaimed);
    assert_eq!(world.fake.calls().len(), 2, "the failed send, once");
}

#[test]
fn settings_resolve_to_a_schedule_or_say_what_is_wrong() {
    let one = Allowlist::parse(&["+15551234567"]).unwrap();
    let two = Allowlist::parse(&["+15551234567", "sarah@example.com"]).unwrap();
    let on = |time: Option<&str>, recipient: Option<&str>| DigestSettings {
        enabled: true,
        time: time.map(String::from),
        recipient: recipient.map(String::from),
    };
    let schedule = |time: (u32, u32), who: &str| {
        Ok(Some(Schedule {
            time: NaiveTime::from_hms_opt(time.0, time.1, 0).unwrap(),
            recipient: Handle::parse(who).unwrap(),
        }))
    };
    assert_eq!(DigestSettings::default().schedule(&two), Ok(None));
    assert_eq!(
        on(None, None).schedule(&one),
        schedule((8, 0), "+15551234567")
    );
    assert_eq!(
        on(Some("07:45"), Some("Sarah@Example.com")).schedule(&two),
        schedule((7, 45), "sarah@example.com")
    );
    assert_eq!(
        on(None, None).schedule(&two),
        Err(ScheduleError::NoRecipient)
    );
    assert_eq!(
        on(None, Some("+15550000000")).schedule(&two),
        Err(ScheduleError::NotAllowed("+15550000000".into()))
    );
    for bad in ["8", "25:00", "08:00pm", "8h"] {
        assert_eq!(
            on(Some(bad), None).schedule(&one),
            Err(ScheduleError::Time(bad.into()))
        );
    }
    // A bad time is refused even while the digest is off: nothing half-valid is saved.
    let off = DigestSettings {
        time: Some("nope".into()),
        ..DigestSettings::default()
    };
    assert_eq!(off.schedule(&one), Err(ScheduleError::Time("nope".into())));
}
