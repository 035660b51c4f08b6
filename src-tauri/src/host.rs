//! The bridge inside the app: [`Host`] owns the running `bridge::Bridge` and is what the
//! commands, the tray and the exit path talk to.
//!
//! Invariants: at most one bridge runs, and every start, restart and stop happens under one
//! async lock (`lifecycle`), so a bridge has fully stopped (in-flight work drained, sessions
//! saved, data-dir lock released) before the next one opens. Commands that change sessions
//! take the same lock, so a change never lands in a store that is closing; reads never wait
//! for it: they use the current generation's handles, swapped under a short `std` mutex that
//! is never held across `.await`. Changes of the sessions or of the status reach [`Notify`]
//! from two forwarding tasks per generation, owned by the host's tracker and stopped with the
//! generation (no polling). Settings are validated and written by the bridge
//! (`Settings::save`); the host only maps the page's form onto them, then restarts the bridge
//! so the change applies without restarting the app. The user's pause survives restarts.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bridge::Bridge;
use bridge::allowlist::Handle;
use bridge::anthropic::DEFAULT_MODEL;
use bridge::config::{self, Config, ConfigError, Overrides, Settings};
use bridge::doctor::{self, Check};
use bridge::sender::Sender;
use bridge::sessions::{Session, SessionEvent, SessionStore};
use bridge::status::{SeenGroup, State, Status, StatusBoard, Stranger};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{SettingsForm, SettingsView, StatusLine};

/// How long a stop waits for the bridge's own bounded drain before giving up on it.
const STOP_DEADLINE: Duration = Duration::from_secs(bridge::DRAIN_DEADLINE.as_secs() + 5);

/// Why the host refused or failed something. Each message is one sentence for the page.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A setting was refused; nothing was written.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field as the settings page labels it.
        field: &'static str,
        /// What is wrong with it (the bridge's words).
        reason: String,
    },
    /// There is no session for this chat (it may have ended meanwhile).
    #[error("no session for chat {chat}")]
    UnknownSession {
        /// The chat guid the page asked for.
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
    /// The Keychain refused to store or remove the API key.
    #[error("Keychain: {reason}")]
    Keychain {
        /// What the Keychain said.
        reason: String,
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

impl HostError {
    /// A refused setting, labelled the way the settings page labels its fields.
    fn from_config(err: ConfigError) -> HostError {
        match err {
            ConfigError::Invalid { setting, reason } => HostError::Invalid {
                field: field_label(setting),
                reason,
            },
            ConfigError::Missing { setting, hint } => HostError::Invalid {
                field: field_label(setting),
                reason: hint.to_owned(),
            },
            ConfigError::Io { path, source } => HostError::Save {
                what: "settings",
                path,
                source,
            },
        }
    }
}

/// The settings page's label for a setting the bridge names.
fn field_label(setting: &'static str) -> &'static str {
    match setting {
        "vault" | "vault_path" | "VAULT_PATH" => "Vault folder",
        "model" | "CLAUDE_MODEL" => "Model",
        "allowed_senders" | "ALLOWED_SENDERS" => "Allowed senders",
        "session_timeout_minutes" | "SESSION_TIMEOUT_MS" => "Session timeout",
        "base_url" | "ANTHROPIC_BASE_URL" => "API base URL",
        other => other,
    }
}

/// What changed, for the pages and the tray.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A session was created, changed or removed.
    Sessions,
    /// The status line, the pause or the strangers changed.
    Status,
}

/// Told about every [`Change`]; called from the host's tasks, so it must not block.
pub type Notify = Arc<dyn Fn(Change) + Send + Sync>;

/// Where the API key lives: the macOS Keychain in the app, memory in tests.
pub trait Keychain: Send + Sync {
    /// The stored key, if any.
    fn api_key(&self) -> Option<String>;
    /// Stores or replaces the key.
    fn set_api_key(&self, key: &str) -> Result<(), String>;
    /// Removes the key; removing a missing key is not an error.
    fn clear_api_key(&self) -> Result<(), String>;
}

/// The system Keychain through `bridge::secrets`.
pub struct SystemKeychain;

impl Keychain for SystemKeychain {
    fn api_key(&self) -> Option<String> {
        bridge::secrets::api_key()
    }

    fn set_api_key(&self, key: &str) -> Result<(), String> {
        bridge::secrets::set_api_key(key).map_err(|err| err.to_string())
    }

    fn clear_api_key(&self) -> Result<(), String> {
        bridge::secrets::clear_api_key().map_err(|err| err.to_string())
    }
}

/// Looks up an environment variable.
pub type Vars = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Everything the host resolves the bridge's configuration from.
#[derive(Clone)]
pub struct Environment {
    /// Path overrides (none in the app).
    pub overrides: Overrides,
    /// Environment variables: the process's in the app, a map in tests.
    pub vars: Vars,
    /// Where the API key is stored.
    pub keychain: Arc<dyn Keychain>,
    /// Runs the Automation probe of the setup checklist.
    pub probe: Sender,
}

impl Environment {
    /// The app's environment: process variables, the Keychain, `osascript` on `PATH`.
    pub fn system() -> Environment {
        Environment {
            overrides: Overrides::default(),
            vars: Arc::new(|name| std::env::var(name).ok()),
            keychain: Arc::new(SystemKeychain),
            probe: Sender::default(),
        }
    }

    /// Resolves the bridge's configuration (blocking: reads the settings file and Keychain).
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let vars = Arc::clone(&self.vars);
        let keychain = Arc::clone(&self.keychain);
        Config::resolve(
            &self.overrides,
            move |name| vars(name),
            move || keychain.api_key(),
        )
    }

    fn var(&self, name: &str) -> Option<String> {
        (self.vars)(name).filter(|value| !value.trim().is_empty())
    }

    /// The data directory, found the way `Config::resolve` finds it. Needed even when the
    /// rest of the configuration does not resolve, so that Settings can still repair it.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.overrides
            .data_dir
            .clone()
            .or_else(|| self.var("SECOND_BRAIN_DATA_DIR").map(PathBuf::from))
            .or_else(|| dirs::data_dir().map(|dir| dir.join(config::BUNDLE_ID)))
    }

    /// The log directory, chosen the way `Config::resolve` chooses it (without reading the
    /// settings file, which a resolve would move aside if it did not parse).
    pub fn log_dir(&self) -> Option<PathBuf> {
        let overridden =
            self.overrides.data_dir.is_some() || self.var("SECOND_BRAIN_DATA_DIR").is_some();
        match dirs::home_dir() {
            Some(home) if cfg!(target_os = "macos") && !overridden => {
                Some(home.join("Library/Logs/Second Brain"))
            }
            _ => self.data_dir().map(|dir| dir.join("logs")),
        }
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
    data_dir: PathBuf,
    notify: Notify,
    lifecycle: Arc<tokio::sync::Mutex<()>>,
    shared: Mutex<Shared>,
    tasks: TaskTracker,
}

/// The running bridge and its controls. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl Host {
    /// A host that has not started its bridge yet; `None` without a data directory.
    pub fn new(env: Environment, notify: Notify) -> Option<Host> {
        let data_dir = env.data_dir()?;
        Some(Host {
            inner: Arc::new(Inner {
                env,
                data_dir,
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

    fn shared(&self) -> MutexGuard<'_, Shared> {
        // Every section is a plain read or swap: a panic cannot leave it half-done.
        self.inner
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, change: Change) {
        (self.inner.notify)(change);
    }

    /// Starts the bridge in the background. The lifecycle lock is taken before this returns,
    /// so anything that waits for [`settled`](Self::settled) afterwards sees the start done.
    pub fn launch(&self) {
        let guard = Arc::clone(&self.inner.lifecycle).try_lock_owned();
        let host = self.clone();
        // Called from the app's setup, outside the runtime: spawned through Tauri. The task is
        // not lost: it holds the lifecycle lock, which `shutdown` waits for.
        tauri::async_runtime::spawn(async move {
            let _guard = match guard {
                Ok(guard) => guard,
                Err(_) => Arc::clone(&host.inner.lifecycle).lock_owned().await,
            };
            host.start_locked(Vec::new()).await;
        });
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
            // Blocking: reads the settings file, the Keychain, the sessions and the ledger.
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
    fn store(&self) -> Result<SessionStore, HostError> {
        match &self.shared().current {
            Current::Running(generation) => Ok(generation.sessions.clone()),
            Current::Failed { reason } => Err(HostError::NotRunning {
                reason: reason.clone(),
            }),
            Current::Stopped => Err(HostError::NotRunning {
                reason: "it has stopped".to_owned(),
            }),
        }
    }

    /// Every session, most recent activity first. Waits for a start under way.
    pub async fn sessions(&self) -> Result<Vec<Session>, HostError> {
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
    pub async fn clear_session(&self, chat: &str) -> Result<(), HostError> {
        let _guard = self.inner.lifecycle.lock().await;
        let store = self.store()?;
        if store.remove(chat).is_none() {
            return Err(HostError::UnknownSession {
                chat: chat.to_owned(),
            });
        }
        tracing::info!(chat, "session cleared from the app");
        flush(&store).await
    }

    /// Ends every session; returns how many there were, once `sessions.json` says so.
    pub async fn clear_all(&self) -> Result<usize, HostError> {
        let _guard = self.inner.lifecycle.lock().await;
        let store = self.store()?;
        let cleared = store.clear_all();
        tracing::info!(cleared, "all sessions cleared from the app");
        flush(&store).await?;
        Ok(cleared)
    }

    /// The settings in effect (the running configuration, which environment variables may
    /// override), or the settings file when the configuration does not resolve.
    pub fn settings(&self) -> SettingsView {
        let effective = match &self.shared().current {
            Current::Running(generation) => Some(view_of_config(&generation.config)),
            _ => None,
        };
        effective.unwrap_or_else(|| {
            let (file, _) = Settings::load(&self.inner.data_dir).unwrap_or_default();
            SettingsView {
                settings: SettingsForm {
                    vault_path: file
                        .vault_path
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    model: file.model.unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
                    allowed_senders: file.allowed_senders,
                    session_timeout_minutes: file
                        .session_timeout_minutes
                        .map_or(60, |m| u32::try_from(m).unwrap_or(u32::MAX)),
                    allow_sms: file.allow_sms,
                },
                api_key_set: self.inner.env.keychain.api_key().is_some(),
            }
        })
    }

    /// The vault folder in effect, if one is chosen.
    pub fn vault(&self) -> Option<PathBuf> {
        let running = match &self.shared().current {
            Current::Running(generation) => Some(generation.config.vault.clone()),
            _ => None,
        };
        running.unwrap_or_else(|| {
            Settings::load(&self.inner.data_dir)
                .ok()
                .and_then(|(file, _)| file.vault_path)
        })
    }

    /// Writes the page's settings (all or nothing, validated by the bridge) and restarts the
    /// bridge with them.
    pub async fn save_settings(&self, form: SettingsForm) -> Result<SettingsView, HostError> {
        let _guard = self.inner.lifecycle.lock().await;
        self.edit_settings(move |file| settings_from_form(form, file))
            .await?;
        self.restart_locked().await;
        Ok(self.settings())
    }

    /// Adds one sender to the settings file's allowed senders and restarts the bridge.
    pub async fn allow_sender(&self, raw: &str) -> Result<SettingsView, HostError> {
        let handle = Handle::parse(raw).map_err(|err| HostError::Invalid {
            field: field_label("allowed_senders"),
            reason: err.to_string(),
        })?;
        let _guard = self.inner.lifecycle.lock().await;
        self.edit_settings(move |mut file| {
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
        self.restart_locked().await;
        Ok(self.settings())
    }

    /// Adds a group chat to the settings file's allowed groups and restarts the bridge.
    pub async fn allow_group(&self, guid: &str) -> Result<SettingsView, HostError> {
        let guid = guid.trim().to_owned();
        let _guard = self.inner.lifecycle.lock().await;
        self.edit_settings(move |mut file| {
            if !file.allowed_groups.contains(&guid) {
                file.allowed_groups.push(guid);
            }
            Ok(file)
        })
        .await?;
        tracing::info!("a group chat was allowed from the app");
        self.restart_locked().await;
        Ok(self.settings())
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

    /// Loads the settings file, applies `edit`, validates and saves (blocking work).
    async fn edit_settings(
        &self,
        edit: impl FnOnce(Settings) -> Result<Settings, HostError> + Send + 'static,
    ) -> Result<(), HostError> {
        let data_dir = self.inner.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            let (file, _) = Settings::load(&data_dir).map_err(HostError::from_config)?;
            let edited = edit(file)?;
            edited.save(&data_dir).map_err(HostError::from_config)
        })
        .await
        .map_err(|join| HostError::Interrupted {
            what: "saving the settings",
            reason: join.to_string(),
        })?
    }

    /// Stores the API key in the Keychain and restarts the bridge with it.
    pub async fn set_api_key(&self, key: &str) -> Result<(), HostError> {
        let key = key.trim().to_owned();
        let refuse = |reason: &str| HostError::Invalid {
            field: "API key",
            reason: reason.to_owned(),
        };
        if key.is_empty() {
            return Err(refuse("paste a key first"));
        }
        if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(refuse("a key has no spaces or line breaks"));
        }
        let _guard = self.inner.lifecycle.lock().await;
        self.keychain(move |keychain| keychain.set_api_key(&key))
            .await?;
        tracing::info!("API key stored");
        self.restart_locked().await;
        Ok(())
    }

    /// Removes the API key from the Keychain and restarts the bridge without it.
    pub async fn clear_api_key(&self) -> Result<(), HostError> {
        let _guard = self.inner.lifecycle.lock().await;
        self.keychain(|keychain| keychain.clear_api_key()).await?;
        tracing::info!("API key removed");
        self.restart_locked().await;
        Ok(())
    }

    async fn keychain(
        &self,
        op: impl FnOnce(&dyn Keychain) -> Result<(), String> + Send + 'static,
    ) -> Result<(), HostError> {
        let keychain = Arc::clone(&self.inner.env.keychain);
        // The Keychain may show a prompt and block until it is answered.
        tokio::task::spawn_blocking(move || op(keychain.as_ref()))
            .await
            .map_err(|join| HostError::Interrupted {
                what: "the Keychain",
                reason: join.to_string(),
            })?
            .map_err(|reason| HostError::Keychain { reason })
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
            Err(err) => vec![settings_check(err.to_string())],
        });
        let (disk, automation) = tokio::join!(disk, doctor::automation(&self.inner.env.probe));
        let mut checks =
            disk.unwrap_or_else(|join| vec![settings_check(format!("checking failed: {join}"))]);
        checks.push(automation);
        checks
    }

    /// The status line and whether the user paused the bridge.
    pub fn status(&self) -> StatusLine {
        let shared = self.shared();
        let paused = shared.paused;
        let line = match &shared.current {
            Current::Stopped => "Starting…".to_owned(),
            Current::Failed { reason } => format!("Needs setup: {reason}"),
            Current::Running(generation) => {
                let mut status: Status = generation.status.get();
                // The pause is the user's: show it at once, before intake has reacted.
                match (paused, &status.state) {
                    (true, State::Running) => status.state = State::Paused,
                    (false, State::Paused) => status.state = State::Running,
                    _ => {}
                }
                status.line()
            }
        };
        StatusLine { line, paused }
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

/// Saves the store now and maps a failure to a sentence naming the file.
async fn flush(store: &SessionStore) -> Result<(), HostError> {
    store.flush().await.map_err(|source| HostError::Save {
        what: "sessions",
        path: store.path().to_path_buf(),
        source,
    })
}

/// The page's form as a settings file: blank fields unset, senders in normal form and
/// without duplicates, everything the page does not edit (the API base URL) kept from `file`.
fn settings_from_form(form: SettingsForm, file: Settings) -> Result<Settings, HostError> {
    let text = |value: String| {
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    };
    let mut senders: Vec<String> = Vec::new();
    for raw in form.allowed_senders.iter().filter(|s| !s.trim().is_empty()) {
        let handle = Handle::parse(raw).map_err(|err| HostError::Invalid {
            field: field_label("allowed_senders"),
            reason: err.to_string(),
        })?;
        if !senders.iter().any(|known| known == handle.as_str()) {
            senders.push(handle.as_str().to_owned());
        }
    }
    Ok(Settings {
        vault_path: text(form.vault_path).map(PathBuf::from),
        model: text(form.model),
        allowed_senders: senders,
        session_timeout_minutes: Some(u64::from(form.session_timeout_minutes)),
        allow_sms: form.allow_sms,
        ..file
    })
}

fn view_of_config(config: &Config) -> SettingsView {
    SettingsView {
        settings: SettingsForm {
            vault_path: config
                .vault
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            model: config.model.clone(),
            allowed_senders: config
                .allowed_senders
                .iter()
                .map(|h| h.as_str().to_owned())
                .collect(),
            session_timeout_minutes: u32::try_from(
                config.session_timeout.as_millis().div_ceil(60_000),
            )
            .unwrap_or(u32::MAX)
            .max(1),
            allow_sms: config.allow_sms,
        },
        api_key_set: config.auth.is_some(),
    }
}

/// The checklist item shown when the configuration itself does not resolve.
fn settings_check(detail: String) -> Check {
    Check {
        id: "settings",
        label: "Settings valid",
        ok: false,
        detail,
        fix: Some("Correct it in Settings (or the environment variable it names).".to_owned()),
        pane: None,
    }
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
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        notify(Change::Status);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A Keychain without a key, so that no test reads this user's real one.
    struct NoKeychain;

    impl Keychain for NoKeychain {
        fn api_key(&self) -> Option<String> {
            None
        }
        fn set_api_key(&self, _: &str) -> Result<(), String> {
            Err("read-only in tests".to_owned())
        }
        fn clear_api_key(&self) -> Result<(), String> {
            Ok(())
        }
    }

    fn env_with(vars: &[(&str, String)]) -> Environment {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        Environment {
            overrides: Overrides::default(),
            vars: Arc::new(move |name| map.get(name).cloned()),
            keychain: Arc::new(NoKeychain),
            probe: Sender::with_program("/bin/true"),
        }
    }

    #[test]
    fn data_and_log_dirs_match_the_bridge_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_with(&[("SECOND_BRAIN_DATA_DIR", dir.path().display().to_string())]);
        let config = env.resolve().unwrap();
        assert_eq!(env.data_dir(), Some(config.data_dir.clone()));
        assert_eq!(env.log_dir(), Some(config.log_dir));

        let mut env = env_with(&[]);
        env.overrides.data_dir = Some(dir.path().join("elsewhere"));
        let config = env.resolve().unwrap();
        assert_eq!(env.data_dir(), Some(config.data_dir.clone()));
        assert_eq!(env.log_dir(), Some(config.log_dir));

        // Unset or blank: the platform's data folder (not resolved here, so that the test
        // never reads this user's real settings file).
        for vars in [vec![], vec![("SECOND_BRAIN_DATA_DIR", "  ".to_owned())]] {
            let env = env_with(&vars);
            let default = dirs::data_dir().map(|d| d.join(config::BUNDLE_ID));
            assert_eq!(env.data_dir(), default, "{vars:?}");
        }
    }

    #[test]
    fn the_form_becomes_a_settings_file() {
        let file = Settings {
            base_url: Some("http://127.0.0.1:9".to_owned()),
            model: Some("old".to_owned()),
            ..Settings::default()
        };
        let form = SettingsForm {
            vault_path: "  /Users/zoë/🧠 Vault ".to_owned(),
            model: " ".to_owned(),
            allowed_senders: vec![
                "+1 (555) 123-4567".to_owned(),
                "".to_owned(),
                "+15551234567".to_owned(),
                "Sarah@Example.COM".to_owned(),
            ],
            session_timeout_minutes: 30,
            allow_sms: false,
        };
        let settings = settings_from_form(form.clone(), file.clone()).unwrap();
        assert_eq!(
            settings,
            Settings {
                vault_path: Some(PathBuf::from("/Users/zoë/🧠 Vault")),
                model: None,
                allowed_senders: vec!["+15551234567".to_owned(), "sarah@example.com".to_owned()],
                session_timeout_minutes: Some(30),
                base_url: Some("http://127.0.0.1:9".to_owned()),
                ..Settings::default()
            }
        );
        for bad in ["555-1234", "bob", "+1\u{2028}5", "a b@c.d"] {
            let mut form = form.clone();
            form.allowed_senders = vec![bad.to_owned()];
            let err = settings_from_form(form, file.clone()).unwrap_err();
            assert!(
                err.to_string().starts_with("Allowed senders: "),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn settings_are_labelled_as_the_page_labels_them() {
        let cases = [
            ("vault", "Vault folder"),
            ("model", "Model"),
            ("allowed_senders", "Allowed senders"),
            ("session_timeout_minutes", "Session timeout"),
            ("base_url", "API base URL"),
            ("LOG_LEVEL", "LOG_LEVEL"),
        ];
        for (setting, label) in cases {
            assert_eq!(field_label(setting), label);
        }
        let err = HostError::from_config(ConfigError::Invalid {
            setting: "vault",
            reason: "/nope does not exist".to_owned(),
        });
        assert_eq!(err.to_string(), "Vault folder: /nope does not exist");
    }

    #[test]
    fn minutes_round_up_and_never_show_zero() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        for (ms, minutes) in [("1", 1), ("60000", 1), ("60001", 2), ("5400000", 90)] {
            let env = env_with(&[
                ("SECOND_BRAIN_DATA_DIR", data.clone()),
                ("SESSION_TIMEOUT_MS", ms.to_owned()),
            ]);
            let view = view_of_config(&env.resolve().unwrap());
            assert_eq!(view.settings.session_timeout_minutes, minutes, "{ms} ms");
        }
    }
}
