//! Configuration, resolved once into a typed [`Config`].
//!
//! Sources, weakest first: defaults, the settings file in the data directory (written by the
//! app), environment variables (the original service's names, so an existing `.env` keeps
//! working), command-line overrides. Every bad value is one clear error naming the setting;
//! library code never exits the process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::allowlist::Allowlist;
use crate::anthropic::{
    Auth, DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_MODEL, DEFAULT_REQUEST_TIMEOUT,
};
use crate::persist::{self, Loaded};

/// The app's bundle identifier; names the data directory and the Keychain service.
pub const BUNDLE_ID: &str = "app.secondbrain.SecondBrain";
/// The settings file's name inside the data directory.
pub const SETTINGS_FILE: &str = "settings.json";
/// Texts that arrived while the bridge was down are handled if at most this old.
pub const DEFAULT_CATCH_UP: Duration = Duration::from_secs(24 * 3600);
/// Texts one sender may have handled per minute.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 30;
/// Tokens the agent may use per day (see [`crate::limits`]).
pub const DEFAULT_DAILY_TOKEN_BUDGET: u64 = 1_000_000;

/// A setting, as the user names it: [`name`](Setting::name) is what they write (the variable,
/// or the settings file's key), [`label`](Setting::label) what the settings page calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `SECOND_BRAIN_DATA_DIR`.
    DataDir,
    /// `CHAT_DB_PATH`.
    ChatDb,
    /// The vault folder (`VAULT_PATH`, `vault_path`).
    Vault,
    /// The model (`CLAUDE_MODEL`, `model`).
    Model,
    /// The API key (`ANTHROPIC_API_KEY`, the keychain).
    ApiKey,
    /// The API base URL (`ANTHROPIC_BASE_URL`, `base_url`).
    BaseUrl(Origin),
    /// Who may reach the agent (`ALLOWED_SENDERS`, `allowed_senders`).
    AllowedSenders(Origin),
    /// Idle time before a conversation ends (`SESSION_TIMEOUT_MS`, `session_timeout_minutes`).
    SessionTimeout(Origin),
    /// `SESSION_SWEEP_INTERVAL_MS`.
    SweepInterval,
    /// `CHAT_DB_POLL_MS`.
    PollInterval,
    /// `MAX_CONCURRENT_CHATS`.
    MaxConcurrentChats,
    /// `ANTHROPIC_TIMEOUT_MS`.
    ApiTimeout,
    /// `ANTHROPIC_MAX_RETRIES`.
    ApiMaxRetries,
    /// `CATCH_UP_HOURS`.
    CatchUp,
    /// `RATE_LIMIT_PER_MINUTE`.
    RateLimit,
    /// `DAILY_TOKEN_BUDGET`.
    DailyTokenBudget,
    /// `LOG_LEVEL`.
    LogLevel,
    /// `ALLOW_SMS`.
    AllowSms,
    /// Group chats whose allowed members are answered (`ALLOWED_GROUPS`, `allowed_groups`).
    AllowedGroups(Origin),
    /// The longest one agent run may take (`RUN_DEADLINE_MS`).
    RunDeadline,
    /// How long a text waits for its attachments' files (`ATTACHMENT_WAIT_MS`).
    AttachmentWait,
    /// When the morning digest goes out (`digest.time`, `HH:MM`).
    DigestTime,
    /// Who gets the morning digest (`digest.recipient`, an allowed sender).
    DigestRecipient,
    /// Whether the model may read the pages texts link to (`READ_LINKED_PAGES`,
    /// `read_linked_pages`).
    ReadLinkedPages(Origin),
}

/// Where a value came from, for settings whose name differs between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// An environment variable.
    Environment,
    /// The settings file (written by the app).
    SettingsFile,
}

impl Setting {
    /// The name the user writes: the variable, or the settings file's key.
    pub fn name(self) -> &'static str {
        use Origin::{Environment as Env, SettingsFile as File};
        match self {
            Setting::DataDir => "SECOND_BRAIN_DATA_DIR",
            Setting::ChatDb => "CHAT_DB_PATH",
            Setting::Vault => "vault",
            Setting::Model => "model",
            Setting::ApiKey => "ANTHROPIC_API_KEY",
            Setting::BaseUrl(Env) => "ANTHROPIC_BASE_URL",
            Setting::BaseUrl(File) => "base_url",
            Setting::AllowedSenders(Env) => "ALLOWED_SENDERS",
            Setting::AllowedSenders(File) => "allowed_senders",
            Setting::SessionTimeout(Env) => "SESSION_TIMEOUT_MS",
            Setting::SessionTimeout(File) => "session_timeout_minutes",
            Setting::SweepInterval => "SESSION_SWEEP_INTERVAL_MS",
            Setting::PollInterval => "CHAT_DB_POLL_MS",
            Setting::MaxConcurrentChats => "MAX_CONCURRENT_CHATS",
            Setting::ApiTimeout => "ANTHROPIC_TIMEOUT_MS",
            Setting::ApiMaxRetries => "ANTHROPIC_MAX_RETRIES",
            Setting::CatchUp => "CATCH_UP_HOURS",
            Setting::RateLimit => "RATE_LIMIT_PER_MINUTE",
            Setting::DailyTokenBudget => "DAILY_TOKEN_BUDGET",
            Setting::LogLevel => "LOG_LEVEL",
            Setting::AllowSms => "ALLOW_SMS",
            Setting::AllowedGroups(Env) => "ALLOWED_GROUPS",
            Setting::AllowedGroups(File) => "allowed_groups",
            Setting::RunDeadline => "RUN_DEADLINE_MS",
            Setting::AttachmentWait => "ATTACHMENT_WAIT_MS",
            Setting::DigestTime => "digest.time",
            Setting::DigestRecipient => "digest.recipient",
            Setting::ReadLinkedPages(Env) => "READ_LINKED_PAGES",
            Setting::ReadLinkedPages(File) => "read_linked_pages",
        }
    }

    /// What the settings page calls it; settings the page does not show go by their name.
    pub fn label(self) -> &'static str {
        match self {
            Setting::Vault => "Vault folder",
            Setting::Model => "Model",
            Setting::ApiKey => "API key",
            Setting::BaseUrl(_) => "API base URL",
            Setting::AllowedSenders(_) => "Allowed senders",
            Setting::SessionTimeout(_) => "Session timeout",
            Setting::DigestTime => "Digest time",
            Setting::DigestRecipient => "Digest recipient",
            Setting::AllowedGroups(_) => "Allowed groups",
            Setting::ReadLinkedPages(_) => "Read linked pages",
            other => other.name(),
        }
    }
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A bad configuration value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("{setting}: {reason}")]
    Invalid {
        /// The setting.
        setting: Setting,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A required value is missing.
    #[error("{setting} is not set: {hint}")]
    Missing {
        /// The setting.
        setting: Setting,
        /// How to set it.
        hint: &'static str,
    },
    /// The settings file could not be read or written.
    #[error("settings file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What the user sets in the app (or by hand) — `settings.json` in the data directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The Obsidian vault folder.
    pub vault_path: Option<PathBuf>,
    /// The model to use.
    pub model: Option<String>,
    /// Handles whose texts reach the agent.
    pub allowed_senders: Vec<String>,
    /// Minutes of silence after which a conversation ends.
    pub session_timeout_minutes: Option<u64>,
    /// An Anthropic-compatible API base URL.
    pub base_url: Option<String>,
    /// Whether SMS/RCS texts reach the agent too. Off by default: an SMS sender's number is
    /// easy to spoof, so anyone could pose as an allowed sender.
    pub allow_sms: bool,
    /// Group chats (`chat.guid`, like `iMessage;+;chat123…`) whose allowed members' texts
    /// reach the agent; other groups are ignored.
    pub allowed_groups: Vec<String>,
    /// The morning digest: off, or when and to whom (left out of the file while unset).
    #[serde(skip_serializing_if = "crate::digest::DigestSettings::is_unset")]
    pub digest: crate::digest::DigestSettings,
    /// Whether the model may read the pages texts link to (Anthropic's server-side web
    /// fetch). Off by default: the page's words then reach the model, and the API fetches it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_linked_pages: bool,
}

impl Settings {
    /// Reads the settings file. A file that does not parse is moved aside, and its path and
    /// the reason are returned with the defaults, so that the app still starts.
    pub fn load(data_dir: &Path) -> Result<(Settings, Option<String>), ConfigError> {
        let path = data_dir.join(SETTINGS_FILE);
        match persist::load_json(&path).map_err(|source| ConfigError::Io { path, source })? {
            Loaded::Missing => Ok((Settings::default(), None)),
            Loaded::Ok(settings) => Ok((settings, None)),
            Loaded::MovedAside { moved_to, reason } => Ok((
                Settings::default(),
                Some(format!(
                    "settings file did not parse ({reason}); kept as {}",
                    moved_to.display()
                )),
            )),
        }
    }

    /// Validates the settings and writes them atomically; nothing is written when invalid.
    pub fn save(&self, data_dir: &Path) -> Result<(), ConfigError> {
        self.validate()?;
        let path = data_dir.join(SETTINGS_FILE);
        let bytes = serde_json::to_vec_pretty(self).expect("settings serialise");
        persist::write_atomic(&path, &bytes).map_err(|source| ConfigError::Io { path, source })
    }

    /// Checks every value the way [`Config::resolve`] would.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use Origin::SettingsFile as File;
        if let Some(vault) = &self.vault_path {
            validate_vault(vault)?;
        }
        if let Some(model) = &self.model {
            validate_model(model)?;
        }
        allowlist(&self.allowed_senders, Setting::AllowedSenders(File))?;
        if let Some(minutes) = self.session_timeout_minutes {
            session_timeout(
                Duration::from_secs(minutes.saturating_mul(60)),
                Setting::SessionTimeout(File),
            )?;
        }
        if let Some(url) = &self.base_url {
            validate_url(url, Setting::BaseUrl(File))?;
        }
        validate_groups(&self.allowed_groups, Setting::AllowedGroups(File))?;
        let senders = allowlist(&self.allowed_senders, Setting::AllowedSenders(File))?;
        digest_schedule(&self.digest, &senders)?;
        Ok(())
    }
}

/// The morning digest's schedule, `None` when it is off.
fn digest_schedule(
    settings: &crate::digest::DigestSettings,
    senders: &Allowlist,
) -> Result<Option<crate::digest::Schedule>, ConfigError> {
    use crate::digest::ScheduleError;
    settings.schedule(senders).map_err(|e| {
        let setting = match e {
            ScheduleError::Time(_) => Setting::DigestTime,
            ScheduleError::NoRecipient | ScheduleError::NotAllowed(_) => Setting::DigestRecipient,
        };
        invalid(setting, e.to_string())
    })
}

/// `READ_LINKED_PAGES` (the environment wins), else the settings file's.
fn read_linked_pages(
    settings: &Settings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<bool, ConfigError> {
    match env("READ_LINKED_PAGES") {
        Some(v) => switch(&v, Setting::ReadLinkedPages(Origin::Environment)),
        None => Ok(settings.read_linked_pages),
    }
}

/// An on/off variable's value.
fn switch(value: &str, setting: Setting) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(invalid(setting, format!("{value:?}: use true or false"))),
    }
}

/// `ALLOW_SMS` and `ALLOWED_GROUPS` (the environment wins), else the settings file's.
fn admission_settings(
    settings: &Settings,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(bool, Vec<String>), ConfigError> {
    let allow_sms = match env("ALLOW_SMS") {
        Some(v) => switch(&v, Setting::AllowSms)?,
        None => settings.allow_sms,
    };
    let groups = match env("ALLOWED_GROUPS") {
        Some(list) => {
            let groups: Vec<String> = list
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect();
            validate_groups(&groups, Setting::AllowedGroups(Origin::Environment))?;
            groups
        }
        None => settings.allowed_groups.clone(),
    };
    Ok((allow_sms, groups))
}

/// A group chat guid looks like `iMessage;+;chat123…` (`+` marks a group).
fn validate_groups(groups: &[String], setting: Setting) -> Result<(), ConfigError> {
    match groups.iter().find(|g| !g.contains(";+;")) {
        Some(bad) => Err(invalid(
            setting,
            format!("{bad:?} is not a group chat id (those look like iMessage;+;chat123…)"),
        )),
        None => Ok(()),
    }
}

/// Overrides from the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--chat-db`.
    pub chat_db: Option<PathBuf>,
    /// `--vault`.
    pub vault: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

/// Where the bridge keeps its state and its logs. Found without reading the settings file,
/// so a front end can open its logs and repair settings that do not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Sessions, ledger, settings, token budget, status, lock.
    pub data: PathBuf,
    /// Daily-rotated log files.
    pub logs: PathBuf,
}

impl Dirs {
    /// `--data-dir`, else `SECOND_BRAIN_DATA_DIR`, else the platform's data folder. Logs go to
    /// `~/Library/Logs/Second Brain` on macOS unless the data folder was chosen, else to
    /// `logs/` in the data folder.
    pub fn resolve(
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Dirs, ConfigError> {
        let chosen = overrides
            .data_dir
            .clone()
            .or_else(|| env("SECOND_BRAIN_DATA_DIR").map(PathBuf::from));
        let data = match &chosen {
            Some(dir) => dir.clone(),
            None => dirs::data_dir()
                .map(|d| d.join(BUNDLE_ID))
                .ok_or(ConfigError::Missing {
                    setting: Setting::DataDir,
                    hint: "no home directory",
                })?,
        };
        let logs = match (chosen, dirs::home_dir()) {
            (None, Some(home)) if cfg!(target_os = "macos") => {
                home.join("Library/Logs/Second Brain")
            }
            _ => data.join("logs"),
        };
        Ok(Dirs { data, logs })
    }
}

/// Everything the bridge needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Sessions, ledger, settings, token budget, status, lock.
    pub data_dir: PathBuf,
    /// Daily-rotated log files.
    pub log_dir: PathBuf,
    /// Messages' database.
    pub chat_db: PathBuf,
    /// The Obsidian vault (may not exist yet, or be on a volume not mounted yet: texts wait
    /// for it, and the status and the setup check say so).
    pub vault: Option<PathBuf>,
    /// API credentials, when known.
    pub auth: Option<Auth>,
    /// API base URL.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Limit on one API attempt, from connecting to the end of the response.
    pub api_timeout: Duration,
    /// Retries of a transient API failure after the first attempt.
    pub api_max_retries: u32,
    /// Who may reach the agent.
    pub allowed_senders: Allowlist,
    /// Whether SMS/RCS texts count (see [`Settings::allow_sms`] for the risk).
    pub allow_sms: bool,
    /// Group chats allowed by guid.
    pub allowed_groups: Vec<String>,
    /// Idle time after which a conversation ends.
    pub session_timeout: Duration,
    /// How often idle conversations are looked for.
    pub sweep_interval: Duration,
    /// The safety-net poll of chat.db, besides the file watcher.
    pub poll_interval: Duration,
    /// Conversations handled at the same time.
    pub max_concurrent_chats: usize,
    /// Texts that arrived while the bridge was down are handled when at most this old;
    /// older ones are skipped and counted.
    pub catch_up: Duration,
    /// Texts one sender may have handled per minute (by the texts' own dates).
    pub rate_limit_per_minute: u32,
    /// Tokens the agent may use per day.
    pub daily_token_budget: u64,
    /// How long one agent run may take; a text whose run passes it goes to Inbox.
    pub run_deadline: Duration,
    /// How long a text waits for its attachments' files before it is handled without them.
    pub attachment_wait: Duration,
    /// The morning digest's schedule; `None` when it is off.
    pub digest: Option<crate::digest::Schedule>,
    /// Whether the model may read linked pages ([`Settings::read_linked_pages`]).
    pub read_linked_pages: bool,
    /// `tracing` filter, e.g. `info` or `second_brain_bridge=debug`.
    pub log_level: String,
    /// A problem met while loading the settings file, to report.
    pub settings_problem: Option<String>,
}

impl Config {
    /// Resolves the configuration from the settings file, the environment (`env` looks a
    /// variable up; pass `|k| std::env::var(k).ok()`) and command-line overrides.
    pub fn resolve(
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
        keychain_key: impl FnOnce() -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let dirs = Dirs::resolve(overrides, env)?;
        let (settings, settings_problem) = Settings::load(&dirs.data)?;
        let (allow_sms, allowed_groups) = admission_settings(&settings, env)?;
        let chat_db = match (&overrides.chat_db, env("CHAT_DB_PATH"), dirs::home_dir()) {
            (Some(p), _, _) => p.clone(),
            (None, Some(p), _) => PathBuf::from(p),
            (None, None, Some(home)) => home.join("Library/Messages/chat.db"),
            (None, None, None) => {
                return Err(ConfigError::Missing {
                    setting: Setting::ChatDb,
                    hint: "no home directory",
                });
            }
        };
        let vault = overrides
            .vault
            .clone()
            .or(env("VAULT_PATH").map(PathBuf::from))
            .or(settings.vault_path.clone());
        // Only the form is checked here: a vault that is missing or not writable right now
        // (an unmounted volume, a folder not synced yet) makes texts wait, not the bridge fail.
        // One that exists must be a place a vault may be (not `/`, home, a system folder).
        if let Some(vault) = &vault {
            if !vault.is_absolute() {
                return Err(invalid(
                    Setting::Vault,
                    format!("{} is not an absolute path", vault.display()),
                ));
            }
            if let Ok(real) = std::fs::canonicalize(vault) {
                vault_place(&real)?;
            }
        }
        let auth = match (env("ANTHROPIC_API_KEY"), env("ANTHROPIC_AUTH_TOKEN")) {
            (Some(key), _) => Some(Auth::ApiKey(key.trim().to_string())),
            (None, Some(token)) => Some(Auth::Bearer(token.trim().to_string())),
            (None, None) => keychain_key().map(Auth::ApiKey),
        };
        let log_level = env("LOG_LEVEL").unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|e| invalid(Setting::LogLevel, format!("{log_level:?}: {e}")))?;
        let api = Api::resolve(&env, &settings)?;
        let pace = Pace::resolve(&env, &settings)?;
        let digest = digest_schedule(&settings.digest, &pace.allowed_senders)?;
        let read_linked_pages = read_linked_pages(&settings, env)?;
        Ok(Config {
            data_dir: dirs.data,
            log_dir: dirs.logs,
            chat_db,
            vault,
            auth,
            base_url: api.base_url,
            model: api.model,
            api_timeout: api.timeout,
            api_max_retries: api.max_retries,
            allowed_senders: pace.allowed_senders,
            allow_sms,
            allowed_groups,
            session_timeout: pace.session_timeout,
            sweep_interval: pace.sweep_interval,
            poll_interval: pace.poll_interval,
            max_concurrent_chats: pace.max_concurrent_chats,
            catch_up: pace.catch_up,
            rate_limit_per_minute: pace.rate_limit_per_minute,
            daily_token_budget: pace.daily_token_budget,
            run_deadline: pace.run_deadline,
            attachment_wait: pace.attachment_wait,
            digest,
            read_linked_pages,
            log_level,
            settings_problem,
        })
    }

    /// Where this configuration keeps state and logs.
    pub fn dirs(&self) -> Dirs {
        Dirs {
            data: self.data_dir.clone(),
            logs: self.log_dir.clone(),
        }
    }

    /// What the bridge still needs before it can handle texts, in the words of the setup
    /// checklist; `None` when it can run.
    pub fn missing_setup(&self) -> Option<&'static str> {
        match (&self.vault, &self.auth) {
            (None, _) => Some("no vault folder chosen"),
            (_, None) => Some("API key missing"),
            _ => None,
        }
    }

    /// Resolves from the process environment and the Keychain.
    pub fn from_env(overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::resolve(
            overrides,
            |k| std::env::var(k).ok(),
            crate::secrets::api_key,
        )
    }
}

/// The model and how the API is reached.
struct Api {
    base_url: String,
    model: String,
    timeout: Duration,
    max_retries: u32,
}

impl Api {
    fn resolve(env: &dyn Fn(&str) -> Option<String>, file: &Settings) -> Result<Api, ConfigError> {
        let model = env("CLAUDE_MODEL")
            .or(file.model.clone())
            .unwrap_or_else(|| DEFAULT_MODEL.to_string());
        validate_model(&model)?;
        let base_url = env("ANTHROPIC_BASE_URL")
            .or(file.base_url.clone())
            .unwrap_or_else(|| DEFAULT_BASE_URL.into());
        validate_url(&base_url, Setting::BaseUrl(Origin::Environment))?;
        let timeout = match env("ANTHROPIC_TIMEOUT_MS") {
            Some(ms) => positive(millis(&ms, Setting::ApiTimeout)?, Setting::ApiTimeout)?,
            None => DEFAULT_REQUEST_TIMEOUT,
        };
        let max_retries = match env("ANTHROPIC_MAX_RETRIES") {
            Some(n) => number(&n, Setting::ApiMaxRetries, 0, 10)?,
            None => DEFAULT_MAX_RETRIES,
        };
        Ok(Api {
            base_url,
            model,
            timeout,
            max_retries,
        })
    }
}

/// Who is answered, and how fast and how much.
struct Pace {
    allowed_senders: Allowlist,
    session_timeout: Duration,
    sweep_interval: Duration,
    poll_interval: Duration,
    max_concurrent_chats: usize,
    catch_up: Duration,
    rate_limit_per_minute: u32,
    daily_token_budget: u64,
    run_deadline: Duration,
    attachment_wait: Duration,
}

impl Pace {
    fn resolve(env: &dyn Fn(&str) -> Option<String>, file: &Settings) -> Result<Pace, ConfigError> {
        use Origin::{Environment as Env, SettingsFile as File};
        let ms = |name: &str, setting: Setting, default: Duration| match env(name) {
            Some(ms) => positive(millis(&ms, setting)?, setting),
            None => Ok(default),
        };
        let allowed_senders = match env("ALLOWED_SENDERS") {
            Some(list) => {
                let entries: Vec<&str> = list.split(',').filter(|s| !s.trim().is_empty()).collect();
                allowlist(&entries, Setting::AllowedSenders(Env))?
            }
            None => allowlist(&file.allowed_senders, Setting::AllowedSenders(File))?,
        };
        let session_timeout = match (env("SESSION_TIMEOUT_MS"), file.session_timeout_minutes) {
            (Some(ms), _) => {
                let setting = Setting::SessionTimeout(Env);
                session_timeout(millis(&ms, setting)?, setting)?
            }
            (None, Some(m)) => session_timeout(
                Duration::from_secs(m.saturating_mul(60)),
                Setting::SessionTimeout(File),
            )?,
            (None, None) => Duration::from_secs(3600),
        };
        let max_concurrent_chats = match env("MAX_CONCURRENT_CHATS") {
            Some(n) => match n.trim().parse::<usize>() {
                Ok(n @ 1..=64) => n,
                _ => {
                    return Err(invalid(
                        Setting::MaxConcurrentChats,
                        format!("{n:?} is not a number from 1 to 64"),
                    ));
                }
            },
            None => 4,
        };
        let catch_up = match env("CATCH_UP_HOURS") {
            Some(h) => {
                let hours: u32 = number(&h, Setting::CatchUp, 0, 24 * 365)?;
                Duration::from_secs(u64::from(hours) * 3600)
            }
            None => DEFAULT_CATCH_UP,
        };
        Ok(Pace {
            allowed_senders,
            session_timeout,
            sweep_interval: ms(
                "SESSION_SWEEP_INTERVAL_MS",
                Setting::SweepInterval,
                Duration::from_secs(60),
            )?,
            poll_interval: ms(
                "CHAT_DB_POLL_MS",
                Setting::PollInterval,
                Duration::from_millis(1500),
            )?,
            max_concurrent_chats,
            catch_up,
            rate_limit_per_minute: match env("RATE_LIMIT_PER_MINUTE") {
                Some(n) => number(&n, Setting::RateLimit, 1, 100_000)?,
                None => DEFAULT_RATE_LIMIT_PER_MINUTE,
            },
            daily_token_budget: match env("DAILY_TOKEN_BUDGET") {
                Some(n) => number(&n.replace('_', ""), Setting::DailyTokenBudget, 1, u64::MAX)?,
                None => DEFAULT_DAILY_TOKEN_BUDGET,
            },
            run_deadline: ms(
                "RUN_DEADLINE_MS",
                Setting::RunDeadline,
                crate::agent::DEFAULT_RUN_DEADLINE,
            )?,
            attachment_wait: ms(
                "ATTACHMENT_WAIT_MS",
                Setting::AttachmentWait,
                crate::attachments::DEFAULT_WAIT,
            )?,
        })
    }
}

fn invalid(setting: Setting, reason: String) -> ConfigError {
    ConfigError::Invalid { setting, reason }
}

fn validate_vault(path: &Path) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(invalid(
            Setting::Vault,
            format!("{} is not an absolute path", path.display()),
        ));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let real = std::fs::canonicalize(path)
                .map_err(|e| invalid(Setting::Vault, format!("{}: {e}", path.display())))?;
            vault_place(&real)
        }
        Ok(_) => Err(invalid(
            Setting::Vault,
            format!("{} is a file, not a folder", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(invalid(
            Setting::Vault,
            format!("{} does not exist", path.display()),
        )),
        Err(e) => Err(invalid(Setting::Vault, format!("{}: {e}", path.display()))),
    }
}

/// Refuses a real folder that cannot be a vault: the whole disk, the home folder, a system
/// folder.
fn vault_place(real: &Path) -> Result<(), ConfigError> {
    let home = dirs::home_dir().and_then(|h| std::fs::canonicalize(h).ok());
    crate::vault::check_vault_place(real, home.as_deref())
        .map_err(|reason| invalid(Setting::Vault, reason))
}

fn validate_model(model: &str) -> Result<(), ConfigError> {
    let ok = !model.is_empty()
        && model.len() <= 100
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:/@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            Setting::Model,
            format!("{model:?} is not a model name"),
        ))
    }
}

fn validate_url(url: &str, setting: Setting) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(invalid(setting, format!("{url:?} is not an http(s) URL"))),
    }
}

fn allowlist<S: AsRef<str>>(entries: &[S], setting: Setting) -> Result<Allowlist, ConfigError> {
    Allowlist::parse(entries).map_err(|e| invalid(setting, e.to_string()))
}

fn millis(value: &str, setting: Setting) -> Result<Duration, ConfigError> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| {
            invalid(
                setting,
                format!("{value:?} is not a whole number of milliseconds"),
            )
        })
}

/// A whole number from `min` to `max`, or an error naming `setting` and the range.
fn number<T>(value: &str, setting: Setting, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match value.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(invalid(
            setting,
            format!("{value:?} is not a whole number from {min} to {max}"),
        )),
    }
}

fn positive(d: Duration, setting: Setting) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(invalid(setting, "must be more than 0".into()))
    } else {
        Ok(d)
    }
}

fn session_timeout(d: Duration, setting: Setting) -> Result<Duration, ConfigError> {
    if d.is_zero() || d > Duration::from_secs(7 * 24 * 3600) {
        Err(invalid(setting, "must be between 1 ms and 7 days".into()))
    } else {
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(dir: &Path, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("SECOND_BRAIN_DATA_DIR".into(), dir.display().to_string());
        Config::resolve(&Overrides::default(), |k| map.get(k).cloned(), || None)
    }

    #[test]
    fn defaults_and_original_variable_names() {
        let dir = tempfile::tempdir().unwrap();
        let c = resolve(dir.path(), &[]).unwrap();
        assert_eq!(c.model, DEFAULT_MODEL);
        assert_eq!(c.session_timeout, Duration::from_secs(3600));
        assert_eq!(c.max_concurrent_chats, 4);
        assert!(c.allowed_senders.is_empty());
        assert!(c.auth.is_none());
        assert_eq!(c.log_dir, dir.path().join("logs"));
        assert_eq!(c.catch_up, Duration::from_secs(24 * 3600));
        assert_eq!(c.rate_limit_per_minute, 30);
        assert_eq!(c.daily_token_budget, 1_000_000);
        assert_eq!(c.api_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert_eq!(c.api_max_retries, DEFAULT_MAX_RETRIES);
        assert!(!c.read_linked_pages, "linked pages are not read by default");

        let vault = dir.path().display().to_string();
        let c = resolve(
            dir.path(),
            &[
                ("VAULT_PATH", &vault),
                ("ANTHROPIC_API_KEY", "sk-test"),
                ("CLAUDE_MODEL", "claude-haiku-4-5"),
                ("SESSION_TIMEOUT_MS", "90000"),
                ("ALLOWED_SENDERS", "+1 555 123 4567, me@icloud.com"),
                ("CHAT_DB_PATH", "/tmp/chat.db"),
            ],
        )
        .unwrap();
        assert_eq!(c.vault.as_deref(), Some(dir.path()));
        assert_eq!(c.auth, Some(Auth::ApiKey("sk-test".into())));
        assert_eq!(c.model, "claude-haiku-4-5");
        assert_eq!(c.session_timeout, Duration::from_secs(90));
        assert!(c.allowed_senders.is_allowed("+15551234567"));
        assert!(c.allowed_senders.is_allowed("ME@icloud.com"));
        assert_eq!(c.chat_db, PathBuf::from("/tmp/chat.db"));
        let c = resolve(
            dir.path(),
            &[
                ("CATCH_UP_HOURS", "0"),
                ("RATE_LIMIT_PER_MINUTE", " 5 "),
                ("DAILY_TOKEN_BUDGET", "2_500_000"),
                ("ANTHROPIC_TIMEOUT_MS", "250"),
                ("ANTHROPIC_MAX_RETRIES", "0"),
                // A vault that is not there yet: texts wait for it, the bridge starts.
                ("VAULT_PATH", "/Volumes/Unplugged/Vault"),
            ],
        )
        .unwrap();
        assert_eq!(c.catch_up, Duration::ZERO);
        assert_eq!(c.rate_limit_per_minute, 5);
        assert_eq!(c.daily_token_budget, 2_500_000);
        assert_eq!(c.api_timeout, Duration::from_millis(250));
        assert_eq!(c.api_max_retries, 0);
        assert_eq!(c.vault, Some(PathBuf::from("/Volumes/Unplugged/Vault")));
        assert!(
            !format!("{c:?}").contains("sk-test"),
            "the key must never be printed"
        );
    }

    #[test]
    fn bad_values_name_their_setting() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("SESSION_TIMEOUT_MS", "soon", "SESSION_TIMEOUT_MS"),
            ("SESSION_TIMEOUT_MS", "0", "SESSION_TIMEOUT_MS"),
            ("ALLOWED_SENDERS", "555-1234", "ALLOWED_SENDERS"),
            ("VAULT_PATH", "relative/vault", "vault"),
            ("ANTHROPIC_BASE_URL", "ftp://x", "ANTHROPIC_BASE_URL"),
            ("CLAUDE_MODEL", "a model", "model"),
            ("MAX_CONCURRENT_CHATS", "0", "MAX_CONCURRENT_CHATS"),
            ("LOG_LEVEL", "=[", "LOG_LEVEL"),
            ("CATCH_UP_HOURS", "-1", "CATCH_UP_HOURS"),
            ("CATCH_UP_HOURS", "1.5", "CATCH_UP_HOURS"),
            ("CATCH_UP_HOURS", "9000", "CATCH_UP_HOURS"),
            ("RATE_LIMIT_PER_MINUTE", "0", "RATE_LIMIT_PER_MINUTE"),
            ("RATE_LIMIT_PER_MINUTE", "lots", "RATE_LIMIT_PER_MINUTE"),
            ("DAILY_TOKEN_BUDGET", "0", "DAILY_TOKEN_BUDGET"),
            ("DAILY_TOKEN_BUDGET", "1e6", "DAILY_TOKEN_BUDGET"),
            ("ANTHROPIC_TIMEOUT_MS", "0", "ANTHROPIC_TIMEOUT_MS"),
            ("ANTHROPIC_TIMEOUT_MS", "2s", "ANTHROPIC_TIMEOUT_MS"),
            ("ANTHROPIC_MAX_RETRIES", "11", "ANTHROPIC_MAX_RETRIES"),
        ];
        for (var, value, named) in cases {
            let err = resolve(dir.path(), &[(var, value)]).unwrap_err();
            assert!(err.to_string().starts_with(named), "{var}={value}: {err}");
        }
    }

    #[test]
    fn settings_file_round_trip_and_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            vault_path: Some(dir.path().to_path_buf()),
            model: Some("claude-opus-4-1".into()),
            allowed_senders: vec!["+44 20 7946 0958".into()],
            session_timeout_minutes: Some(5),
            base_url: None,
            allow_sms: false,
            allowed_groups: vec!["iMessage;+;chat42".into()],
            digest: crate::digest::DigestSettings {
                enabled: true,
                time: Some("07:30".into()),
                recipient: None,
            },
            read_linked_pages: true,
        };
        settings.save(dir.path()).unwrap();
        let c = resolve(dir.path(), &[]).unwrap();
        let digest = c.digest.clone().expect("the digest is on");
        assert_eq!(digest.time.format("%H:%M").to_string(), "07:30");
        assert_eq!(
            digest.recipient.as_str(),
            "+442079460958",
            "the only allowed sender"
        );
        let mut late = settings.clone();
        late.digest.time = Some("7.30".into());
        let err = late.save(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    setting: Setting::DigestTime,
                    ..
                }
            ),
            "{err}"
        );
        late.digest.time = None;
        late.digest.recipient = Some("+15550000000".into());
        let err = late.save(dir.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "digest.recipient: \"+15550000000\" is not one of the allowed senders"
        );
        assert_eq!(
            Settings::load(dir.path()).unwrap().0,
            settings,
            "nothing half-saved"
        );
        assert_eq!(c.model, "claude-opus-4-1");
        assert_eq!(c.session_timeout, Duration::from_secs(300));
        assert!(c.allowed_senders.is_allowed("+442079460958"));
        let c = resolve(dir.path(), &[("CLAUDE_MODEL", "claude-haiku-4-5")]).unwrap();
        assert_eq!(c.model, "claude-haiku-4-5");
        assert!(!c.allow_sms, "iMessage only by default");
        assert_eq!(c.allowed_groups, ["iMessage;+;chat42"]);
        let c = resolve(dir.path(), &[("ALLOW_SMS", "true"), ("ALLOWED_GROUPS", "")]).unwrap();
        assert!(c.allow_sms);
        assert!(c.read_linked_pages, "the file's switch");
        let c = resolve(dir.path(), &[("READ_LINKED_PAGES", "off")]).unwrap();
        assert!(!c.read_linked_pages, "the environment wins");
        let err = resolve(dir.path(), &[("READ_LINKED_PAGES", "sometimes")]).unwrap_err();
        assert!(err.to_string().contains("READ_LINKED_PAGES"), "{err}");
        let err = resolve(dir.path(), &[("ALLOW_SMS", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("use true or false"), "{err}");
        let err =
            resolve(dir.path(), &[("ALLOWED_GROUPS", "iMessage;-;+15551234567")]).unwrap_err();
        assert!(err.to_string().contains("not a group chat id"), "{err}");
    }

    #[test]
    fn invalid_settings_are_not_saved() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Settings {
            vault_path: Some("/no/such/vault".into()),
            ..Settings::default()
        };
        let err = bad.save(dir.path()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(!dir.path().join(SETTINGS_FILE).exists());
    }

    #[test]
    fn corrupt_settings_file_is_kept_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), "{\"model\": 3").unwrap();
        let c = resolve(dir.path(), &[]).unwrap();
        let problem = c.settings_problem.unwrap();
        assert!(problem.contains("did not parse"), "{problem}");
        assert!(!dir.path().join(SETTINGS_FILE).exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the file was kept aside"
        );
    }

    /// Issue 9: a settings save could set the vault to `/`. It refuses the disk, the home
    /// folder and system folders with a sentence saying what to choose instead.
    #[test]
    fn the_vault_cannot_be_the_disk_or_a_system_folder() {
        let dir = tempfile::tempdir().unwrap();
        for path in ["/", "/usr", "/etc"] {
            let bad = Settings {
                vault_path: Some(path.into()),
                ..Settings::default()
            };
            let err = bad.save(dir.path()).unwrap_err().to_string();
            assert!(err.starts_with("vault: "), "{err}");
            assert!(
                err.contains("not a vault: choose your Obsidian vault's folder"),
                "{err}"
            );
            let err = resolve(dir.path(), &[("VAULT_PATH", path)]).unwrap_err();
            assert!(err.to_string().contains("not a vault"), "{err}");
        }
        assert!(!dir.path().join(SETTINGS_FILE).exists());
    }

    #[test]
    fn the_run_deadline_is_five_minutes_unless_set() {
        let dir = tempfile::tempdir().unwrap();
        let c = resolve(dir.path(), &[]).unwrap();
        assert_eq!(c.run_deadline, Duration::from_secs(300));
        let c = resolve(dir.path(), &[("RUN_DEADLINE_MS", "1500")]).unwrap();
        assert_eq!(c.run_deadline, Duration::from_millis(1500));
        for bad in ["0", "soon"] {
            let err = resolve(dir.path(), &[("RUN_DEADLINE_MS", bad)]).unwrap_err();
            assert!(err.to_string().starts_with("RUN_DEADLINE_MS"), "{err}");
        }
    }
}
