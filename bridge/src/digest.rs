//! The morning digest: one text a day to one allowed sender, composed by code from the vault
//! (no LLM): reminders due today, urgent and high-priority tasks, and what waits in `Inbox/`.
//!
//! Invariants: at most [`MAX_CHARS`] characters, and no text when there is nothing to say;
//! at most one digest per day, whatever crashes: the day is taken in the [`Ledger`] (the
//! id `digest:YYYY-MM-DD` marked finished, as a handled text is) before the [`Outbox`] sends
//! it under that id, so a bridge killed while (or after) sending never sends that day's
//! digest again; a digest whose time passed while the
//! Mac was asleep or off is sent on wake or start until noon (or an hour after its time, if
//! later), else that day is skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, NaiveTime};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::allowlist::Handle;
use crate::chatdb::Chat;
use crate::ledger::Ledger;
use crate::outbox::Outbox;
use crate::search::{note, read_note, store::sort_time, walk};
use crate::vault::Folder;

/// Longest digest, in characters.
pub const MAX_CHARS: usize = 600;
/// When the digest goes out unless set otherwise.
pub const DEFAULT_TIME: NaiveTime = NaiveTime::from_hms_opt(8, 0, 0).unwrap();
/// The longest the schedule sleeps before looking at the wall clock again: the monotonic
/// clock it sleeps on may stand still while the Mac sleeps.
const LOOK_EVERY: Duration = Duration::from_secs(60);
/// Items listed per part, at most.
const MAX_ITEMS: usize = 5;
/// Longest title shown, in characters.
const MAX_TITLE_CHARS: usize = 60;

/// The digest's part of the settings file (`"digest": {…}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DigestSettings {
    /// Whether the digest is sent at all (off by default).
    pub enabled: bool,
    /// Local time, `HH:MM` (24 h); [`DEFAULT_TIME`] when unset.
    pub time: Option<String>,
    /// Which allowed sender gets it; the only one when unset and there is only one.
    pub recipient: Option<String>,
}

/// When and to whom the digest goes, resolved from [`DigestSettings`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Local time of day.
    pub time: NaiveTime,
    /// An allowed sender.
    pub recipient: Handle,
}

impl From<&Schedule> for DigestSettings {
    /// The settings of a digest that is on.
    fn from(schedule: &Schedule) -> DigestSettings {
        DigestSettings {
            enabled: true,
            time: Some(schedule.time.format("%H:%M").to_string()),
            recipient: Some(schedule.recipient.as_str().to_string()),
        }
    }
}

/// Why the digest settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The time is not `HH:MM`.
    #[error("{0:?} is not a time of day like 08:00")]
    Time(String),
    /// No recipient was chosen and there is not exactly one allowed sender.
    #[error("choose which allowed sender gets the digest")]
    NoRecipient,
    /// The recipient is not an allowed sender.
    #[error("{0:?} is not one of the allowed senders")]
    NotAllowed(String),
}

impl DigestSettings {
    /// Whether nothing is set (the file then says nothing about the digest).
    pub fn is_unset(&self) -> bool {
        *self == DigestSettings::default()
    }

    /// The schedule, `None` when the digest is off.
    pub fn schedule(
        &self,
        allowed: &crate::allowlist::Allowlist,
    ) -> Result<Option<Schedule>, ScheduleError> {
        let time = match self.time.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_TIME,
            Some(t) => NaiveTime::parse_from_str(t, "%H:%M")
                .map_err(|_| ScheduleError::Time(t.to_string()))?,
        };
        if !self.enabled {
            return Ok(None);
        }
        let recipient = match self.recipient.as_deref().map(str::trim) {
            None | Some("") => {
                let mut senders = allowed.iter();
                match (senders.next(), senders.next()) {
                    (Some(only), None) => only.clone(),
                    _ => return Err(ScheduleError::NoRecipient),
                }
            }
            Some(raw) => Handle::parse(raw)
                .ok()
                .filter(|h| allowed.iter().any(|a| a == h))
                .ok_or_else(|| ScheduleError::NotAllowed(raw.to_string()))?,
        };
        Ok(Some(Schedule { time, recipient }))
    }
}

/// What the vault has for one day's digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Day {
    /// Reminders due that day, soonest first: local time and title.
    pub reminders: Vec<(NaiveTime, String)>,
    /// Active tasks tagged `priority/urgent` (first) or `priority/high`, newest first.
    pub tasks: Vec<String>,
    /// How many notes are in `Inbox/`.
    pub inbox: usize,
    /// The newest few of their titles.
    pub inbox_titles: Vec<String>,
}

/// Reads what `date`'s digest needs from the vault at `root` (blocking).
pub fn gather(root: &Path, date: NaiveDate) -> Day {
    let mut notes = Vec::new();
    walk::under(root, "", &mut notes);
    let mut day = Day::default();
    let (mut reminders, mut tasks, mut inbox) = (Vec::new(), Vec::new(), Vec::new());
    for (rel, stamp) in notes {
        let folder = rel.split('/').next().unwrap_or_default();
        if folder == Folder::Archive.as_str() {
            continue;
        }
        let Some(text) = read_note(&root.join(&rel)) else {
            continue;
        };
        let parsed = note::parse(&rel, &text);
        let when = sort_time(parsed.created.as_deref(), &stamp);
        if let Some(r) = &parsed.reminder
            && !r.sent
            && let Some(due) = local_due(&r.due)
            && due.date() == date
        {
            reminders.push((due.time(), parsed.title.clone()));
        }
        let has = |tag: &str| parsed.tags.iter().any(|t| t.eq_ignore_ascii_case(tag));
        if folder == Folder::Tasks.as_str() && !has("status/done") {
            if has("priority/urgent") {
                tasks.push((0, -when, parsed.title.clone()));
            } else if has("priority/high") {
                tasks.push((1, -when, parsed.title.clone()));
            }
        }
        if folder == Folder::Inbox.as_str() {
            inbox.push((-when, parsed.title));
        }
    }
    reminders.sort();
    tasks.sort();
    inbox.sort();
    day.reminders = reminders;
    day.tasks = tasks.into_iter().map(|(_, _, t)| t).collect();
    day.inbox = inbox.len();
    day.inbox_titles = inbox.into_iter().take(3).map(|(_, t)| t).collect();
    day
}

/// A reminder's due as local wall time: RFC 3339, or a local date-time without offset.
fn local_due(due: &str) -> Option<NaiveDateTime> {
    let due = due.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(due) {
        return Some(t.with_timezone(&Local).naive_local());
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(due, f).ok())
}

/// The digest's text for `day` on `date`; `None` when there is nothing to say.
pub fn compose(day: &Day, date: NaiveDate) -> Option<String> {
    if day.reminders.is_empty() && day.tasks.is_empty() && day.inbox == 0 {
        return None;
    }
    // Fewer items until it fits; the counts always say how many there are.
    (0..=MAX_ITEMS)
        .rev()
        .map(|items| text(day, date, items))
        .find(|t| t.chars().count() <= MAX_CHARS)
}

fn text(day: &Day, date: NaiveDate, items: usize) -> String {
    let mut out = format!("Good morning! {}", date.format("%a %-d %b"));
    if !day.reminders.is_empty() {
        out.push_str(&format!("\nDue today ({}):", day.reminders.len()));
        for (time, title) in day.reminders.iter().take(items) {
            out.push_str(&format!("\n• {} {}", time.format("%H:%M"), clip(title)));
        }
        more(&mut out, day.reminders.len(), items);
    }
    if !day.tasks.is_empty() {
        out.push_str(&format!("\nUrgent and high tasks ({}):", day.tasks.len()));
        for title in day.tasks.iter().take(items) {
            out.push_str(&format!("\n• {}", clip(title)));
        }
        more(&mut out, day.tasks.len(), items);
    }
    if day.inbox > 0 {
        let noun = if day.inbox == 1 { "note" } else { "notes" };
        out.push_str(&format!("\nInbox: {} {noun} waiting", day.inbox));
        let titles: Vec<String> = day
            .inbox_titles
            .iter()
            .take(items.min(3))
            .map(|t| clip(t))
            .collect();
        if !titles.is_empty() {
            out.push_str(&format!(": {}", titles.join("; ")));
            if day.inbox > titles.len() {
                out.push_str("; …");
            }
        }
    }
    out
}

fn more(out: &mut String, total: usize, shown: usize) {
    if total > shown {
        out.push_str(&format!("\n• …and {} more", total - shown));
    }
}

fn clip(title: &str) -> String {
    let flat: String = title.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_TITLE_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(MAX_TITLE_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

/// What the schedule does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send that day's digest now.
    Send(NaiveDate),
    /// That day's time passed long ago (asleep, off): no digest that day.
    Skip(NaiveDate),
    /// Nothing to do before then (local wall time).
    Wait(NaiveDateTime),
}

/// The next step at local time `now` for a digest at `time`, `handled` telling whether
/// today's digest was already sent or skipped.
pub fn plan(now: NaiveDateTime, time: NaiveTime, handled: bool) -> Step {
    let today = now.date();
    let at = today.and_time(time);
    let noon = today.and_time(NaiveTime::from_hms_opt(12, 0, 0).expect("noon"));
    let late = noon.max(at + chrono::Duration::hours(1));
    let tomorrow = (today + chrono::Duration::days(1)).and_time(time);
    match (handled, now < at, now < late) {
        (true, _, _) => Step::Wait(tomorrow),
        (false, true, _) => Step::Wait(at),
        (false, false, true) => Step::Send(today),
        (false, false, false) => Step::Skip(today),
    }
}

/// Local wall time, for the schedule. Tests give one that follows tokio's paused clock.
pub trait Clock: Send + Sync + 'static {
    /// Now, in local time.
    fn now(&self) -> NaiveDateTime;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> NaiveDateTime {
        Local::now().naive_local()
    }
}

/// Calls `send` for each day's digest at `time` (as [`plan`] says), until `cancel` fires.
pub async fn on_schedule<F, Fut>(
    time: NaiveTime,
    clock: &impl Clock,
    cancel: CancellationToken,
    mut send: F,
) where
    F: FnMut(NaiveDate) -> Fut,
    Fut: std::future::Future<Output = Sent>,
{
    let mut handled: Option<NaiveDate> = None;
    loop {
        let now = clock.now();
        match plan(now, time, handled == Some(now.date())) {
            Step::Send(day) => {
                let sent = send(day).await;
                tracing::info!(%day, outcome = ?sent, "morning digest");
                handled = Some(day);
            }
            Step::Skip(day) => {
                tracing::info!(%day, "morning digest skipped: its time passed while the bridge was not running");
                handled = Some(day);
            }
            Step::Wait(until) => {
                let wait = (until - now).to_std().unwrap_or_default().min(LOOK_EVERY);
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                }
            }
        }
    }
}

/// Starts the digest on `tracker` when the configuration has it on.
pub fn start(
    config: &crate::config::Config,
    outbox: &Outbox,
    ledger: &Arc<Ledger>,
    tracker: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) {
    let (Some(schedule), Some(vault)) = (config.digest.clone(), config.vault.clone()) else {
        return;
    };
    let digests = Digests {
        schedule,
        vault,
        outbox: outbox.clone(),
        ledger: Arc::clone(ledger),
        clock: SystemClock,
    };
    tracker.spawn(digests.run(cancel.clone()));
}

/// What sending one day's digest came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Texted now.
    Sent,
    /// Nothing to say: no text, and the day is settled.
    Nothing,
    /// The day was claimed before (sent, or maybe sent by a bridge that died): not again.
    AlreadyClaimed,
    /// The send failed, or it is unknown whether it went out; not tried again that day.
    Failed(String),
}

/// Sends the digest on schedule until `cancel` fires.
pub struct Digests<C: Clock> {
    /// When and to whom.
    pub schedule: Schedule,
    /// The vault folder.
    pub vault: std::path::PathBuf,
    /// Sends (and records) the text.
    pub outbox: Outbox,
    /// Where each day is claimed.
    pub ledger: Arc<Ledger>,
    /// Local wall time.
    pub clock: C,
}

impl<C: Clock> Digests<C> {
    /// Runs the schedule.
    pub async fn run(self, cancel: CancellationToken) {
        let this = &self;
        on_schedule(self.schedule.time, &self.clock, cancel, move |day| {
            this.send(day)
        })
        .await;
    }

    /// Composes `day`'s digest, takes the day in the ledger, then sends it. The day is
    /// taken before the send, so a bridge killed during or after it never sends it again
    /// (at most once: a send that failed is not tried again that day).
    pub async fn send(&self, day: NaiveDate) -> Sent {
        let source = format!("digest:{day}");
        if self.ledger.is_finished(&source) {
            return Sent::AlreadyClaimed;
        }
        let root = self.vault.clone();
        let text = tokio::task::spawn_blocking(move || compose(&gather(&root, day), day))
            .await
            .unwrap_or(None);
        let ledger = Arc::clone(&self.ledger);
        let taken = {
            let source = source.clone();
            tokio::task::spawn_blocking(move || ledger.finish(&source)).await
        };
        match taken {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Sent::Failed(format!("could not take the day: {err}")),
            Err(err) => return Sent::Failed(format!("could not take the day: {err}")),
        }
        let Some(text) = text else {
            return Sent::Nothing;
        };
        match self.outbox.send(&self.chat(), Some(&source), &text).await {
            Ok(crate::outbox::Delivery::Sent) => Sent::Sent,
            Ok(other) => Sent::Failed(format!("{other:?}")),
            Err(err) => Sent::Failed(err.to_string()),
        }
    }

    /// The recipient's direct chat; the sender falls back to the participant when Messages
    /// does not know the chat by this id.
    fn chat(&self) -> Chat {
        let handle = self.schedule.recipient.as_str();
        Chat {
            guid: format!("iMessage;-;{handle}"),
            identifier: handle.to_string(),
            is_group: false,
        }
    }
}

#[cfg(test)]
mod tests;
