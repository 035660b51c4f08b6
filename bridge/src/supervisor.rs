//! The bridge's lifecycle for any front end: [`Supervisor`] starts it, stops it, restarts it
//! when the settings or the API key change, keeps the user's pause across restarts, and tells
//! the front end what changed through one [`Notify`] feed (sessions, status).
//!
//! Invariants: at most one bridge runs, and every start, restart and stop happens under one
//! async lock (`lifecycle`), so a bridge has fully stopped (in-flight work drained, sessions
//! saved, data-dir lock released) before the next one opens. Calls that change sessions take
//! the same lock, so a change never lands in a store that is closing; reads never wait for it:
//! they use the current generation's handles, swapped under a short `std` mutex that is never
//! held across `.await`. Changes of the sessions or of the status reach [`Notify`] from two
//! forwarding tasks per generation, owned by the supervisor's tracker and stopped with the
//! generation (no polling). Settings are validated and written by [`Settings::save`]; the
//! supervisor applies an edit, then restarts the bridge so the change applies at once.
//! Nothing here knows about windows: the app and any other front end drive the same calls;
//! [`pages`] holds the shapes the app's pages read and send.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Bridge;
use crate::allowlist::Handle;
use crate::config::{Config, ConfigError, Dirs, Origin, Overrides, Setting, Settings};
use crate::doctor::{self, Check};
use crate::secrets::{KeyStore, SecretError, SystemKeychain};
use crate::sender::Sender;
use crate::sessions::{Session, SessionEvent, SessionStore};
use crate::status::{SeenGroup, State, Status, StatusBoard, Stranger};

pub mod menu;
pub mod pages;
pub mod updates;

/// How long a stop waits for the bridge's own bounded drain before giving up on it.
const STOP_DEADLINE: Duration = Duration::from_secs(crate::DRAIN_DEADLINE.as_secs() + 5);

/// Why the supervisor refused or failed something. Each message is one sentence for a person.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// A setting was refused; nothing was written.
    #[error("{}: {reason}", setting.label())]
    Invalid {
        /// The setting.
        setting: Setting,
        /// What is wrong with it.
        reason: String,
    },
    /// There is no session for this chat (it may have ended meanwhile).
    #[error("no session for chat {chat}")]
    UnknownSession {
        /// The chat guid asked for.
        chat: String,
    },
    /// The bridge is not running, so its sessions cannot be read or changed.
    #[error("the bridge is not running: {reason}")]
    NotRunning {
        /// Why it could not start.
        reason: String,
    },
    /// A state file could not be written.
    #[error("could not save {what} to {path}: {source}")]
    Save {
        /// Which state ("sessions", "settings").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The sessions could not be saved.
    #[error(transparent)]
    Sessions(#[from] crate::sessions::SessionsError),
    /// The keychain refused to store or remove the API key, or there is none.
    #[error(transparent)]
    Keychain(#[from] SecretError),
    /// No vault folder is chosen, so there is none to show.
    #[error("no vault folder chosen yet")]
    NoVault,
    /// The system could not open a folder or a System Settings pane.
    #[error("could not open {target}: {reason}")]
    Open {
        /// The folder or URL.
        target: String,
        /// Why it failed.
        reason: String,
    },
    /// A reminder could not be cancelled (the note is gone, outside the vault, unreadable).
    #[error("could not cancel the reminder: {0}")]
    Reminder(#[from] crate::vault::Error),
    /// The note has no pending reminder (it may have been sent or cancelled meanwhile).
    #[error("{path} has no pending reminder")]
    NoReminder {
        /// The note asked for.
        path: String,
    },
    /// Blocking work could not finish (its task panicked or was cancelled).
    #[error("{what} was interrupted: {reason}")]
    Interrupted {
        /// What was being done.
        what: &'static str,
        /// What happened to the task.
        reason: String,
    },
}

impl From<ConfigError> for SupervisorError {
    fn from(err: ConfigError) -> SupervisorError {
        match err {
            ConfigError::Invalid { setting, reason } => {
                SupervisorError::Invalid { setting, reason }
            }
            ConfigError::Missing { setting, hint } => SupervisorError::Invalid {
                setting,
                reason: hint.to_owned(),
            },
            ConfigError::Io { path, source } => SupervisorError::Save {
                what: "settings",
                path,
                source,
            },
        }
    }
}

/// What changed, for the front ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A session was created, changed or removed.
    Sessions,
    /// The status line, the pause or the strangers changed.
    Status,
    /// The automatic check found a new version (see [`updates`]).
    Update,
    /// A pending reminder was set, changed, sent or cancelled.
    Reminders,
}

/// Told about every [`Change`]; called from the supervisor's tasks, so it must not block.
pub type Notify = Arc<dyn Fn(Change) + Send + Sync>;

/// Looks up an environment variable.
pub type Vars = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Opens a folder or URL with the system, without waiting for the viewer; the error is a
/// sentence.
pub type Opener = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Everything the bridge's configuration is resolved from.
#[derive(Clone)]
pub struct Environment {
    /// Path overrides (none in the app).
    pub overrides: Overrides,
    /// Environment variables: the process's in the app, a map in tests.
    pub vars: Vars,
    /// Where the API key is kept.
    pub keys: Arc<dyn KeyStore>,
    /// Runs the Automation probe of the setup checklist.
    pub probe: Sender,
    /// Shows the vault and log folders and the System Settings panes.
    pub opener: Opener,
}

impl Environment {
    /// The real environment: process variables, the system keychain, `osascript` on `PATH`,
    /// the platform's opener.
    pub fn system() -> Environment {
        Environment {
            overrides: Overrides::default(),
            vars: Arc::new(|name| std::env::var(name).ok()),
            keys: Arc::new(SystemKeychain),
            probe: Sender::default(),
            opener: Arc::new(|target| open_with_system(target).map_err(|err| err.to_string())),
        }
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.vars)(name).filter(|value| !value.trim().is_empty())
    }

    /// The data and log folders (without reading the settings file).
    pub fn dirs(&self) -> Result<Dirs, ConfigError> {
        Dirs::resolve(&self.overrides, |name| self.var(name))
    }

    /// Resolves the bridge's configuration (blocking: reads the settings file and keychain).
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let keys = Arc::clone(&self.keys);
        Config::resolve(
            &self.overrides,
            |name| (self.vars)(name),
            move || keys.api_key().ok().flatten(),
        )
    }
}

/// The settings in effect: the running configuration (which environment variables may
/// override), or the settings file when the configuration does not resolve.
#[derive(Debug, Clone)]
pub enum Effective {
    /// The running bridge's configuration.
    Running(Box<Config>),
    /// The settings file as it is, and whether the keychain holds a key.
    File {
        /// The file's values (defaults where it is missing or did not parse).
        settings: Settings,
        /// Whether an API key is stored.
        api_key_set: bool,
    },
}

/// The status line and whether the user paused the bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusLine {
    /// "Running · 2 sessions", "Paused" or "Needs setup: Full Disk Access".
    pub line: String,
    /// Whether the user paused the bridge.
    pub paused: bool,
    /// "Next reminder 17:00" while one is pending (left out of the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_reminder: Option<String>,
}

impl StatusLine {
    /// A line of a bridge that is not paused and has no reminder to show.
    pub fn unpaused(line: String) -> StatusLine {
        StatusLine {
            line,
            paused: false,
            next_reminder: None,
        }
    }

    /// A front end's status line: why it could not start its bridge (`attention`), else the
    /// bridge's, else "Starting…".
    pub fn of_app(bridge: Option<&Supervisor>, attention: Option<&str>) -> StatusLine {
        let line = match (bridge, attention) {
            (_, Some(reason)) => format!("Needs attention: {reason}"),
            (Some(bridge), None) => return bridge.status(),
            (None, None) => "Starting…".to_owned(),
        };
        StatusLine::unpaused(line)
    }
}

/// One run of the bridge: its handles, and what stops it.
struct Generation {
    config: Config,
    sessions: SessionStore,
    status: StatusBoard,
    pauser: watch::Sender<bool>,
    /// Ends this generation: the bridge's shutdown future and the forwarders wait on it.
    stop: CancellationToken,
    /// The bridge's `run` task; taken by whoever stops it.
    run: Option<tokio::task::JoinHandle<()>>,
}

enum Current {
    /// Not started yet, or stopped for good.
    Stopped,
    /// The configuration did not resolve or the bridge did not open.
    Failed { reason: String },
    /// A bridge is open (running, or waiting for its setup to be completed).
    Running(Box<Generation>),
}

struct Shared {
    /// The user's choice, applied to every generation.
    paused: bool,
    current: Current,
}

struct Inner {
    env: Environment,
    dirs: Dirs,
    notify: Notify,
    lifecycle: Arc<tokio::sync::Mutex<()>>,
    shared: Mutex<Shared>,
    tasks: TaskTracker,
}

/// The running bridge and its controls. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl Supervisor {
    /// A supervisor that has not started its bridge yet; fails only without a data folder.
    pub fn new(env: Environment, notify: Notify) -> Result<Supervisor, ConfigError> {
        let dirs = env.dirs()?;
        Ok(Supervisor {
            inner: Arc::new(Inner {
                env,
                dirs,
                notify,
                lifecycle: Arc::new(tokio::sync::Mutex::new(())),
                shared: Mutex::new(Shared {
                    paused: false,
                    current: Current::Stopped,
                }),
                tasks: TaskTracker::new(),
            }),
        })
    }

    /// The data and log folders.
    pub fn dirs(&self) -> &Dirs {
        &self.inner.dirs
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Every section is a plain read or swap: a panic cannot leave it half-done.
        crate::mutex::lock(&self.inner.shared)
    }

    fn notify(&self, change: Change) {
        (self.inner.notify)(change);
    }

    /// The start of the bridge, for the front end to spawn on its runtime. The lifecycle lock
    /// is taken before this returns (when free), so anything that waits for
    /// [`settled`](Self::settled) afterwards sees the start done.
    pub fn launch(&self) -> impl Future<Output = ()> + Send + 'static {
        let guard = Arc::clone(&self.inner.lifecycle).try_lock_owned();
        let supervisor = self.clone();
        async move {
            let _guard = match guard {
                Ok(guard) => guard,
                Err(_) => Arc::clone(&supervisor.inner.lifecycle).lock_owned().await,
            };
            supervisor.start_locked(Vec::new()).await;
        }
    }

    /// Returns once no start, restart or stop is under way.
    pub async fn settled(&self) {
        drop(self.inner.lifecycle.lock().await);
    }

    /// Stops intake, lets in-flight work finish (bounded), saves, and stays stopped. Safe to
    /// call more than once; the app calls it on its way out.
    pub async fn shutdown(&self) {
        let _guard = self.inner.lifecycle.lock().await;
        self.stop_locked().await;
        self.shared().current = Current::Stopped;
        self.inner.tasks.close();
        tracing::info!("bridge stopped; the app can exit");
    }

    /// Runs `step` with the bridge stopped the way [`shutdown`](Self::shutdown) stops it (no
    /// new texts, in-flight work finished, bounded, and the sessions saved). When `step`
    /// succeeds the bridge stays stopped for good (the app then restarts into a new version);
    /// when it fails the bridge starts again and nothing else changed.
    pub async fn while_drained<T, E>(
        &self,
        step: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let _guard = self.inner.lifecycle.lock().await;
        let strangers = self.stop_locked().await;
        let done = step.await;
        if done.is_ok() {
            self.shared().current = Current::Stopped;
            self.inner.tasks.close();
        } else {
            self.start_locked(strangers).await;
        }
        done
    }

    /// Stops the bridge and opens it again with a freshly resolved configuration.
    async fn restart_locked(&self) {
        let strangers = self.stop_locked().await;
        self.start_locked(strangers).await;
    }

    /// Opens and runs a bridge (lifecycle lock held). `strangers` are carried over from the
    /// previous generation, so allowing one person does not forget the others.
    async fn start_locked(&self, strangers: Vec<Stranger>) {
        let env = self.inner.env.clone();
        let opened = tokio::task::spawn_blocking(move || {
            // Blocking: reads the settings file, the keychain, the sessions and the ledger.
            let config = env.resolve().map_err(|err| err.to_string())?;
            let bridge = Bridge::open(config.clone()).map_err(|err| err.to_string())?;
            Ok::<_, String>((config, bridge))
        })
        .await
        .unwrap_or_else(|join| Err(format!("opening the bridge was interrupted: {join}")));
        match opened {
            Ok((config, bridge)) => self.run_generation(config, bridge, strangers),
            Err(reason) => {
                tracing::error!(%reason, "the bridge could not start");
                self.shared().current = Current::Failed { reason };
            }
        }
        self.notify(Change::Sessions);
        self.notify(Change::Status);
    }

    fn run_generation(&self, config: Config, bridge: Bridge, strangers: Vec<Stranger>) {
        let sessions = bridge.sessions();
        let status = bridge.status();
        let pauser = bridge.pauser();
        let strangers: Vec<Stranger> = strangers
            .into_iter()
            .filter(|s| !config.allowed_senders.is_allowed(&s.handle))
            .collect();
        if !strangers.is_empty() {
            status.update(|s| s.strangers = strangers);
        }
        let stop = CancellationToken::new();
        let notify = Arc::clone(&self.inner.notify);
        self.inner.tasks.spawn(forward_sessions(
            sessions.subscribe(),
            Arc::clone(&notify),
            stop.clone(),
        ));
        self.inner
            .tasks
            .spawn(forward_status(status.subscribe(), notify, stop.clone()));
        let mut shared = self.shared();
        // The pause is applied before the bridge reads anything, under the lock that
        // `set_paused` takes, so no text slips through between generations.
        pauser.send_replace(shared.paused);
        let run = self.inner.tasks.spawn({
            let shutdown = stop.clone().cancelled_owned();
            let status = status.clone();
            async move {
                if let Err(err) = bridge.run(shutdown).await {
                    tracing::error!(cause = %err, "the bridge stopped with an error");
                    status.update(|s| {
                        s.state = State::NeedsSetup(err.to_string());
                        s.last_error = Some(err.to_string());
                    });
                }
            }
        });
        shared.current = Current::Running(Box::new(Generation {
            config,
            sessions,
            status,
            pauser,
            stop,
            run: Some(run),
        }));
        tracing::info!("bridge started");
    }

    /// Stops the current bridge (lifecycle lock held) and returns its strangers. The stopped
    /// generation stays readable until the next one replaces it.
    async fn stop_locked(&self) -> Vec<Stranger> {
        let (stop, run, strangers) = match &mut self.shared().current {
            Current::Running(generation) => (
                Some(generation.stop.clone()),
                generation.run.take(),
                generation.status.get().strangers,
            ),
            _ => (None, None, Vec::new()),
        };
        if let Some(stop) = stop {
            stop.cancel();
        }
        if let Some(run) = run {
            match tokio::time::timeout(STOP_DEADLINE, run).await {
                Ok(Ok(())) => {}
                Ok(Err(join)) => tracing::error!(cause = %join, "the bridge task failed"),
                Err(_) => tracing::error!("the bridge did not stop in time"),
            }
        }
        strangers
    }

    /// The store of the running bridge.
    fn store(&self) -> Result<SessionStore, SupervisorError> {
        match &self.shared().current {
            Current::Running(generation) => Ok(generation.sessions.clone()),
            Current::Failed { reason } => Err(SupervisorError::NotRunning {
                reason: reason.clone(),
            }),
            Current::Stopped => Err(SupervisorError::NotRunning {
                reason: "it has stopped".to_owned(),
            }),
        }
    }

    /// Every session, most recent activity first. Waits for a start under way.
    pub async fn sessions(&self) -> Result<Vec<Session>, SupervisorError> {
        let starting = matches!(self.shared().current, Current::Stopped);
        if starting {
            self.settled().await;
        }
        let stopped = matches!(self.shared().current, Current::Stopped);
        if stopped {
            return Ok(Vec::new());
        }
        self.store().map(|store| store.list())
    }

    /// Ends one session; returns once `sessions.json` says so.
    pub async fn clear_session(&self, chat: &str) -> Result<(), SupervisorError> {
        let _guard = self.inner.lifecycle.lock().await;
        let store = self.store()?;
        if store.remove(chat).is_none() {
            return Err(SupervisorError::UnknownSession {
                chat: chat.to_owned(),
            });
        }
        tracing::info!(chat, "session cleared from the app");
        flush(&store).await
    }

    /// Ends every session; returns how many there were, once `sessions.json` says so.
    pub async fn clear_all(&self) -> Result<usize, SupervisorError> {
        let _guard = self.inner.lifecycle.lock().await;
        let store = self.store()?;
        let cleared = store.clear_all();
        tracing::info!(cleared, "all sessions cleared from the app");
        flush(&store).await?;
        Ok(cleared)
    }

    /// The pending reminders of the vault in effect, soonest first (none without a vault).
    pub async fn reminders(&self) -> Result<Vec<crate::reminders::Reminder>, SupervisorError> {
        let Some(vault) = self.vault() else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || crate::reminders::pending(&vault))
            .await
            .map_err(|join| SupervisorError::Interrupted {
                what: "reading the reminders",
                reason: join.to_string(),
            })
    }

    /// Removes the pending reminder from the note at `path` (vault-relative); the note says
    /// so when this returns, and the scheduler follows.
    pub async fn cancel_reminder(&self, path: &str) -> Result<(), SupervisorError> {
        let vault = crate::vault::Vault::new(self.vault().ok_or(SupervisorError::NoVault)?);
        let rel = path.to_owned();
        let cancelled = vault
            .off_runtime(move |vault| crate::reminders::cancel(vault, &rel))
            .await?;
        if cancelled == crate::reminders::Cancelled::NothingPending {
            return Err(SupervisorError::NoReminder {
                path: path.to_owned(),
            });
        }
        tracing::info!(path, "reminder cancelled from the app");
        self.notify(Change::Reminders);
        Ok(())
    }

    /// The settings in effect.
    pub fn effective(&self) -> Effective {
        if let Current::Running(generation) = &self.shared().current {
            return Effective::Running(Box::new(generation.config.clone()));
        }
        let (settings, _) = Settings::load(&self.inner.dirs.data).unwrap_or_default();
        let api_key_set = self.inner.env.keys.api_key().ok().flatten().is_some();
        Effective::File {
            settings,
            api_key_set,
        }
    }

    /// The vault folder in effect, if one is chosen.
    pub fn vault(&self) -> Option<PathBuf> {
        let running = match &self.shared().current {
            Current::Running(generation) => Some(generation.config.vault.clone()),
            _ => None,
        };
        running.unwrap_or_else(|| {
            Settings::load(&self.inner.dirs.data)
                .ok()
                .and_then(|(file, _)| file.vault_path)
        })
    }

    /// Shows the vault folder (in Finder on macOS).
    pub fn open_vault(&self) -> Result<(), SupervisorError> {
        let vault = self.vault().ok_or(SupervisorError::NoVault)?;
        self.open(&vault.display().to_string())
    }

    /// Shows the log folder, created first when no line was logged there yet.
    pub fn open_logs(&self) -> Result<(), SupervisorError> {
        let logs = self.inner.dirs.logs.display().to_string();
        std::fs::create_dir_all(&self.inner.dirs.logs).map_err(|err| SupervisorError::Open {
            target: logs.clone(),
            reason: err.to_string(),
        })?;
        self.open(&logs)
    }

    /// Opens the System Settings pane that fixes a failing check.
    pub fn open_pane(&self, pane: doctor::Pane) -> Result<(), SupervisorError> {
        self.open(pane.url())
    }

    fn open(&self, target: &str) -> Result<(), SupervisorError> {
        (self.inner.env.opener)(target).map_err(|reason| SupervisorError::Open {
            target: target.to_owned(),
            reason,
        })
    }

    /// Loads the settings file, applies `edit`, validates and saves it (all or nothing), then
    /// restarts the bridge with it.
    pub async fn update_settings(
        &self,
        edit: impl FnOnce(Settings) -> Result<Settings, ConfigError> + Send + 'static,
    ) -> Result<(), SupervisorError> {
        let _guard = self.inner.lifecycle.lock().await;
        let data_dir = self.inner.dirs.data.clone();
        tokio::task::spawn_blocking(move || {
            let (file, _) = Settings::load(&data_dir)?;
            edit(file)?.save(&data_dir)
        })
        .await
        .map_err(|join| SupervisorError::Interrupted {
            what: "saving the settings",
            reason: join.to_string(),
        })??;
        self.restart_locked().await;
        Ok(())
    }

    /// Adds one sender to the settings file's allowed senders and restarts the bridge.
    pub async fn allow_sender(&self, raw: &str) -> Result<(), SupervisorError> {
        let handle = Handle::parse(raw).map_err(|err| SupervisorError::Invalid {
            setting: Setting::AllowedSenders(Origin::SettingsFile),
            reason: err.to_string(),
        })?;
        self.update_settings(move |mut file| {
            let known = file
                .allowed_senders
                .iter()
                .any(|entry| Handle::parse(entry).is_ok_and(|h| h == handle));
            if !known {
                file.allowed_senders.push(handle.as_str().to_owned());
            }
            Ok(file)
        })
        .await?;
        tracing::info!("a stranger was allowed from the app");
        Ok(())
    }

    /// Adds a group chat to the settings file's allowed groups and restarts the bridge.
    pub async fn allow_group(&self, guid: &str) -> Result<(), SupervisorError> {
        let guid = guid.trim().to_owned();
        self.update_settings(move |mut file| {
            if !file.allowed_groups.contains(&guid) {
                file.allowed_groups.push(guid);
            }
            Ok(file)
        })
        .await?;
        tracing::info!("a group chat was allowed from the app");
        Ok(())
    }

    /// Group chats that texted recently but are not allowed, newest first.
    pub fn groups(&self) -> Vec<SeenGroup> {
        match &self.shared().current {
            Current::Running(generation) => {
                let allowed = &generation.config.allowed_groups;
                let mut groups = generation.status.get().groups;
                groups.retain(|g| !allowed.contains(&g.guid));
                groups
            }
            _ => Vec::new(),
        }
    }

    /// Stores the API key in the keychain and restarts the bridge with it.
    pub async fn set_api_key(&self, key: &str) -> Result<(), SupervisorError> {
        let key = key.trim().to_owned();
        let refuse = |reason: &str| SupervisorError::Invalid {
            setting: Setting::ApiKey,
            reason: reason.to_owned(),
        };
        if key.is_empty() {
            return Err(refuse("paste a key first"));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse("a key has no spaces or line breaks"));
        }
        let _guard = self.inner.lifecycle.lock().await;
        self.keychain(move |keys| keys.set_api_key(&key)).await?;
        tracing::info!("API key stored");
        self.restart_locked().await;
        Ok(())
    }

    /// Removes the API key from the keychain and restarts the bridge without it.
    pub async fn clear_api_key(&self) -> Result<(), SupervisorError> {
        let _guard = self.inner.lifecycle.lock().await;
        self.keychain(|keys| keys.clear_api_key()).await?;
        tracing::info!("API key removed");
        self.restart_locked().await;
        Ok(())
    }

    async fn keychain(
        &self,
        op: impl FnOnce(&dyn KeyStore) -> Result<(), SecretError> + Send + 'static,
    ) -> Result<(), SupervisorError> {
        let keys = Arc::clone(&self.inner.env.keys);
        // The keychain may show a prompt and block until it is answered.
        tokio::task::spawn_blocking(move || op(keys.as_ref()))
            .await
            .map_err(|join| SupervisorError::Interrupted {
                what: "the keychain",
                reason: join.to_string(),
            })?
            .map_err(SupervisorError::from)
    }

    /// People who texted recently but are not allowed, newest first.
    pub fn strangers(&self) -> Vec<Stranger> {
        match &self.shared().current {
            Current::Running(generation) => {
                let allowed = &generation.config.allowed_senders;
                let mut strangers = generation.status.get().strangers;
                strangers.retain(|s| !allowed.is_allowed(&s.handle));
                strangers
            }
            _ => Vec::new(),
        }
    }

    /// The setup checklist, from a freshly resolved configuration, plus the Automation probe.
    pub async fn setup_checks(&self) -> Vec<Check> {
        let env = self.inner.env.clone();
        // Blocking: opens chat.db, writes a probe file in the vault.
        let disk = tokio::task::spawn_blocking(move || match env.resolve() {
            Ok(config) => doctor::checks(&config),
            Err(err) => vec![doctor::settings_invalid(err.to_string())],
        });
        let (disk, automation) = tokio::join!(disk, doctor::automation(&self.inner.env.probe));
        let mut checks = disk.unwrap_or_else(|join| {
            vec![doctor::settings_invalid(format!("checking failed: {join}"))]
        });
        checks.push(automation);
        checks
    }

    /// Whether setup is complete: the configuration resolves and every check of the
    /// checklist but the Automation probe passes (the probe is left out: it may show a
    /// prompt, which a launch must not).
    pub async fn setup_complete(&self) -> bool {
        let env = self.inner.env.clone();
        tokio::task::spawn_blocking(move || {
            env.resolve()
                .is_ok_and(|config| doctor::checks(&config).iter().all(|check| check.ok))
        })
        .await
        .unwrap_or(false)
    }

    /// The window a launch opens: the one asked for (the e2e switch), else the Setup
    /// Checklist while setup is incomplete, else none.
    pub async fn window_at_launch(&self, asked: Option<pages::Page>) -> Option<pages::Page> {
        match asked {
            Some(page) => Some(page),
            None => (!self.setup_complete().await).then_some(pages::Page::Setup),
        }
    }

    /// The window to bring forward when the user opens the app again: the sessions once setup
    /// is complete, else (also when the app could not start its bridge) the Setup Checklist.
    pub async fn window_on_reopen(bridge: Option<Supervisor>) -> pages::Page {
        match bridge {
            Some(bridge) if bridge.setup_complete().await => pages::Page::Sessions,
            _ => pages::Page::Setup,
        }
    }

    /// The status line and whether the user paused the bridge.
    pub fn status(&self) -> StatusLine {
        let shared = self.shared();
        let paused = shared.paused;
        let mut next_reminder = None;
        let line = match &shared.current {
            Current::Stopped => "Starting…".to_owned(),
            Current::Failed { reason } => format!("Needs setup: {reason}"),
            Current::Running(generation) => {
                let mut status: Status = generation.status.get();
                let today = chrono::Local::now().date_naive();
                next_reminder = status.next_reminder.as_ref().map(|n| n.line(today));
                // The pause is the user's: show it at once, before intake has reacted.
                match (paused, &status.state) {
                    (true, State::Running) => status.state = State::Paused,
                    (false, State::Paused) => status.state = State::Running,
                    _ => {}
                }
                status.line()
            }
        };
        // The tray shows the line as it is: the next reminder goes at its end.
        let line = match &next_reminder {
            Some(next) => format!("{line} · {next}"),
            None => line,
        };
        StatusLine {
            line,
            paused,
            next_reminder,
        }
    }

    /// Pauses or resumes reading texts (they wait in chat.db meanwhile).
    pub fn set_paused(&self, paused: bool) -> StatusLine {
        {
            let mut shared = self.shared();
            shared.paused = paused;
            if let Current::Running(generation) = &shared.current {
                generation.pauser.send_replace(paused);
            }
        }
        tracing::info!(paused, "pause changed from the app");
        self.notify(Change::Status);
        self.status()
    }
}

/// The app's exit status after its event loop returned: 0, also after a start that failed,
/// once it is reported. A non-zero status would make launchd start the app again every 10 s
/// (`KeepAlive {SuccessfulExit false}`, see `login_item`); crashes still exit non-zero.
pub fn exit_code(result: &anyhow::Result<()>) -> u8 {
    if let Err(err) = result {
        tracing::error!("{err:#}");
        eprintln!("second-brain: {err:#}");
    }
    0
}

/// The app's setup checklist: why it could not start its bridge (if so), the bridge's
/// `doctor` checks and the Automation probe, and the login item when the user switched it
/// off in System Settings.
pub async fn app_checks(
    attention: Option<String>,
    bridge: Option<Supervisor>,
    login: Option<crate::login_item::LoginItem>,
) -> Vec<Check> {
    let mut checks: Vec<Check> = attention.map(doctor::startup_failed).into_iter().collect();
    if let Some(bridge) = bridge {
        checks.extend(bridge.setup_checks().await);
    }
    if login.is_some_and(|item| item.launchd_state() == crate::login_item::State::SwitchedOff) {
        checks.push(doctor::login_item_switched_off());
    }
    checks
}

/// Why a front end's set-up panicked, as the sentence it shows ("setting up failed: …").
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = (panic.downcast_ref::<&str>().copied())
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("an unexpected error");
    format!("setting up failed: {text}")
}

/// Completes, with the signal's name, on SIGTERM (launchd, `kill`, logout) or SIGINT (Ctrl-C),
/// which a front end answers by quitting the way its Quit does. Never completes when the
/// handlers cannot be installed (that is logged: the signal would then end the process
/// unsaved).
#[cfg(unix)]
pub async fn quit_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(cause = %err, "cannot handle SIGTERM; it will end the process unsaved");
            std::future::pending().await
        }
    }
}

/// Opens a folder or URL the way the platform does (`open`: Finder for folders, System
/// Settings for `x-apple.systempreferences:` URLs; `xdg-open` elsewhere), without waiting for
/// the viewer.
fn open_with_system(target: &str) -> std::io::Result<()> {
    let opener = if cfg!(target_os = "macos") {
        "/usr/bin/open"
    } else {
        "xdg-open"
    };
    let mut child = std::process::Command::new(opener).arg(target).spawn()?;
    // Reap the opener when it is done, so it does not linger as a zombie.
    std::thread::spawn(move || {
        if let Ok(status) = child.wait()
            && !status.success()
        {
            tracing::warn!(%status, "the system opener failed");
        }
    });
    Ok(())
}

/// Saves the store now and maps a failure to a sentence naming the file.
async fn flush(store: &SessionStore) -> Result<(), SupervisorError> {
    store.flush().await.map_err(SupervisorError::from)
}

/// Tells `notify` about session changes; a burst of events becomes one notification.
async fn forward_sessions(
    mut events: broadcast::Receiver<SessionEvent>,
    notify: Notify,
    stop: CancellationToken,
) {
    use broadcast::error::{RecvError, TryRecvError};
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(_) | Err(RecvError::Lagged(_)) => {
                while let Ok(_) | Err(TryRecvError::Lagged(_)) = events.try_recv() {}
                notify(Change::Sessions);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Tells `notify` about status changes.
async fn forward_status(
    mut status: watch::Receiver<Status>,
    notify: Notify,
    stop: CancellationToken,
) {
    let mut reminders = status.borrow().reminder_changes;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let now = status.borrow_and_update().reminder_changes;
        if std::mem::replace(&mut reminders, now) != now {
            notify(Change::Reminders);
        }
        notify(Change::Status);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::secrets::MemoryKeyStore;

    fn env_with(vars: &[(&str, String)]) -> Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Environment {
            overrides: Overrides::default(),
            vars: Arc::new(move |name| map.get(name).cloned()),
            keys: Arc::new(MemoryKeyStore::default()),
            probe: Sender::with_program("true"),
            opener: Arc::new(|_| Err("no opener in tests".to_owned())),
        }
    }

    #[test]
    fn data_and_log_dirs_match_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(&[("SECOND_BRAIN_DATA_DIR", dir.path().display().to_string())]);
        let config = env.resolve().unwrap();
        assert_eq!(env.dirs().unwrap(), config.dirs());

        let mut env = env_with(&[]);
        env.overrides.data_dir = Some(dir.path().join("elsewhere"));
        let config = env.resolve().unwrap();
        assert_eq!(env.dirs().unwrap(), config.dirs());
        assert_eq!(config.log_dir, dir.path().join("elsewhere/logs"));

        // Unset or blank: the platform's data folder (not resolved here, so that the test
        // never reads this user's real settings file).
        for vars in [vec![], vec![("SECOND_BRAIN_DATA_DIR", "  ".to_owned())]] {
            let env = env_with(&vars);
            let default = dirs::data_dir().map(|d| d.join(crate::config::BUNDLE_ID));
            assert_eq!(env.dirs().ok().map(|d| d.data), default, "{vars:?}");
        }
    }

    #[test]
    fn refused_settings_are_labelled_as_the_page_labels_them() {
        let err = SupervisorError::from(ConfigError::Invalid {
            setting: Setting::Vault,
            reason: "/nope does not exist".to_owned(),
        });
        assert_eq!(err.to_string(), "Vault folder: /nope does not exist");
        let err = SupervisorError::from(ConfigError::Missing {
            setting: Setting::ChatDb,
            hint: "no home directory",
        });
        assert_eq!(err.to_string(), "CHAT_DB_PATH: no home directory");
    }

    /// Issue 11: the app lists the pending reminders, shows the next one in the status
    /// line, cancels one (the note changes), and hears of each change.
    #[tokio::test(flavor = "multi_thread")]
    async fn reminders_are_listed_shown_cancelled_and_fed() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir_all(vault.join("Tasks")).unwrap();
        let note = vault.join("Tasks/Dentist.md");
        let text = "---\ntags: []\nreminder:\n  due: 2999-01-01T17:00:00+00:00\n  sent: false\n---\n# Dentist\n";
        std::fs::write(&note, text).unwrap();
        let path = |p: &str| dir.path().join(p).display().to_string();
        let env = env_with(&[
            ("SECOND_BRAIN_DATA_DIR", path("data")),
            ("CHAT_DB_PATH", path("chat.db")),
            ("VAULT_PATH", vault.display().to_string()),
            ("ANTHROPIC_API_KEY", "sk-ant-test".to_owned()),
            ("ALLOWED_SENDERS", "+15551234567".to_owned()),
        ]);
        let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = Supervisor::new(
            env,
            Arc::new(move |c| {
                let _ = tx.send(c);
            }),
        )
        .unwrap();
        supervisor.launch().await;
        let mut reminders_changed = async || {
            let wait = async { while changes.recv().await != Some(Change::Reminders) {} };
            tokio::time::timeout(Duration::from_secs(20), wait)
                .await
                .expect("fed")
        };
        reminders_changed().await;
        let listed = supervisor.reminders().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].path.as_str(), listed[0].title.as_str()),
            ("Tasks/Dentist.md", "Dentist")
        );
        let due = crate::reminders::local(&listed[0].due);
        let line = supervisor.status().next_reminder.unwrap();
        assert_eq!(
            line,
            format!("Next reminder {}", due.format("%a %-d %b %H:%M"))
        );

        supervisor
            .cancel_reminder("Tasks/Dentist.md")
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&note).unwrap(),
            "---\ntags: []\n---\n# Dentist\n"
        );
        reminders_changed().await;
        assert!(supervisor.reminders().await.unwrap().is_empty());
        let err = supervisor
            .cancel_reminder("Tasks/Dentist.md")
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "Tasks/Dentist.md has no pending reminder");
        assert!(supervisor.cancel_reminder("../x.md").await.is_err());
        supervisor.shutdown().await;
    }

    #[tokio::test]
    async fn the_pause_survives_a_restart_and_changes_are_fed() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        let env = env_with(&[
            (
                "SECOND_BRAIN_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            (
                "CHAT_DB_PATH",
                dir.path().join("chat.db").display().to_string(),
            ),
        ]);
        let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
        let supervisor = Supervisor::new(
            env,
            Arc::new(move |c| {
                let _ = tx.send(c);
            }),
        )
        .unwrap();
        supervisor.launch().await;
        assert_eq!(changes.recv().await, Some(Change::Sessions));
        assert_eq!(changes.recv().await, Some(Change::Status));
        assert!(supervisor.set_paused(true).paused);
        supervisor
            .update_settings(move |file| {
                Ok(Settings {
                    vault_path: Some(vault),
                    ..file
                })
            })
            .await
            .unwrap();
        assert!(supervisor.status().paused, "the pause outlives the restart");
        let Effective::Running(config) = supervisor.effective() else {
            panic!("the restarted bridge runs");
        };
        assert!(config.vault.is_some());
        let err = supervisor.set_api_key("sk ant").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "API key: a key has no spaces or line breaks"
        );
        supervisor.shutdown().await;
        assert!(!crate::lock::DataDirLock::is_held(&dir.path().join("data")));
    }
}
