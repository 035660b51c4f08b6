//! The Second Brain iMessage bridge.
//!
//! One text's trip, one module per stage: [`watcher`] says when to look, [`intake`] reads new
//! rows with [`chatdb`] (decoding [`typedstream`] bodies), admits senders on the
//! [`allowlist`] and claims each text in the [`ledger`]; the [`router`] queues each
//! conversation in order; [`conversation`] applies the [`limits`], runs the [`agent`] over
//! the [`anthropic`] API with the [`tools`] that write to the [`vault`] and reply through the
//! [`outbox`] and the [`sender`], and keeps each conversation in [`sessions`].
//!
//! The crate has no GUI dependency: the headless CLI drives it through [`Bridge`], the
//! menu-bar app through the [`supervisor`], which owns the bridge's lifecycle for a front end.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod allowlist;
pub mod anthropic;
pub mod attachments;
pub mod chatdb;
pub mod config;
pub mod conversation;
pub mod digest;
pub mod doctor;
pub mod echoes;
pub mod intake;
pub mod ledger;
pub mod limits;
pub mod lock;
pub mod logging;
pub mod login_item;
pub mod migrate;
pub mod mutex;
pub mod outbox;
pub mod persist;
pub mod prompt;
pub mod reminders;
pub mod router;
pub mod search;
pub mod secrets;
pub mod sender;
pub mod sessions;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod tools;
pub mod transcript;
pub mod typedstream;
pub mod vault;
pub mod watcher;

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{Local, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Config;
use crate::conversation::{Conversations, Waiting};
use crate::intake::Intake;
use crate::ledger::Ledger;
use crate::limits::{Budget, RateLimiter};
use crate::lock::DataDirLock;
use crate::router::{Job, Router};
use crate::sessions::SessionStore;
use crate::state::StateDb;
use crate::status::{SetAside, State, StatusBoard};

/// How long shutdown waits for in-flight work.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another bridge owns the data directory.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The sessions file could not be read.
    #[error(transparent)]
    Sessions(#[from] sessions::SessionsError),
    /// The state database could not be opened.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    /// The token budget could not be read.
    #[error(transparent)]
    Budget(#[from] limits::LimitsError),
    /// An old state file could not be moved into the state database.
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
    /// The echo memory could not be opened.
    #[error("echo memory {path}: {source}")]
    Echoes {
        /// Where.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The API client could not be built.
    #[error(transparent)]
    Api(#[from] anthropic::Error),
}

/// A bridge whose state is open and locked, ready to [`run`](Bridge::run).
pub struct Bridge {
    config: Config,
    _lock: DataDirLock,
    sessions: SessionStore,
    ledger: Arc<Ledger>,
    budget: Arc<Budget>,
    status: StatusBoard,
    paused: watch::Sender<bool>,
    writer: TaskTracker,
}

/// What [`Bridge::run`] starts once the setup is complete.
struct Running {
    conversations: Arc<Conversations>,
    echoes: Arc<echoes::Echoes>,
    index: search::Index,
}

impl Bridge {
    /// Locks the data directory and restores sessions, the ledger and the token budget
    /// (moving old `ledger.json` / `budget.json` into the state database). Files that do not
    /// parse are moved aside and reported in the status (every one of them, in
    /// `moved_aside`); the bridge still starts.
    pub fn open(config: Config) -> Result<Bridge, Error> {
        let lock = DataDirLock::acquire(&config.data_dir)?;
        remove_leftover_temporaries(&config.data_dir);
        let status = StatusBoard::new(Some(config.data_dir.join("status.json")));
        let writer = TaskTracker::new();
        let path = config.data_dir.join("sessions.json");
        let (sessions, report) =
            SessionStore::open(path, config.session_timeout, Utc::now(), &writer)?;
        info!(
            loaded = report.loaded,
            expired = report.expired,
            "sessions restored"
        );
        let mut aside: Vec<SetAside> = report.moved_aside.into_iter().map(SetAside::File).collect();
        let (ledger, budget) = open_state(&config, &mut aside)?;
        aside.extend(config.settings_problem.clone().map(SetAside::Other));
        for problem in &aside {
            warn!(problem = %problem, "state file problem");
        }
        let tokens_today = budget.used(Local::now().date_naive());
        status.update(|s| {
            s.sessions = sessions.len();
            s.last_error = aside.last().map(ToString::to_string);
            s.moved_aside = aside;
            s.tokens_today = tokens_today;
        });
        // What start-up found is on disk before anyone is told the bridge is ready.
        status.blocking_flush();
        Ok(Bridge {
            config,
            _lock: lock,
            sessions,
            ledger: Arc::new(ledger),
            budget: Arc::new(budget),
            status,
            paused: watch::Sender::new(false),
            writer,
        })
    }

    /// The conversation store (the app lists and clears sessions through it).
    pub fn sessions(&self) -> SessionStore {
        self.sessions.clone()
    }

    /// The status board.
    pub fn status(&self) -> StatusBoard {
        self.status.clone()
    }

    /// Pauses or resumes reading new texts (they wait in chat.db meanwhile).
    pub fn pauser(&self) -> watch::Sender<bool> {
        self.paused.clone()
    }

    /// Runs until `shutdown` completes, then stops intake, lets in-flight work finish (at
    /// most [`DRAIN_DEADLINE`]), saves everything and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        // Polled once before intake can log "ready": a signal handler that the future installs
        // when first polled (as `supervisor::quit_signal`'s are) then exists before anyone is
        // told the bridge is ready, so a SIGTERM right after "ready" stops it cleanly instead
        // of ending the process by the signal's default action.
        let mut shutdown = std::pin::pin!(shutdown);
        let stop_now = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(shutdown.as_mut().poll(cx).is_ready())
        })
        .await;
        let running = match self.prepare()? {
            Some(running) => running,
            None => {
                // Nothing can be handled yet: texts wait in chat.db until the setup is
                // complete and the bridge is started again (the app does that when settings
                // change).
                let reason = self.config.missing_setup().unwrap_or("settings");
                warn!(missing = reason, "setup incomplete; not reading texts");
                self.status
                    .update(|s| s.state = State::NeedsSetup(reason.to_string()));
                if !stop_now {
                    shutdown.await;
                }
                self.close().await;
                return Ok(());
            }
        };
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        self.spawn_tasks(running, &tracker, &cancel)?;

        if !stop_now {
            shutdown.await;
        }
        info!("stopping: no new texts; finishing work in hand");
        self.status.update(|s| s.state = State::Stopping);
        cancel.cancel();
        tracker.close();
        if tokio::time::timeout(DRAIN_DEADLINE, tracker.wait())
            .await
            .is_err()
        {
            warn!("in-flight work did not finish in time; it resumes at the next start");
        }
        self.close().await;
        info!("stopped");
        Ok(())
    }

    /// The conversations and the echo memory, or `None` while the vault or the API key is
    /// missing.
    fn prepare(&self) -> Result<Option<Running>, Error> {
        let config = &self.config;
        let (Some(vault), Some(auth)) = (config.vault.clone(), config.auth.clone()) else {
            return Ok(None);
        };
        let client = anthropic::Client::new(anthropic::ClientConfig {
            base_url: config.base_url.clone(),
            model: config.model.clone(),
            request_timeout: config.api_timeout,
            max_retries: config.api_max_retries,
            ..anthropic::ClientConfig::new(auth)
        })?;
        let path = config.data_dir.join(echoes::FILE);
        let echoes = echoes::Echoes::open(Arc::clone(self.ledger.db()), &path)
            .map_err(|source| Error::Echoes { path, source })?;
        let echoes = Arc::new(echoes);
        let outbox = outbox::Outbox::new(
            sender::Sender::default(),
            Arc::clone(&self.ledger),
            self.status.clone(),
        )
        .with_echoes(Arc::clone(&echoes));
        let conversations = Arc::new(Conversations {
            agent: agent::Agent::new(client, prompt::system_prompt())
                .with_deadline(config.run_deadline)
                .with_context(prompt::now_context),
            vault: vault::Vault::new(vault.clone()),
            outbox,
            sessions: self.sessions.clone(),
            ledger: Arc::clone(&self.ledger),
            status: self.status.clone(),
            timeout: config.session_timeout,
            rate: RateLimiter::new(config.rate_limit_per_minute),
            budget: Arc::clone(&self.budget),
            waiting: Waiting::default(),
            attachment_wait: config.attachment_wait,
            chat_db: config.chat_db.clone(),
            read_linked_pages: config.read_linked_pages,
        });
        let index = search::Index::new(&vault, &config.data_dir);
        if config.allowed_senders.is_empty() {
            warn!("no allowed senders: every text will be ignored");
        }
        Ok(Some(Running {
            conversations,
            echoes,
            index,
        }))
    }

    /// Resumes the texts left unfinished, then starts intake and the periodic tasks.
    fn spawn_tasks(
        &self,
        running: Running,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let config = &self.config;
        let Running {
            conversations,
            echoes,
            index,
        } = running;
        let router = Router::new(
            Arc::clone(&conversations),
            config.max_concurrent_chats,
            tracker.clone(),
            cancel.clone(),
        );
        let unfinished = self.ledger.unfinished()?;
        if !unfinished.is_empty() {
            info!(
                count = unfinished.len(),
                "resuming texts claimed before the last stop"
            );
        }
        for message in unfinished {
            router.dispatch(Job::Message(message));
        }
        digest::start(config, &conversations.outbox, &self.ledger, tracker, cancel);
        let outbox = &conversations.outbox;
        let changes = Some(index.changes());
        reminders::start(
            config,
            outbox,
            &self.ledger,
            &self.status,
            changes,
            tracker,
            cancel,
        );
        tracker.spawn(self.intake(echoes, router.clone()).run(cancel.clone()));
        tracker.spawn(search::follow::run(index, cancel.clone()));
        tracker.spawn(count_sessions(
            self.sessions.clone(),
            self.status.clone(),
            cancel.clone(),
        ));
        let count = conversations.waiting.count();
        tracker.spawn(resume_waiting(
            move || conversations.waiting.chats(),
            count,
            router.clone(),
            config.poll_interval,
            cancel.clone(),
        ));
        tracker.spawn(sweep_idle(
            self.sessions.clone(),
            router,
            config.session_timeout,
            config.sweep_interval,
            cancel.clone(),
        ));
        Ok(())
    }

    /// The intake loop over chat.db, feeding `router`.
    fn intake(
        &self,
        echoes: Arc<echoes::Echoes>,
        router: Router<Arc<Conversations>>,
    ) -> Intake<Arc<Conversations>> {
        let config = &self.config;
        Intake {
            chat_db: config.chat_db.clone(),
            poll: config.poll_interval,
            catch_up: config.catch_up,
            ledger: Arc::clone(&self.ledger),
            admission: Arc::new(RwLock::new(allowlist::Admission {
                senders: config.allowed_senders.clone(),
                groups: config.allowed_groups.iter().cloned().collect(),
                allow_sms: config.allow_sms,
            })),
            echoes,
            router,
            status: self.status.clone(),
            paused: self.paused.subscribe(),
        }
    }

    /// Saves the sessions and the status file, and lets their writers finish.
    async fn close(&self) {
        save_and_close(&self.sessions, &self.writer).await;
        self.status.flush().await;
    }
}

/// Opens the state database, moves old state files into it, and opens the ledger and the
/// token budget. Files set aside are added to `aside`.
fn open_state(config: &Config, aside: &mut Vec<SetAside>) -> Result<(Ledger, Budget), Error> {
    let (db, moved) = StateDb::open(config.data_dir.join(state::FILE))?;
    aside.extend(moved.map(SetAside::File));
    let db = Arc::new(db);
    let ledger = Ledger::open(Arc::clone(&db))?;
    let today = Local::now().date_naive();
    let budget = Budget::open(db, config.daily_token_budget, today)?;
    let old = migrate::import_old_files(&config.data_dir, &ledger, &budget)?;
    aside.extend(old.into_iter().map(SetAside::File));
    Ok((ledger, budget))
}

/// Saves the sessions and lets their writer finish.
async fn save_and_close(sessions: &SessionStore, writer: &TaskTracker) {
    if let Err(err) = sessions.flush().await {
        warn!(cause = %err, "could not save sessions");
    }
    sessions.close();
    writer.close();
    writer.wait().await;
}

/// Every `every`, queues a timeout check for each session idle longer than `timeout`.
async fn sweep_idle<H: router::Handler>(
    sessions: SessionStore,
    router: Router<H>,
    timeout: Duration,
    every: Duration,
    cancel: CancellationToken,
) {
    every_tick(every, cancel, || {
        let cutoff =
            Utc::now() - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        for session in sessions.idle_since(cutoff) {
            router.dispatch(Job::Timeout {
                chat: session.chat.guid,
            });
        }
    })
    .await;
}

/// Calls `work` at once and then every `every`, until `cancel` fires.
async fn every_tick(every: Duration, cancel: CancellationToken, mut work: impl FnMut()) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => work(),
        }
    }
}

/// Keeps the status's session count true whoever changes the sessions (e.g. the app).
async fn count_sessions(sessions: SessionStore, status: StatusBoard, cancel: CancellationToken) {
    let mut events = sessions.subscribe();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            event = events.recv() => match event {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    status.update(|s| s.sessions = sessions.len());
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Removes the hidden temporary files (`.<name>.<pid>-<n>.tmp`) that a crash during
/// [`persist::write_atomic`] can leave in the data directory. Only called under the data
/// directory's lock, so no writer of ours is using one.
fn remove_leftover_temporaries(data_dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") && entry.path().is_file() {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => info!(file = ?name, "removed a temporary file left by a crash"),
                Err(err) => {
                    warn!(file = ?name, cause = %err, "could not remove a leftover temporary file")
                }
            }
        }
    }
}

/// While texts wait for the vault (`count` above zero), queues a [`Job::Resume`] at once and
/// then every `every` for each chat with some (`waiting` lists them; the job handles them if
/// the vault can be written again). A chat whose queue is busy is left for the next tick, so
/// resumes never pile up behind slow work. While none waits there is no timer at all: an
/// idle bridge is not woken.
async fn resume_waiting<H: router::Handler>(
    waiting: impl Fn() -> Vec<String>,
    mut count: watch::Receiver<usize>,
    router: Router<H>,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            some = count.wait_for(|n| *n > 0) => if some.is_err() { return },
        }
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while *count.borrow_and_update() > 0 {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    for chat in waiting() {
                        if !router.is_busy(&chat) {
                            router.dispatch(Job::Resume { chat });
                        }
                    }
                }
            }
        }
    }
}

/// Opens the bridge and runs it until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    Bridge::open(config)?.run(shutdown).await
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::{Notify, mpsc};
    use tokio::time::Instant;

    use super::*;
    use crate::config::Overrides;

    /// Reports each job with the (paused) time it started; jobs for chat `slow` wait for
    /// `release`.
    struct Recorder {
        jobs: mpsc::UnboundedSender<(Job, Instant)>,
        release: Notify,
    }

    impl router::Handler for Arc<Recorder> {
        async fn handle(&self, job: Job) {
            let slow = job.chat() == "slow";
            let _ = self.jobs.send((job, Instant::now()));
            if slow {
                self.release.notified().await;
            }
        }
    }

    /// Issue 4: texts waiting for the vault are retried on every poll tick, for each chat
    /// that has some, and never pile up behind a busy chat.
    #[tokio::test(start_paused = true)]
    async fn waiting_chats_get_a_resume_on_every_tick_unless_busy() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let recorder = Arc::new(Recorder {
            jobs: tx,
            release: Notify::new(),
        });
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let router = Router::new(Arc::clone(&recorder), 4, tracker.clone(), cancel.clone());
        let waiting = Arc::new(Mutex::new(vec!["a".to_string(), "slow".to_string()]));
        let (count, counted) = watch::channel(2);
        let looks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (list, looked) = (Arc::clone(&waiting), Arc::clone(&looks));
        let every = Duration::from_millis(1500);
        let start = Instant::now();
        tracker.spawn(resume_waiting(
            move || {
                looked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                list.lock().unwrap().clone()
            },
            counted,
            router,
            every,
            cancel.clone(),
        ));

        let mut seen = Vec::new();
        // Four ticks: `a` each time, `slow` once (it stays busy).
        while seen.len() < 5 {
            let (job, at) = rx.recv().await.unwrap();
            let Job::Resume { chat } = job else {
                panic!("{job:?}")
            };
            seen.push((chat, (at - start).as_millis()));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("a".to_string(), 0),
                ("a".to_string(), 1500),
                ("a".to_string(), 3000),
                ("a".to_string(), 4500),
                ("slow".to_string(), 0),
            ]
        );
        // Nothing waits any more: no job, and after the tick in hand no look at all (an idle
        // bridge is not woken).
        waiting.lock().unwrap().clear();
        count.send_replace(0);
        recorder.release.notify_one();
        tokio::time::sleep(every * 2).await;
        let looked = looks.load(std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(every * 100).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(looks.load(std::sync::atomic::Ordering::SeqCst), looked);
        // A new waiting chat is resumed at once, then on every tick.
        waiting.lock().unwrap().push("b".into());
        let pushed = Instant::now();
        count.send_replace(1);
        for ticks in 0..2 {
            let (job, at) = rx.recv().await.unwrap();
            assert_eq!(job.chat(), "b");
            assert_eq!(at - pushed, every * ticks);
        }
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn an_incomplete_setup_waits_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        let env = |k: &str| (k == "SECOND_BRAIN_DATA_DIR").then(|| data.clone());
        let config = Config::resolve(&Overrides::default(), env, || None).unwrap();
        let bridge = Bridge::open(config).unwrap();
        let mut status = bridge.status().subscribe();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(bridge.run(async {
            let _ = stopped.await;
        }));
        let state = status
            .wait_for(|s| matches!(s.state, State::NeedsSetup(_)))
            .await
            .unwrap()
            .state
            .clone();
        assert_eq!(state, State::NeedsSetup("no vault folder chosen".into()));
        assert!(
            DataDirLock::is_held(dir.path()),
            "the data dir stays owned while waiting"
        );
        stop.send(()).unwrap();
        running.await.unwrap().unwrap();
        assert!(!DataDirLock::is_held(dir.path()));
    }
}
