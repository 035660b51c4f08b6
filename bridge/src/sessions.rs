//! One session per conversation, kept in memory and saved to `sessions.json` in the background.
//!
//! Invariants: the in-memory map (keyed by chat guid) is the truth; a mutation only touches
//! the map under a short `std::sync::Mutex`, bumps a version, broadcasts an event and wakes
//! the writer, so it costs microseconds and never waits for the disk. Exactly one writer
//! task saves: it snapshots the map (a clone of `Arc`s under the lock), serialises and writes
//! outside the lock with [`persist::write_atomic`], so saves never interleave or reorder and
//! several quick changes coalesce into one write. A failed write is logged and retried on the
//! next change, flush or close; it never panics and never loses the in-memory state.
//!
//! `sessions.json` stays a whole JSON file written atomically, not a table of the state
//! database: it is the product's documented format, which users read, back up and edit
//! (`docs` and the README describe it), and it is written once per burst of changes.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::task::TaskTracker;

use crate::chatdb::Chat;
use crate::persist::{self, MovedAside, StateFile};

/// The version written in `sessions.json`; a file with another version is moved aside.
pub const FILE_VERSION: u32 = 1;

/// How many events a slow subscriber may lag behind before it misses some.
const EVENT_CAPACITY: usize = 256;

/// One conversation's state between messages.
///
/// Saved in `sessions.json` in its documented flat form: `state` (`working`, `waiting`,
/// `idle`) with `pending_input` and `question` beside it (see [`SessionRecord`]), so files
/// written before [`SessionState`] carried its data still load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "SessionRecord", into = "SessionRecord")]
pub struct Session {
    /// The conversation.
    pub chat: Chat,
    /// The handle (phone number or email) of the person who started it.
    pub sender: String,
    /// The agent transcript: Messages API `messages` items, oldest first.
    pub transcript: Vec<Value>,
    /// What the session is doing now, with the text a question is about.
    pub state: SessionState,
    /// When the first message of the session arrived.
    pub created_at: DateTime<Utc>,
    /// When the session last changed because of a message or a reply.
    pub last_activity: DateTime<Utc>,
    /// How many texts from the person this session has handled.
    pub message_count: u32,
    /// Input tokens spent on this session.
    pub input_tokens: u64,
    /// Output tokens spent on this session.
    pub output_tokens: u64,
}

impl Session {
    /// A fresh session for `chat`, created at `now` for a message that is being handled:
    /// state [`SessionState::Working`], empty transcript, counters at zero.
    pub fn new(chat: Chat, sender: String, now: DateTime<Utc>) -> Session {
        Session {
            chat,
            sender,
            transcript: Vec::new(),
            state: SessionState::Working { original: None },
            created_at: now,
            last_activity: now,
            message_count: 0,
            input_tokens: 0,
            output_tokens: 0,
        }
    }

    /// What the sessions window shows for it: the pending question, else the text waiting
    /// for an answer.
    pub fn shown_text(&self) -> Option<&str> {
        self.state.question().or(self.state.original())
    }
}

/// What a session is doing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// The agent is handling a text. `original` is the text an earlier question was about,
    /// when the text being handled answers it.
    Working {
        /// The text the question was about.
        original: Option<String>,
    },
    /// The agent asked a question about `original` and waits for the person's answer.
    Waiting {
        /// The text the question is about (from the first message of the exchange).
        original: String,
        /// What the person was last told, if anything.
        question: Option<String>,
    },
    /// Nothing is in progress.
    Idle,
}

impl SessionState {
    /// The name shown in the sessions window.
    pub fn kind(&self) -> StateKind {
        match self {
            SessionState::Working { .. } => StateKind::Working,
            SessionState::Waiting { .. } => StateKind::Waiting,
            SessionState::Idle => StateKind::Idle,
        }
    }

    /// The text a question is (or was) about, while there is one.
    pub fn original(&self) -> Option<&str> {
        match self {
            SessionState::Working { original } => original.as_deref(),
            SessionState::Waiting { original, .. } => Some(original),
            SessionState::Idle => None,
        }
    }

    /// The question waiting for an answer.
    pub fn question(&self) -> Option<&str> {
        match self {
            SessionState::Waiting { question, .. } => question.as_deref(),
            _ => None,
        }
    }
}

/// The name of a [`SessionState`], as written in `sessions.json` and shown in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    /// The agent is handling a message.
    Working,
    /// The agent asked a question and waits for the person's answer.
    Waiting,
    /// Nothing is in progress.
    Idle,
}

/// A [`Session`] as `sessions.json` holds it: the state's name, and its data beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SessionRecord {
    chat: Chat,
    sender: String,
    #[serde(default)]
    transcript: Vec<Value>,
    #[serde(default)]
    pending_input: Option<String>,
    #[serde(default)]
    question: Option<String>,
    state: StateKind,
    created_at: DateTime<Utc>,
    last_activity: DateTime<Utc>,
    #[serde(default)]
    message_count: u32,
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

impl From<SessionRecord> for Session {
    fn from(r: SessionRecord) -> Session {
        let state = match (r.state, r.pending_input) {
            (StateKind::Working, original) => SessionState::Working { original },
            (StateKind::Waiting, Some(original)) => SessionState::Waiting {
                original,
                question: r.question,
            },
            // Waiting without the text it waits about (never written): nothing to keep.
            (StateKind::Waiting, None) | (StateKind::Idle, _) => SessionState::Idle,
        };
        Session {
            chat: r.chat,
            sender: r.sender,
            transcript: r.transcript,
            state,
            created_at: r.created_at,
            last_activity: r.last_activity,
            message_count: r.message_count,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
        }
    }
}

impl From<Session> for SessionRecord {
    fn from(s: Session) -> SessionRecord {
        SessionRecord {
            state: s.state.kind(),
            pending_input: s.state.original().map(str::to_owned),
            question: s.state.question().map(str::to_owned),
            chat: s.chat,
            sender: s.sender,
            transcript: s.transcript,
            created_at: s.created_at,
            last_activity: s.last_activity,
            message_count: s.message_count,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
        }
    }
}

/// A change to the store, for live views. Carries the chat guid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The session of this chat was created or replaced.
    Changed(String),
    /// The session of this chat was removed.
    Removed(String),
    /// Every session was removed.
    Cleared,
}

/// What [`SessionStore::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Sessions restored.
    pub loaded: usize,
    /// Sessions dropped because they were idle longer than the timeout.
    pub expired: usize,
    /// The unreadable file, moved aside.
    pub moved_aside: Option<MovedAside>,
}

/// Why the sessions could not be read or saved.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SessionsError {
    /// Reading the file (or moving an unreadable one aside) failed.
    #[error("could not read sessions from {path}: {source}")]
    Read {
        /// The sessions file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Writing the file failed.
    #[error("could not save sessions to {path}: {source}")]
    Write {
        /// The sessions file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The sessions could not be turned into JSON.
    #[error("could not serialise sessions for {path}: {source}")]
    Serialise {
        /// The sessions file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// The save was interrupted (the blocking task panicked or was cancelled).
    #[error("saving sessions to {path} was interrupted: {reason}")]
    Interrupted {
        /// The sessions file.
        path: PathBuf,
        /// What happened to the task.
        reason: String,
    },
    /// The writer has stopped (after [`SessionStore::close`]) before the change was saved.
    #[error("the sessions writer for {path} has stopped; later changes are not saved")]
    WriterStopped {
        /// The sessions file.
        path: PathBuf,
    },
}

/// The sessions of every conversation. Cheap to clone; all clones share one map and one
/// writer. When the last clone is dropped the writer saves once more and stops.
#[derive(Clone)]
pub struct SessionStore {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("path", &self.inner().path)
            .field("len", &self.len())
            .finish()
    }
}

/// Closes the store when the last [`SessionStore`] clone goes away.
struct Handle(Arc<Inner>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// How the writer puts bytes on disk; [`persist::write_atomic`] outside tests.
type WriteFn = Arc<dyn Fn(&Path, &[u8]) -> io::Result<()> + Send + Sync>;

struct Inner {
    path: PathBuf,
    map: Mutex<MapState>,
    events: broadcast::Sender<SessionEvent>,
    /// Wakes the writer. A watch channel coalesces: a burst of changes costs one save, and
    /// the writer marks the signal seen *before* its snapshot, so no stale wake-up remains.
    wake: watch::Sender<()>,
    closed: AtomicBool,
    /// Flush tickets handed out; the writer reports the highest one it has served.
    flush_requests: AtomicU64,
    status: watch::Receiver<WriterStatus>,
}

struct MapState {
    sessions: HashMap<String, Arc<Session>>,
    /// For each session put unsaved since its last saved change: that saved form (`None`
    /// when it had none), which is what the file keeps of it meanwhile.
    unsaved: HashMap<String, Option<Arc<Session>>>,
    /// Bumped by every saved mutation, under the lock, so a snapshot knows what it covers.
    version: u64,
}

impl MapState {
    /// What the file should hold: every session in its last saved form.
    fn to_save(&self) -> Vec<Arc<Session>> {
        let saved = self
            .sessions
            .iter()
            .filter_map(|(guid, live)| match self.unsaved.get(guid) {
                Some(saved) => saved.clone(),
                None => Some(Arc::clone(live)),
            });
        saved.collect()
    }
}

/// What the writer has done so far.
#[derive(Clone, Debug, Default)]
struct WriterStatus {
    /// The highest map version known to be on disk.
    saved: u64,
    /// The highest flush ticket whose request was read before the last save attempt.
    served: u64,
    /// The last write error, cleared by a successful save.
    error: Option<SessionsError>,
    /// The writer has exited.
    stopped: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, MapState> {
        // A panic while holding the lock cannot leave the map half-changed (every section
        // is a single map operation), so a poisoned lock is still safe to use.
        crate::mutex::lock(&self.map)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.send_replace(());
    }
}

/// The file as read.
#[derive(Deserialize)]
struct FileIn {
    version: u32,
    sessions: Vec<Session>,
}

/// The file as written.
#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    sessions: Vec<&'a Session>,
}

impl SessionStore {
    /// Restores `path`, drops sessions idle longer than `timeout` at `now`, moves an
    /// unreadable file aside, and spawns the writer on `tracker`. Must be called inside a
    /// Tokio runtime. Reading is blocking but small; it happens once at start-up.
    pub fn open(
        path: PathBuf,
        timeout: Duration,
        now: DateTime<Utc>,
        tracker: &TaskTracker,
    ) -> Result<(SessionStore, LoadReport), SessionsError> {
        Self::open_with(path, timeout, now, tracker, Arc::new(persist::write_atomic))
    }

    fn open_with(
        path: PathBuf,
        timeout: Duration,
        now: DateTime<Utc>,
        tracker: &TaskTracker,
        write: WriteFn,
    ) -> Result<(SessionStore, LoadReport), SessionsError> {
        let mut report = LoadReport::default();
        let restored = read_file(&path, &mut report)?;
        let timeout = TimeDelta::from_std(timeout).unwrap_or(TimeDelta::MAX);
        let mut sessions = HashMap::new();
        let mut repaired = 0;
        for mut session in restored {
            // Transcripts saved by older versions may break the API's rules: fixed once here.
            if crate::transcript::repair(&mut session.transcript) {
                tracing::info!(chat = ?session.chat.guid, "repaired a saved transcript the API would refuse");
                repaired += 1;
            }
            if now.signed_duration_since(session.last_activity) > timeout {
                tracing::debug!(chat = ?session.chat.guid, "dropping expired session on load");
                report.expired += 1;
                continue;
            }
            sessions.insert(session.chat.guid.clone(), Arc::new(session));
        }
        report.loaded = sessions.len();

        // Dropped sessions are still in the file, or there is no file yet: mark the map as
        // ahead of the disk so the writer's first pass (re)writes it, at start rather than
        // with the first text.
        let (version, saved) = if report.expired > 0 || repaired > 0 || !path.exists() {
            (1, 0)
        } else {
            (0, 0)
        };
        let (status_tx, status_rx) = watch::channel(WriterStatus {
            saved,
            ..WriterStatus::default()
        });
        // What the file holds, when it is exactly what a save would write now.
        let last = (version == 0 && path.exists())
            .then(|| serialise(&path, &mut sessions.values().cloned().collect::<Vec<_>>()).ok())
            .flatten()
            .map(|bytes| digest(&bytes));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (wake, wake_rx) = watch::channel(());
        let inner = Arc::new(Inner {
            path,
            map: Mutex::new(MapState {
                sessions,
                unsaved: HashMap::new(),
                version,
            }),
            events,
            wake,
            closed: AtomicBool::new(false),
            flush_requests: AtomicU64::new(0),
            status: status_rx,
        });
        tracker.spawn(run_writer(
            Arc::clone(&inner),
            wake_rx,
            status_tx,
            write,
            saved,
            last,
        ));
        Ok((
            SessionStore {
                handle: Arc::new(Handle(inner)),
            },
            report,
        ))
    }

    fn inner(&self) -> &Inner {
        &self.handle.0
    }

    /// A copy of the session of the chat with this guid.
    pub fn get(&self, chat: &str) -> Option<Session> {
        let found = self.inner().lock().sessions.get(chat).cloned();
        found.map(|session| Session::clone(&session))
    }

    /// Creates or replaces the session of `session.chat`.
    pub fn put(&self, session: Session) {
        self.insert(session, true);
    }

    /// Creates or replaces the session of `session.chat` in memory only (listeners are told
    /// as for [`put`](Self::put)): the file keeps the session's last saved form (or none),
    /// through later saves, flushes and the close, until a [`put`](Self::put) or a removal.
    /// For a state the ledger recreates, such as a run's [`SessionState::Working`]: a text cut
    /// off by a crash or a stop is run again from its claim and the session as last saved.
    /// A text captured in one run then writes nothing.
    pub fn put_unsaved(&self, session: Session) {
        self.insert(session, false);
    }

    fn insert(&self, session: Session, save: bool) {
        let guid = session.chat.guid.clone();
        let session = Arc::new(session);
        let replaced = self.mutate(save, |state, events| {
            if save {
                state.unsaved.remove(&guid);
            } else if !state.unsaved.contains_key(&guid) {
                let saved = state.sessions.get(&guid).cloned();
                state.unsaved.insert(guid.clone(), saved);
            }
            let replaced = state.sessions.insert(guid.clone(), session);
            let _ = events.send(SessionEvent::Changed(guid));
            (replaced, true)
        });
        // Dropped outside the lock: freeing a long transcript is not free.
        drop(replaced);
    }

    /// Removes the session of the chat with this guid and returns it.
    pub fn remove(&self, chat: &str) -> Option<Session> {
        let removed = self.mutate(true, |state, events| {
            let removed = state.sessions.remove(chat);
            state.unsaved.remove(chat);
            if removed.is_some() {
                let _ = events.send(SessionEvent::Removed(chat.to_string()));
            }
            let changed = removed.is_some();
            (removed, changed)
        });
        removed.map(|session| Arc::try_unwrap(session).unwrap_or_else(|s| Session::clone(&s)))
    }

    /// Removes every session and returns how many there were.
    pub fn clear_all(&self) -> usize {
        let cleared = self.mutate(true, |state, events| {
            let cleared = std::mem::take(&mut state.sessions);
            state.unsaved.clear();
            if !cleared.is_empty() {
                let _ = events.send(SessionEvent::Cleared);
            }
            let changed = !cleared.is_empty();
            (cleared, changed)
        });
        cleared.len()
    }

    /// Every session, most recent activity first.
    pub fn list(&self) -> Vec<Session> {
        let mut all = self.snapshot();
        all.sort_by(|a, b| {
            b.last_activity
                .cmp(&a.last_activity)
                .then_with(|| a.chat.guid.cmp(&b.chat.guid))
        });
        all.iter().map(|s| Session::clone(s)).collect()
    }

    /// The sessions whose last activity is before `cutoff`, least recent first.
    pub fn idle_since(&self, cutoff: DateTime<Utc>) -> Vec<Session> {
        let mut idle: Vec<_> = self
            .snapshot()
            .into_iter()
            .filter(|s| s.last_activity < cutoff)
            .collect();
        idle.sort_by(|a, b| {
            a.last_activity
                .cmp(&b.last_activity)
                .then_with(|| a.chat.guid.cmp(&b.chat.guid))
        });
        idle.iter().map(|s| Session::clone(s)).collect()
    }

    /// How many sessions there are.
    pub fn len(&self) -> usize {
        self.inner().lock().sessions.len()
    }

    /// Whether there is no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events for every later change, in the order the changes were made.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner().events.subscribe()
    }

    /// Returns once every change made before the call is on disk, or the error of the save
    /// attempt that should have written it. A failed save is retried by this call.
    pub async fn flush(&self) -> Result<(), SessionsError> {
        let inner = self.inner();
        let target = inner.lock().version;
        let mut status = inner.status.clone();
        if status.borrow().saved >= target {
            return Ok(());
        }
        let ticket = inner.flush_requests.fetch_add(1, Ordering::SeqCst) + 1;
        inner.wake.send_replace(());
        let waited = status
            .wait_for(|s| s.saved >= target || s.served >= ticket || s.stopped)
            .await
            .map(|s| s.clone());
        let seen = match waited {
            Ok(seen) => seen,
            Err(_) => status.borrow().clone(),
        };
        if seen.saved >= target {
            return Ok(());
        }
        // Served: a save was attempted after this call and failed. Not served: the writer
        // stopped first.
        let err = if seen.served >= ticket {
            seen.error
        } else {
            None
        };
        Err(err.unwrap_or_else(|| SessionsError::WriterStopped {
            path: inner.path.clone(),
        }))
    }

    /// Asks the writer to save what is left and stop, so that the task tracker can finish.
    /// Changes made afterwards stay in memory only.
    pub fn close(&self) {
        self.inner().close();
    }

    /// The file the sessions are saved to.
    pub fn path(&self) -> &Path {
        &self.inner().path
    }

    fn snapshot(&self) -> Vec<Arc<Session>> {
        self.inner().lock().sessions.values().cloned().collect()
    }

    /// Runs one map operation under the lock; when it reports a change that `save` asks to
    /// keep, bumps the version and wakes the writer (after unlocking).
    fn mutate<R>(
        &self,
        save: bool,
        op: impl FnOnce(&mut MapState, &broadcast::Sender<SessionEvent>) -> (R, bool),
    ) -> R {
        let inner = self.inner();
        let (result, changed) = {
            let mut state = inner.lock();
            // Events are sent under the lock so that subscribers see them in map order.
            let (result, changed) = op(&mut state, &inner.events);
            if changed && save {
                state.version += 1;
            }
            (result, changed)
        };
        if changed && save {
            if inner.closed.load(Ordering::Relaxed) {
                tracing::warn!(path = ?inner.path, "session changed after close; not saved");
            }
            inner.wake.send_replace(());
        }
        result
    }
}

/// Reads the sessions saved in `path`; an unreadable file (or one of another version) is
/// moved aside and reported in `report`, and nothing is restored.
fn read_file(path: &Path, report: &mut LoadReport) -> Result<Vec<Session>, SessionsError> {
    let read_error = |source| SessionsError::Read {
        path: path.to_path_buf(),
        source: Arc::new(source),
    };
    let loaded = persist::load_json::<FileIn>(path).map_err(read_error)?;
    let restored = match loaded.value(StateFile::Sessions, &mut report.moved_aside) {
        None => Vec::new(),
        Some(file) if file.version == FILE_VERSION => file.sessions,
        Some(file) => {
            let reason = format!(
                "unsupported sessions file version {} (expected {FILE_VERSION})",
                file.version
            );
            let moved =
                persist::set_aside(path, StateFile::Sessions, reason).map_err(read_error)?;
            report.moved_aside = Some(moved);
            Vec::new()
        }
    };
    if report.moved_aside.is_some() {
        tracing::warn!(path = ?path, "sessions file unreadable; starting without sessions");
    }
    Ok(restored)
}

/// How long the writer lets a burst of changes settle before saving (unless a flush or
/// close asks): a text handled within it (session made, then ended) costs no write at all.
/// Short enough that a change is on disk well within the 100 ms `make bench` allows.
const SETTLE: Duration = Duration::from_millis(75);

/// The single writer: saves whenever woken and the map is ahead of the disk.
async fn run_writer(
    inner: Arc<Inner>,
    mut wake: watch::Receiver<()>,
    status: watch::Sender<WriterStatus>,
    write: WriteFn,
    mut saved: u64,
    mut last: Option<Digest>,
) {
    let mut error: Option<SessionsError> = None;
    loop {
        // Read before the snapshot, so that everything asked for so far is covered by it.
        wake.borrow_and_update();
        let closing = inner.closed.load(Ordering::SeqCst);
        let served = inner.flush_requests.load(Ordering::SeqCst);
        let (snapshot, version) = {
            let state = inner.lock();
            (state.to_save(), state.version)
        };
        if version > saved {
            let path = inner.path.clone();
            let write = Arc::clone(&write);
            // Serialising a long transcript and fsync are blocking work.
            let result = tokio::task::spawn_blocking(move || save(&path, snapshot, &*write, last))
                .await
                .unwrap_or_else(|join| {
                    Err(SessionsError::Interrupted {
                        path: inner.path.clone(),
                        reason: join.to_string(),
                    })
                });
            match result {
                Ok(done) => {
                    tracing::debug!(path = ?inner.path, sessions = done.count, bytes = done.bytes,
                        written = done.written, version, "sessions saved");
                    (saved, last, error) = (version, Some(done.digest), None);
                }
                Err(err) => {
                    tracing::error!(cause = %err, version, "sessions not saved; will retry on the next change");
                    error = Some(err);
                }
            }
        }
        status.send_replace(WriterStatus {
            saved,
            served,
            error: error.clone(),
            stopped: closing,
        });
        if closing {
            tracing::debug!(path = ?inner.path, "sessions writer stopped");
            return;
        }
        if wake.changed().await.is_err() {
            return; // unreachable: `inner` owns the sender
        }
        settle(&inner, &mut wake, served).await;
    }
}

/// Waits [`SETTLE`] for more changes, or less when a flush or close asks.
async fn settle(inner: &Inner, wake: &mut watch::Receiver<()>, served: u64) {
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        if inner.closed.load(Ordering::SeqCst)
            || inner.flush_requests.load(Ordering::SeqCst) > served
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            changed = wake.changed() => if changed.is_err() { return },
        }
    }
}

/// A SHA-256 of the bytes last written, so an unchanged file is not written again.
type Digest = [u8; 32];

/// What one save did.
struct Saved {
    count: usize,
    bytes: usize,
    /// Whether the bytes differed from the file's, so were written.
    written: bool,
    digest: Digest,
}

/// Serialises the sessions sorted by chat guid, so equal maps give equal bytes.
fn serialise(path: &Path, sessions: &mut [Arc<Session>]) -> Result<Vec<u8>, SessionsError> {
    sessions.sort_by(|a, b| a.chat.guid.cmp(&b.chat.guid));
    let file = FileOut {
        version: FILE_VERSION,
        sessions: sessions.iter().map(|s| &**s).collect(),
    };
    serde_json::to_vec(&file).map_err(|source| SessionsError::Serialise {
        path: path.to_path_buf(),
        source: Arc::new(source),
    })
}

fn digest(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Serialises the sessions and writes them, unless the file already holds those bytes
/// (`last`).
fn save(
    path: &Path,
    mut sessions: Vec<Arc<Session>>,
    write: &(dyn Fn(&Path, &[u8]) -> io::Result<()> + Send + Sync),
    last: Option<Digest>,
) -> Result<Saved, SessionsError> {
    let bytes = serialise(path, &mut sessions)?;
    let hash = digest(&bytes);
    let written = last != Some(hash);
    if written {
        write(path, &bytes).map_err(|source| SessionsError::Write {
            path: path.to_path_buf(),
            source: Arc::new(source),
        })?;
    }
    Ok(Saved {
        count: sessions.len(),
        bytes: bytes.len(),
        written,
        digest: hash,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc as std_mpsc;

    use serde_json::json;
    use tokio::sync::mpsc;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn chat(n: usize) -> Chat {
        Chat {
            guid: format!("iMessage;-;+1555000{n:04}"),
            identifier: format!("+1555000{n:04}"),
            is_group: false,
        }
    }

    fn session(n: usize, last_activity: DateTime<Utc>) -> Session {
        let mut s = Session::new(chat(n), format!("+1555000{n:04}"), last_activity);
        s.message_count = n as u32;
        s
    }

    /// Texts that have broken serialisers before: quotes, control characters, emoji with a
    /// skin tone, an astral-plane symbol, right-to-left script, separators, empty.
    const TRICKY: &[&str] = &[
        "",
        "say \"hi\" \\ back",
        "line one\r\nline two\nline three\r",
        "para\u{2028}graph\u{2029}end",
        "wave 👋🏽 family 👨‍👩‍👧 music 𝄞",
        "مرحبا بالعالم",
        "tab\tnul-free \u{7f} end",
    ];

    fn tricky_session(n: usize, at: DateTime<Utc>, text: &str) -> Session {
        let mut s = session(n, at);
        s.state = SessionState::Waiting {
            original: text.to_string(),
            question: Some(format!("{text}?")),
        };
        // Text blocks the API accepts (none empty), so loading leaves them as they are.
        s.transcript = vec![
            json!({"role": "user", "content": format!("«{text}»")}),
            json!({"role": "assistant", "content": [{"type": "text", "text": format!("«{text}»")}]}),
        ];
        s.input_tokens = u64::MAX;
        s.output_tokens = 7;
        s
    }

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn file_guids(path: &Path) -> Vec<String> {
        read_json(path)["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["chat"]["guid"].as_str().unwrap().to_string())
            .collect()
    }

    fn dir_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn write_file(path: &Path, sessions: &[Session]) {
        let file = FileOut {
            version: FILE_VERSION,
            sessions: sessions.iter().collect(),
        };
        std::fs::write(path, serde_json::to_vec(&file).unwrap()).unwrap();
    }

    async fn shut_down(store: SessionStore, tracker: TaskTracker) {
        store.close();
        drop(store);
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn sessions_survive_a_restart_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let (store, report) = SessionStore::open(path.clone(), HOUR, now(), &tracker).unwrap();
        assert_eq!(report, LoadReport::default());
        assert!(store.is_empty());
        let expected: Vec<Session> = TRICKY
            .iter()
            .enumerate()
            .map(|(n, t)| tricky_session(n, now(), t))
            .collect();
        for s in &expected {
            store.put(s.clone());
        }
        store.flush().await.unwrap();
        let file = read_json(&path);
        assert_eq!(file["version"], 1);
        assert_eq!(file["sessions"][0]["state"], "waiting");
        shut_down(store, tracker).await;

        let tracker = TaskTracker::new();
        let (store, report) = SessionStore::open(path.clone(), HOUR, now(), &tracker).unwrap();
        assert_eq!(
            report,
            LoadReport {
                loaded: expected.len(),
                expired: 0,
                moved_aside: None
            }
        );
        for s in &expected {
            assert_eq!(
                store.get(&s.chat.guid).as_ref(),
                Some(s),
                "text {:?}",
                s.state.original()
            );
        }
        shut_down(store, tracker).await;
    }

    #[tokio::test]
    async fn sessions_idle_longer_than_the_timeout_are_dropped_on_load_and_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let one_hour = TimeDelta::hours(1);
        write_file(
            &path,
            &[
                session(1, now() - TimeDelta::hours(2)),
                session(2, now() - TimeDelta::minutes(30)),
                session(3, now() - one_hour - TimeDelta::seconds(1)),
                session(4, now() - one_hour),
                // A clock that went backwards must not expire anything.
                session(5, now() + one_hour),
            ],
        );
        let tracker = TaskTracker::new();
        let (store, report) = SessionStore::open(path.clone(), HOUR, now(), &tracker).unwrap();
        assert_eq!(
            report,
            LoadReport {
                loaded: 3,
                expired: 2,
                moved_aside: None
            }
        );
        assert!(store.get(&chat(1).guid).is_none());
        assert!(store.get(&chat(3).guid).is_none());
        store.flush().await.unwrap();
        assert_eq!(
            file_guids(&path),
            vec![chat(2).guid, chat(4).guid, chat(5).guid]
        );
        shut_down(store, tracker).await;
    }

    #[tokio::test]
    async fn unreadable_files_are_moved_aside_and_the_store_starts_empty() {
        let cases: &[(&[u8], &str)] = &[
            (b"{ not json", "line 1"),
            (b"", "EOF"),
            (b"{\"version\":2,\"sessions\":[]}", "version 2"),
            (
                b"{\"version\":1,\"sessions\":[{\"chat\":1}]}",
                "invalid type",
            ),
        ];
        for (bytes, reason_part) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("sessions.json");
            std::fs::write(&path, bytes).unwrap();
            let tracker = TaskTracker::new();
            let (store, report) = SessionStore::open(path.clone(), HOUR, now(), &tracker).unwrap();
            let MovedAside {
                file,
                moved_to,
                reason,
            } = report.moved_aside.clone().expect("moved aside");
            assert_eq!(file, StateFile::Sessions);
            assert!(
                reason.contains(reason_part),
                "{reason:?} should mention {reason_part:?}"
            );
            assert_eq!(
                std::fs::read(&moved_to).unwrap(),
                *bytes,
                "the bad file is kept"
            );
            assert_eq!((report.loaded, report.expired), (0, 0));
            assert!(store.is_empty());
            assert!(!path.exists());

            store.put(session(1, now()));
            store.flush().await.unwrap();
            assert_eq!(file_guids(&path), vec![chat(1).guid]);
            assert_eq!(
                std::fs::read(&moved_to).unwrap(),
                *bytes,
                "still kept after a save"
            );
            shut_down(store, tracker).await;
        }
    }

    /// Wraps `write_atomic`, counting calls and keeping each payload.
    fn recording_writer() -> (WriteFn, Arc<Mutex<Vec<Vec<u8>>>>) {
        let writes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&writes);
        let write: WriteFn = Arc::new(move |path: &Path, bytes: &[u8]| {
            seen.lock().unwrap().push(bytes.to_vec());
            persist::write_atomic(path, bytes)
        });
        (write, writes)
    }

    /// Issue 8: a text handled within the settle time (its session made, then ended)
    /// writes nothing when the file already holds the result; a flush does not wait.
    #[tokio::test(start_paused = true)]
    async fn a_session_made_and_ended_within_the_settle_time_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let (write, writes) = recording_writer();
        let (store, _) =
            SessionStore::open_with(path.clone(), HOUR, now(), &tracker, write.clone()).unwrap();
        store.put(session(1, now()));
        store.flush().await.unwrap();
        assert_eq!(writes.lock().unwrap().len(), 1, "a flush writes at once");
        store.remove(&chat(1).guid);
        store.flush().await.unwrap();
        assert_eq!(writes.lock().unwrap().len(), 2);
        shut_down(store, tracker).await;

        // Reopened: the file is known to hold exactly the map.
        let tracker = TaskTracker::new();
        let (store, _) =
            SessionStore::open_with(path.clone(), HOUR, now(), &tracker, write).unwrap();
        // The writer starts and waits for a change, as it has long before the first text.
        tokio::task::yield_now().await;
        for n in 0..20 {
            store.put(session(n, now()));
            tokio::time::sleep(SETTLE / 100).await;
            store.remove(&chat(n).guid);
        }
        tokio::time::sleep(SETTLE * 4).await;
        store.flush().await.unwrap();
        assert_eq!(writes.lock().unwrap().len(), 2, "nothing new to write");
        store.put(session(7, now()));
        tokio::time::sleep(SETTLE * 2).await;
        let written = writes.lock().unwrap().clone();
        assert_eq!(
            written.len(),
            3,
            "a change that stays is written after the settle time"
        );
        assert_eq!(std::fs::read(&path).unwrap(), written[2]);
        shut_down(store, tracker).await;
    }

    /// Issue 8: a run's working state is never saved: a text captured in one run (session
    /// put unsaved, then ended) writes nothing however long it takes, and saves of other
    /// sessions meanwhile (texts back to back) and the close keep its last saved form.
    #[tokio::test(start_paused = true)]
    async fn an_unsaved_working_session_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        write_file(&path, &[session(2, now())]);
        let tracker = TaskTracker::new();
        let (write, writes) = recording_writer();
        let (store, _) =
            SessionStore::open_with(path.clone(), HOUR, now(), &tracker, write).unwrap();
        // The writer starts and waits for a change, as it has long before the first text.
        tokio::task::yield_now().await;
        let mut events = store.subscribe();
        store.put_unsaved(session(1, now()));
        assert_eq!(
            events.recv().await.unwrap(),
            SessionEvent::Changed(chat(1).guid)
        );
        assert_eq!(store.len(), 2, "listed while it works");
        tokio::time::sleep(SETTLE * 40).await;
        store.flush().await.unwrap();
        assert!(
            writes.lock().unwrap().is_empty(),
            "a working state alone is not written"
        );
        store.remove(&chat(1).guid);
        tokio::time::sleep(SETTLE * 4).await;
        store.flush().await.unwrap();
        assert!(
            writes.lock().unwrap().is_empty(),
            "the disk already held the result"
        );

        // A saved change while another session works, and a working update of a saved one:
        // the file has the saved forms only.
        let later = now() + TimeDelta::minutes(5);
        store.put_unsaved(session(1, later));
        store.put_unsaved(session(2, later));
        store.put(session(3, now()));
        store.flush().await.unwrap();
        assert_eq!(file_guids(&path), vec![chat(2).guid, chat(3).guid]);
        let on_disk: FileIn = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            on_disk.sessions[0],
            session(2, now()),
            "session 2 as last saved"
        );
        assert_eq!(
            store.get(&chat(2).guid),
            Some(session(2, later)),
            "memory is live"
        );
        // Its outcome saves it.
        store.put(session(2, later));
        store.flush().await.unwrap();
        let on_disk: FileIn = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk.sessions[0], session(2, later));
        assert_eq!(writes.lock().unwrap().len(), 2);
        shut_down(store, tracker).await;
        assert_eq!(
            file_guids(&path),
            vec![chat(2).guid, chat(3).guid],
            "the close keeps session 1 out: it was only ever working"
        );
    }

    #[tokio::test]
    async fn a_thousand_rapid_mutations_coalesce_into_a_file_equal_to_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let (write, writes) = recording_writer();
        let (store, _) =
            SessionStore::open_with(path.clone(), HOUR, now(), &tracker, write).unwrap();
        for i in 0..1000usize {
            let n = (i * 7919) % 53;
            let at = now() + TimeDelta::seconds(i as i64);
            match i % 5 {
                0 => {
                    store.remove(&chat(n).guid);
                }
                _ => store.put(tricky_session(n, at, TRICKY[i % TRICKY.len()])),
            }
        }
        store.flush().await.unwrap();
        // The writer never ran while the loop held the (single) runtime thread: one save.
        assert_eq!(writes.lock().unwrap().len(), 1);
        let mut expected = store.list();
        expected.sort_by(|a, b| a.chat.guid.cmp(&b.chat.guid));
        let on_disk: FileIn = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk.sessions, expected);
        assert_eq!(
            dir_names(dir.path()),
            vec!["sessions.json"],
            "no temporary file left"
        );

        // A second burst after the first save is saved too, again as one write.
        for n in 0..10 {
            store.put(session(n, now()));
        }
        store.flush().await.unwrap();
        assert_eq!(writes.lock().unwrap().len(), 2);
        let on_disk: FileIn = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk.sessions.len(), store.len());
        shut_down(store, tracker).await;
    }

    #[tokio::test]
    async fn flush_after_remove_and_clear_all_persists_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let (store, _) = SessionStore::open(path.clone(), HOUR, now(), &tracker).unwrap();
        for n in 1..=3 {
            store.put(session(n, now()));
        }
        store.flush().await.unwrap();
        assert_eq!(file_guids(&path).len(), 3);

        let removed = store.remove(&chat(2).guid).unwrap();
        assert_eq!(removed, session(2, now()));
        assert!(store.remove(&chat(2).guid).is_none());
        store.flush().await.unwrap();
        assert_eq!(file_guids(&path), vec![chat(1).guid, chat(3).guid]);

        assert_eq!(store.clear_all(), 2);
        assert_eq!(store.clear_all(), 0);
        store.flush().await.unwrap();
        assert_eq!(file_guids(&path), Vec::<String>::new());
        assert!(store.is_empty());
        shut_down(store, tracker).await;
    }

    #[tokio::test]
    async fn every_change_is_broadcast_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = TaskTracker::new();
        let (store, _) =
            SessionStore::open(dir.path().join("sessions.json"), HOUR, now(), &tracker).unwrap();
        let mut events = store.subscribe();
        store.put(session(1, now()));
        store.put(session(1, now()));
        store.put(session(2, now()));
        store.remove(&chat(1).guid);
        store.remove(&chat(1).guid); // nothing to remove: no event
        store.clear_all();
        store.clear_all(); // already empty: no event
        store.put(session(3, now()));
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        assert_eq!(
            seen,
            vec![
                SessionEvent::Changed(chat(1).guid),
                SessionEvent::Changed(chat(1).guid),
                SessionEvent::Changed(chat(2).guid),
                SessionEvent::Removed(chat(1).guid),
                SessionEvent::Cleared,
                SessionEvent::Changed(chat(3).guid),
            ]
        );
        shut_down(store, tracker).await;
    }

    #[tokio::test]
    async fn mutations_do_not_wait_for_a_slow_disk_and_saves_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let (started_tx, mut started) = mpsc::unbounded_channel::<Vec<u8>>();
        let (release, release_rx) = std_mpsc::channel::<()>();
        let release_rx = Mutex::new(release_rx);
        // The disk: announces each write, then blocks until released (or the test lets go).
        let write: WriteFn = Arc::new(move |path: &Path, bytes: &[u8]| {
            let _ = started_tx.send(bytes.to_vec());
            let _ = release_rx.lock().unwrap().recv();
            persist::write_atomic(path, bytes)
        });
        let (store, _) =
            SessionStore::open_with(path.clone(), HOUR, now(), &tracker, write).unwrap();

        store.put(session(1, now()));
        let flusher = store.clone();
        let first_flush = tokio::spawn(async move { flusher.flush().await });
        let first_write = started.recv().await.unwrap();

        // The writer is stuck inside the disk write. Every mutation still completes.
        for n in 2..=100 {
            store.put(session(n, now()));
        }
        assert!(store.remove(&chat(50).guid).is_some());
        assert_eq!(store.len(), 99);
        assert_eq!(store.get(&chat(100).guid), Some(session(100, now())));
        assert!(!path.exists(), "nothing on disk yet");

        release.send(()).unwrap();
        first_flush.await.unwrap().unwrap();
        assert_eq!(
            file_guids(&path),
            vec![chat(1).guid],
            "the first save is the first snapshot"
        );
        drop(release); // the disk is fast from now on
        store.flush().await.unwrap();
        let second_write = started.recv().await.unwrap();

        let first: FileIn = serde_json::from_slice(&first_write).unwrap();
        assert_eq!(first.sessions.len(), 1);
        let second: FileIn = serde_json::from_slice(&second_write).unwrap();
        assert_eq!(second.sessions.len(), 99);
        assert_eq!(file_guids(&path).len(), 99);
        assert!(
            started.try_recv().is_err(),
            "the later changes coalesced into one save"
        );
        shut_down(store, tracker).await;
    }

    #[tokio::test]
    async fn a_failed_save_is_reported_by_flush_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let failures = Arc::new(AtomicUsize::new(2));
        let left = Arc::clone(&failures);
        let write: WriteFn = Arc::new(move |path: &Path, bytes: &[u8]| {
            if left.load(Ordering::SeqCst) > 0 {
                left.fetch_sub(1, Ordering::SeqCst);
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            persist::write_atomic(path, bytes)
        });
        let (store, _) =
            SessionStore::open_with(path.clone(), HOUR, now(), &tracker, write).unwrap();
        store.put(session(1, now()));

        let err = store.flush().await.unwrap_err();
        let SessionsError::Write { source, .. } = &err else {
            panic!("typed as a write failure: {err:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::StorageFull);
        let message = err.to_string();
        assert!(message.contains("could not save sessions"), "{message}");
        assert!(
            message.contains("sessions.json") && message.contains("disk full"),
            "{message}"
        );
        assert!(!path.exists());
        assert_eq!(store.len(), 1, "the map keeps the change");

        // The next flush tries again (and fails again), the one after succeeds.
        assert!(store.flush().await.is_err());
        store.flush().await.unwrap();
        assert_eq!(file_guids(&path), vec![chat(1).guid]);
        assert_eq!(failures.load(Ordering::SeqCst), 0);
        shut_down(store, tracker).await;
    }

    #[tokio::test]
    async fn close_saves_what_is_left_and_lets_the_tracker_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let (store, _) = SessionStore::open(path.clone(), HOUR, now(), &tracker).unwrap();
        let other = store.clone();
        store.put(session(1, now()));
        store.close();
        tracker.close();
        tracker.wait().await;
        assert_eq!(file_guids(&path), vec![chat(1).guid]);

        // After close the map still works, but flush says the change is not on disk.
        other.put(session(2, now()));
        let err = other.flush().await.unwrap_err();
        assert!(err.to_string().contains("stopped"), "{err}");
        assert_eq!(file_guids(&path), vec![chat(1).guid]);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_saves_and_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.json");
        let tracker = TaskTracker::new();
        let (store, _) = SessionStore::open(path.clone(), HOUR, now(), &tracker).unwrap();
        let clone = store.clone();
        store.put(session(1, now()));
        drop(store);
        clone.put(session(2, now()));
        drop(clone);
        tracker.close();
        tracker.wait().await;
        assert_eq!(file_guids(&path), vec![chat(1).guid, chat(2).guid]);
    }

    #[tokio::test]
    async fn list_is_most_recent_first_and_idle_since_is_least_recent_first() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = TaskTracker::new();
        let (store, _) =
            SessionStore::open(dir.path().join("sessions.json"), HOUR, now(), &tracker).unwrap();
        for (n, minutes_ago) in [(1, 5), (2, 90), (3, 0), (4, 61), (5, 60)] {
            store.put(session(n, now() - TimeDelta::minutes(minutes_ago)));
        }
        let listed: Vec<_> = store.list().into_iter().map(|s| s.message_count).collect();
        assert_eq!(listed, vec![3, 1, 5, 4, 2]);
        let idle: Vec<_> = store
            .idle_since(now() - TimeDelta::minutes(60))
            .into_iter()
            .map(|s| s.message_count)
            .collect();
        assert_eq!(idle, vec![2, 4], "strictly before the cutoff");
        assert_eq!(store.len(), 5);
        shut_down(store, tracker).await;
    }

    #[test]
    fn state_serialises_lower_case() {
        for (state, text) in [
            (StateKind::Working, "\"working\""),
            (StateKind::Waiting, "\"waiting\""),
            (StateKind::Idle, "\"idle\""),
        ] {
            assert_eq!(serde_json::to_string(&state).unwrap(), text);
            assert_eq!(serde_json::from_str::<StateKind>(text).unwrap(), state);
        }
    }

    /// Issue 8: the state carries its data, and `sessions.json` keeps its documented flat
    /// form: a file written by an earlier version loads into the same state, and is written
    /// back in the same shape.
    #[test]
    fn sessions_json_keeps_its_documented_form_both_ways() {
        let old = json!({
            "chat": { "guid": "iMessage;-;+15551234567", "identifier": "+15551234567", "is_group": false },
            "sender": "+15551234567",
            "transcript": [],
            "pending_input": "dinner with sam",
            "question": "Which day?",
            "state": "waiting",
            "created_at": "2026-01-02T03:04:05Z",
            "last_activity": "2026-01-02T03:04:05Z",
            "message_count": 1,
            "input_tokens": 10,
            "output_tokens": 2
        });
        let session: Session = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(
            session.state,
            SessionState::Waiting {
                original: "dinner with sam".into(),
                question: Some("Which day?".into())
            }
        );
        assert_eq!(serde_json::to_value(&session).unwrap(), old);
        let mut working = old.clone();
        working["state"] = json!("working");
        working["question"] = Value::Null;
        let session: Session = serde_json::from_value(working).unwrap();
        assert_eq!(
            session.state,
            SessionState::Working {
                original: Some("dinner with sam".into())
            }
        );
        let mut idle = old;
        idle["state"] = json!("idle");
        for field in ["pending_input", "question", "transcript", "message_count"] {
            idle.as_object_mut().unwrap().remove(field);
        }
        let session: Session = serde_json::from_value(idle).unwrap();
        assert_eq!(session.state, SessionState::Idle);
        assert_eq!(session.shown_text(), None);
    }
}
