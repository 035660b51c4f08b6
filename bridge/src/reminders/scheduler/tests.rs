//! The scheduler on tokio's paused clock with a wall clock the tests move: on time, after a
//! jump forward (a Mac that slept), not early after a jump backward, re-armed when a note
//! changes, and exactly once across what a crash leaves in the store.

use std::sync::{Arc, Mutex};

use chrono::NaiveDateTime;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::*;
use crate::reminders::{Due, format_due};
use crate::state::StateDb;

const CHAT: &str = "iMessage;-;+15551234567";

/// Local wall time that moves with tokio's paused clock, and can jump.
#[derive(Clone)]
struct TestClock(Arc<Mutex<(NaiveDateTime, Instant)>>);

impl Clock for TestClock {
    fn now(&self) -> NaiveDateTime {
        let (base, t0) = *self.0.lock().unwrap();
        base + chrono::Duration::from_std(t0.elapsed()).unwrap()
    }
}

impl TestClock {
    fn jump(&self, by: chrono::Duration) {
        self.0.lock().unwrap().0 += by;
    }
}

/// Records each text with the (paused) time it went out.
#[derive(Clone)]
struct Recorder {
    tx: mpsc::UnboundedSender<(String, String, Instant)>,
}

impl Deliver for Recorder {
    async fn deliver(&self, chat: &Chat, _: &str, text: &str) -> Result<Delivery, SendError> {
        let _ = self
            .tx
            .send((chat.guid.clone(), text.to_string(), Instant::now()));
        Ok(Delivery::Sent)
    }
}

struct World {
    dir: tempfile::TempDir,
    store: Store,
    status: StatusBoard,
    clock: TestClock,
    start: NaiveDateTime,
    t0: Instant,
    changes: watch::Sender<u64>,
    sent: mpsc::UnboundedReceiver<(String, String, Instant)>,
    cancel: CancellationToken,
}

fn chat(guid: &str) -> Chat {
    Chat {
        guid: guid.into(),
        identifier: guid.rsplit(';').next().unwrap().into(),
        is_group: false,
    }
}

impl World {
    /// A vault, a store and a scheduler running from now (wall time truncated to seconds).
    fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("vault/Tasks")).unwrap();
        let store = Store::open(Arc::new(StateDb::in_memory())).unwrap();
        let start = Local::now().naive_local().with_nanosecond(0).unwrap();
        let t0 = Instant::now();
        let clock = TestClock(Arc::new(Mutex::new((start, t0))));
        let (tx, sent) = mpsc::unbounded_channel();
        let (changes, rx) = watch::channel(0);
        let world = World {
            dir,
            store,
            status: StatusBoard::new(None),
            clock,
            start,
            t0,
            changes,
            sent,
            cancel: CancellationToken::new(),
        };
        let scheduler = Scheduler {
            root: world.root(),
            store: world.store.clone(),
            outbox: Recorder { tx },
            status: world.status.clone(),
            clock: world.clock.clone(),
            changes: rx,
            vault_changes: None,
            fallback: None,
        };
        tokio::spawn(scheduler.run(world.cancel.clone()));
        world
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    /// Local wall time `secs` after the start, as a due.
    fn at(&self, secs: i64) -> Due {
        Local
            .from_local_datetime(&(self.start + chrono::Duration::seconds(secs)))
            .earliest()
            .unwrap()
            .fixed_offset()
    }

    /// Writes a task note due `secs` after the start, set from `guid`, and tells the
    /// scheduler.
    fn note(&self, name: &str, secs: i64, guid: &str) -> PathBuf {
        let rel = format!("Tasks/{name}.md");
        let due = self.at(secs);
        let text = format!(
            "---\ntags:\n- status/active\n{}---\n# {name}\n\nBring the card.\n",
            reminder_lines(&due, None)
        );
        let path = self.root().join(&rel);
        std::fs::write(&path, text).unwrap();
        self.store
            .set_chat(&rel, &format_due(&due), &chat(guid))
            .unwrap();
        self.changes.send_modify(|n| *n += 1);
        path
    }

    /// Waits (on the paused clock) until the status shows a next reminder.
    async fn armed(&self) {
        let mut rx = self.status.subscribe();
        rx.wait_for(|s| s.next_reminder.is_some()).await.unwrap();
    }

    /// Waits until nothing is pending (every note sent and marked).
    async fn settled(&self) {
        let mut rx = self.status.subscribe();
        rx.wait_for(|s| s.next_reminder.is_none()).await.unwrap();
    }

    /// The next text: chat, text, and seconds after the start (monotonic) it went out.
    async fn next_send(&mut self) -> (String, String, u64) {
        let (guid, text, at) = self.sent.recv().await.unwrap();
        (guid, text, (at - self.t0).as_secs())
    }

    /// Lets `secs` pass on the paused clock, asserting that nothing was sent meanwhile.
    async fn quiet_for(&mut self, secs: u64) {
        let waited = tokio::time::timeout(Duration::from_secs(secs), self.sent.recv()).await;
        assert!(waited.is_err(), "sent early: {waited:?}");
    }
}

use chrono::Timelike as _;

#[tokio::test(start_paused = true)]
async fn a_reminder_goes_at_its_time_into_its_chat_and_the_note_says_sent() {
    let mut world = World::start();
    let path = world.note("Call the dentist", 90, CHAT);
    world.armed().await;
    let (guid, text, secs) = world.next_send().await;
    assert_eq!(guid, CHAT);
    assert_eq!(text, "Reminder: Call the dentist\nBring the card.");
    assert_eq!(secs, 90, "on time, not polled");
    world.settled().await;
    let note = std::fs::read_to_string(&path).unwrap();
    let due = format_due(&world.at(90));
    assert!(
        note.contains(&format!(
            "reminder:\n  due: {due}\n  sent: true\n  sent_at: "
        )),
        "{note}"
    );
    assert!(note.ends_with("# Call the dentist\n\nBring the card.\n"));
    assert_eq!(
        world
            .store
            .claim(&format!("reminder:Tasks/Call the dentist.md:{due}"))
            .unwrap(),
        Claim::Seen(SendState::Sent)
    );
    // Sent once: nothing more, and nothing pending any more.
    world.quiet_for(600).await;
    assert_eq!(world.status.get().next_reminder, None);
    world.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_wall_clock_jump_forward_sends_saying_when_it_was_due_and_backward_never_early() {
    let mut world = World::start();
    world.note("Forward", 2 * 3600, CHAT);
    world.armed().await;
    // The Mac slept three hours: its monotonic clock did not move, the wall clock did.
    world.clock.jump(chrono::Duration::hours(3));
    let (_, text, secs) = world.next_send().await;
    assert!(
        secs <= LOOK_EVERY.as_secs(),
        "seen within {LOOK_EVERY:?}: {secs}"
    );
    let was = world
        .at(2 * 3600)
        .with_timezone(&Local)
        .format("%a %-d %b %H:%M");
    assert_eq!(
        text,
        format!("Reminder: Forward (was due {was})\nBring the card.")
    );

    // Due a minute from (wall) now, then the clock is set back an hour: not early.
    let now = (world.clock.now() - world.start).num_seconds();
    world.note("Backward", now + 60, CHAT);
    world.clock.jump(-chrono::Duration::hours(1));
    world.quiet_for(3600).await;
    let (_, text, _) = world.next_send().await;
    assert!(world.clock.now() >= world.at(now + 60).naive_local());
    assert!(
        world.clock.now() < world.at(now + 61).naive_local(),
        "on time once the wall clock gets there"
    );
    assert_eq!(text, "Reminder: Backward\nBring the card.");
    world.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn an_edited_due_re_arms_and_a_removed_reminder_is_never_sent() {
    let mut world = World::start();
    let path = world.note("Moved", 600, CHAT);
    world.armed().await;
    // Edited in Obsidian: later. The old time passes quietly, the new one fires.
    let text = std::fs::read_to_string(&path).unwrap();
    let later = text.replace(&format_due(&world.at(600)), &format_due(&world.at(1200)));
    std::fs::write(&path, later).unwrap();
    world.changes.send_modify(|n| *n += 1);
    world.quiet_for(1199).await;
    let (_, text, secs) = world.next_send().await;
    assert_eq!(
        (text.as_str(), secs),
        ("Reminder: Moved\nBring the card.", 1200)
    );

    // Removed in Obsidian a moment before it is due, the change not yet reported: the
    // note is read again before sending, and nothing goes out.
    let gone = world.note("Gone", 1800, CHAT);
    let text = std::fs::read_to_string(&gone).unwrap();
    std::fs::write(&gone, set_field(&text, "reminder", None)).unwrap();
    world.quiet_for(3600).await;
    assert_eq!(
        std::fs::read_to_string(&gone).unwrap(),
        set_field(&text, "reminder", None)
    );
    world.cancel.cancel();
}

#[tokio::test(start_paused = true)]
async fn missed_reminders_go_in_one_text_per_chat_and_claims_are_never_repeated() {
    let dir_world = World::start();
    let mut world = dir_world;
    let other = "iMessage;-;sarah@example.com";
    world.note("A", -7200, CHAT);
    world.note("B", -3600, CHAT);
    world.note("C", -60 * 5, other);
    // A bridge killed while sending D left it in flight; E was sent but its note not marked.
    let d = world.note("D", -600, CHAT);
    let e = world.note("E", -500, CHAT);
    for (name, secs) in [("D", -600), ("E", -500)] {
        let key = format!("reminder:Tasks/{name}.md:{}", format_due(&world.at(secs)));
        assert_eq!(world.store.claim(&key).unwrap(), Claim::New);
        if name == "E" {
            world.store.settle(&key, SendState::Sent).unwrap();
        }
    }
    world.changes.send_modify(|n| *n += 1);
    let mut texts = [world.next_send().await, world.next_send().await];
    texts.sort();
    let when = |secs| {
        world
            .at(secs)
            .with_timezone(&Local)
            .format("%a %-d %b %H:%M")
    };
    assert_eq!(texts[0].0, CHAT);
    assert_eq!(
        texts[0].1,
        format!(
            "Reminders:\n• A (was due {})\n• B (was due {})",
            when(-7200),
            when(-3600)
        )
    );
    assert_eq!(texts[1].0, other);
    assert_eq!(
        texts[1].1,
        format!("Reminder: C (was due {})\nBring the card.", when(-300))
    );
    world.quiet_for(600).await;
    for path in [d, e] {
        let note = std::fs::read_to_string(&path).unwrap();
        assert!(note.contains("  sent: true\n"), "{note}");
    }
    assert_eq!(world.status.get().unconfirmed_sends, 1, "D is reported");
    world.cancel.cancel();
}
