//! Texts each reminder at its due time: a timer armed for the next one, re-armed on every
//! change (a tool call, or the vault's file watch), the wall clock looked at again at least
//! every [`LOOK_EVERY`] while any is pending (the monotonic clock a timer sleeps on stands
//! still while a Mac sleeps), and nothing at all while none is.
//!
//! Invariants: right before a reminder is sent its note is read again, and only a reminder
//! the note still has (same due, not sent) goes out; each is claimed in the [`Store`] (in
//! flight, committed) before the [`Outbox`] sends it, so a bridge killed at any moment never
//! sends it twice — one found in flight at start is reported as unconfirmed, not repeated;
//! then the note gets `sent: true` and `sent_at`. Reminders due at once (or missed while the
//! Mac slept or the bridge was stopped) go in one text per chat, saying when the missed ones
//! were due.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{Local, NaiveDateTime, TimeZone};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::frontmatter::{self, reminder_lines, set_field};
use super::store::{Claim, SendState, Store};
use super::{Pending, Reminder, local, read_one};
use crate::chatdb::Chat;
use crate::digest::Clock;
use crate::outbox::{Delivery, Outbox};
use crate::sender::SendError;
use crate::status::{NextReminder, StatusBoard};

/// The longest the scheduler sleeps, while a reminder is pending, before looking at the
/// wall clock again.
pub const LOOK_EVERY: Duration = Duration::from_secs(30);
/// A reminder sent later than this after its due time was missed (the Mac slept, the bridge
/// was stopped): its text says when it was due.
const MISSED_AFTER: chrono::Duration = chrono::Duration::seconds(60);
/// How long a reminder that could not be sent waits before it is tried again.
const RETRY_AFTER: chrono::Duration = chrono::Duration::seconds(60);

/// Where the texts go: the [`Outbox`] (tests record them instead, on a paused clock, where a
/// real `osascript` child would meet the sender's time-out at once).
pub trait Deliver: Send + Sync + 'static {
    /// Sends `text` into `chat`, recorded under `source`.
    fn deliver(
        &self,
        chat: &Chat,
        source: &str,
        text: &str,
    ) -> impl std::future::Future<Output = Result<Delivery, SendError>> + Send;
}

impl Deliver for Outbox {
    async fn deliver(&self, chat: &Chat, source: &str, text: &str) -> Result<Delivery, SendError> {
        self.send(chat, Some(source), text).await
    }
}

/// Sends the reminders of one vault until cancelled.
pub struct Scheduler<C: Clock, O: Deliver = Outbox> {
    /// The vault folder.
    pub root: PathBuf,
    /// Chats and sends.
    pub store: Store,
    /// Sends the texts (and remembers them as the bridge's own).
    pub outbox: O,
    /// Where the next reminder and unconfirmed sends are shown.
    pub status: StatusBoard,
    /// Local wall time.
    pub clock: C,
    /// Bumped when a tool changed a reminder.
    pub changes: watch::Receiver<u64>,
    /// Bumped when the vault's file watch saw a change (none in tests that do not need it).
    pub vault_changes: Option<watch::Receiver<u64>>,
    /// Where a reminder goes whose chat is not known (the only allowed sender), if anywhere.
    pub fallback: Option<Chat>,
}

/// One reminder of a batch, after its note was read again.
enum Prepared {
    /// To send into this chat.
    Send(Chat, Reminder),
    /// Sent before (the bridge stopped before the note said so): only the note is updated.
    AlreadySent(Reminder),
    /// Found in flight or unconfirmed: it may have been sent, so it is not sent again.
    Unconfirmed(Reminder),
    /// The note no longer has it (edited, removed, moved, sent), or it has nowhere to go.
    Skip,
}

impl<C: Clock, O: Deliver> Scheduler<C, O> {
    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut pending = Pending::default();
        let mut dirty = true;
        // Reminders not to try again before then (they could not be sent or marked).
        let mut held: HashMap<String, NaiveDateTime> = HashMap::new();
        // What is pending and not held, soonest first: made again only when that changes,
        // so a look at the clock costs a comparison.
        let mut list: Vec<Reminder> = Vec::new();
        loop {
            let refreshed = dirty;
            if dirty {
                pending = self.refresh(pending).await;
                dirty = false;
            }
            let now = self.clock.now();
            let before = held.len();
            held.retain(|_, until| *until > now);
            if refreshed || held.len() != before {
                list = pending
                    .soonest_first()
                    .into_iter()
                    .filter(|r| !held.contains_key(&r.key()))
                    .collect();
                self.publish(list.first());
            }
            // Soonest first: only the head of the list needs looking at.
            let due: Vec<Reminder> = list
                .iter()
                .take_while(|r| wall(r) <= now)
                .cloned()
                .collect();
            if !due.is_empty() {
                for r in &due {
                    held.insert(r.key(), now + RETRY_AFTER);
                    pending.forget(&r.path);
                }
                self.fire(due, now).await;
                dirty = true;
                continue;
            }
            let wait = list
                .first()
                .map(|r| (wall(r) - now).to_std().unwrap_or_default().min(LOOK_EVERY));
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = changed(&mut self.changes, self.vault_changes.as_mut()) => dirty = true,
                _ = sleep_for(wait) => {}
            }
        }
    }

    /// `pending` brought up to date with the vault, off the runtime's workers; a change of
    /// the pending list is counted in the status, for the app's Upcoming list.
    async fn refresh(&self, mut pending: Pending) -> Pending {
        let root = self.root.clone();
        let before = pending.soonest_first();
        let pending = tokio::task::spawn_blocking(move || {
            pending.refresh(&root);
            pending
        })
        .await
        .unwrap_or_default();
        if pending.soonest_first() != before {
            self.status.update(|s| s.reminder_changes += 1);
        }
        pending
    }

    fn publish(&self, next: Option<&Reminder>) {
        let next = next.map(|r| NextReminder {
            path: r.path.clone(),
            title: r.title.clone(),
            due: super::format_due(&local(&r.due)),
        });
        if self.status.get().next_reminder != next {
            self.status.update(|s| s.next_reminder = next);
        }
    }

    /// Sends the reminders `due` at local time `now`: one text per chat.
    async fn fire(&self, due: Vec<Reminder>, now: NaiveDateTime) {
        let (root, store, fallback) =
            (self.root.clone(), self.store.clone(), self.fallback.clone());
        let prepared = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|r| prepare(&root, &store, fallback.as_ref(), r))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut by_chat: BTreeMap<String, (Chat, Vec<Reminder>)> = BTreeMap::new();
        let mut settled: Vec<(Reminder, SendState)> = Vec::new();
        for step in prepared {
            match step {
                Prepared::Send(chat, r) => by_chat
                    .entry(chat.guid.clone())
                    .or_insert_with(|| (chat, Vec::new()))
                    .1
                    .push(r),
                Prepared::AlreadySent(r) => settled.push((r, SendState::Sent)),
                Prepared::Unconfirmed(r) => {
                    self.report_unconfirmed(&r);
                    settled.push((r, SendState::Unconfirmed));
                }
                Prepared::Skip => {}
            }
        }
        for (chat, batch) in by_chat.into_values() {
            if let Some(state) = self.send(&chat, &batch, now).await {
                settled.extend(batch.into_iter().map(|r| (r, state)));
            }
        }
        self.mark_sent(settled, now).await;
    }

    /// Sends one chat's batch; how it ended, or `None` when it certainly did not go out
    /// (the claims are released, to try again later).
    async fn send(&self, chat: &Chat, batch: &[Reminder], now: NaiveDateTime) -> Option<SendState> {
        let text = compose(batch, now);
        let keys: Vec<String> = batch.iter().map(Reminder::key).collect();
        let source = keys.join(" + ");
        match self.outbox.deliver(chat, &source, &text).await {
            Ok(Delivery::Sent | Delivery::AlreadySent) => {
                tracing::info!(chat = ?chat.guid, count = batch.len(), "reminder sent");
                Some(SendState::Sent)
            }
            Ok(Delivery::Unconfirmed) => Some(SendState::Unconfirmed),
            Err(err) => {
                tracing::warn!(chat = ?chat.guid, cause = %err, "reminder not sent; trying again later");
                let store = self.store.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    for key in keys {
                        if let Err(err) = store.release(&key) {
                            tracing::warn!(cause = %err, "could not release a reminder's claim");
                        }
                    }
                })
                .await;
                None
            }
        }
    }

    fn report_unconfirmed(&self, r: &Reminder) {
        tracing::warn!(path = ?r.path, "reminder unconfirmed (the bridge stopped while sending it); not sending it again");
        let title = r.title.clone();
        self.status.update(|s| {
            s.unconfirmed_sends += 1;
            s.last_error = Some(format!(
                "the reminder \"{title}\" may not have been delivered (the bridge stopped while \
                 sending it); it was not sent again"
            ));
        });
    }

    /// Records each send's end and writes `sent: true` and `sent_at` into each note.
    async fn mark_sent(&self, settled: Vec<(Reminder, SendState)>, now: NaiveDateTime) {
        let (root, store) = (self.root.clone(), self.store.clone());
        let sent_at = Local
            .from_local_datetime(&now)
            .earliest()
            .unwrap_or_else(Local::now);
        let _ = tokio::task::spawn_blocking(move || {
            for (r, state) in settled {
                if let Err(err) = store.settle(&r.key(), state) {
                    tracing::warn!(cause = %err, "could not record a reminder's send");
                }
                let key = r.key();
                let marked = frontmatter::update(&root.join(&r.path), |text| {
                    let still = super::of_note(&r.path, text).is_some_and(|now| now.key() == key);
                    still.then(|| set_field(text, "reminder", Some(&reminder_lines(&r.due, Some(sent_at)))))
                });
                if let Err(err) = marked {
                    tracing::warn!(path = ?r.path, cause = %err, "could not mark the reminder sent in its note");
                }
            }
        })
        .await;
    }
}

/// Reads `r`'s note again and claims its send (blocking).
fn prepare(
    root: &std::path::Path,
    store: &Store,
    fallback: Option<&Chat>,
    r: Reminder,
) -> Prepared {
    if read_one(root, &r.path).is_none_or(|now| now.key() != r.key()) {
        tracing::debug!(path = ?r.path, "reminder changed before it was due; following the note");
        return Prepared::Skip;
    }
    let due = super::format_due(&r.due);
    let chat = match store.chat(&r.path, &due) {
        Ok(Some(chat)) => chat,
        Ok(None) => match fallback {
            Some(chat) => chat.clone(),
            None => {
                tracing::warn!(path = ?r.path, "no chat known for this reminder; not sent");
                return Prepared::Skip;
            }
        },
        Err(err) => {
            tracing::warn!(cause = %err, "could not read the reminder's chat");
            return Prepared::Skip;
        }
    };
    match store.claim(&r.key()) {
        Ok(Claim::New) => Prepared::Send(chat, r),
        Ok(Claim::Seen(SendState::Sent)) => Prepared::AlreadySent(r),
        Ok(Claim::Seen(_)) => Prepared::Unconfirmed(r),
        Err(err) => {
            tracing::warn!(cause = %err, "could not claim the reminder's send");
            Prepared::Skip
        }
    }
}

/// The text for `batch` at local time `now`: "Reminder: <title>" and its first line for one,
/// a list for several; missed ones say when they were due.
pub fn compose(batch: &[Reminder], now: NaiveDateTime) -> String {
    let late = |r: &Reminder| {
        let due = wall(r);
        if now - due > MISSED_AFTER {
            format!(" (was due {})", due.format("%a %-d %b %H:%M"))
        } else {
            String::new()
        }
    };
    match batch {
        [one] => {
            let mut text = format!("Reminder: {}{}", one.title, late(one));
            if let Some(line) = one.first_line.as_deref().filter(|l| *l != one.title) {
                text.push('\n');
                text.push_str(line);
            }
            text
        }
        many => {
            let mut text = String::from("Reminders:");
            for r in many {
                text.push_str(&format!("\n• {}{}", r.title, late(r)));
            }
            text
        }
    }
}

/// `r`'s due time as local wall time (what [`Clock`] tells).
fn wall(r: &Reminder) -> NaiveDateTime {
    r.due.with_timezone(&Local).naive_local()
}

async fn changed(tools: &mut watch::Receiver<u64>, vault: Option<&mut watch::Receiver<u64>>) {
    let vault = async {
        let open = match vault {
            Some(rx) => rx.changed().await.is_ok(),
            None => false,
        };
        if !open {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = tools.changed() => if r.is_err() { std::future::pending::<()>().await },
        _ = vault => {}
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait.max(Duration::from_millis(1))).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
