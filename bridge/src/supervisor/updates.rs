//! Updates, without a window: when the app looks for a new version, what it tells the user,
//! and the order of an install. [`Updates`] drives an [`Updater`] (the app implements it with
//! Tauri's updater plugin, which fetches `latest.json` and checks the minisign signature;
//! tests implement it with fakes or drive the plugin against a local server).
//!
//! Invariants: the automatic check is off unless the user switched it on (`check_updates`),
//! never runs at start-up and runs at most once a day ([`CHECK_EVERY`], on tokio's clock, so
//! tests drive it under `tokio::time::pause()`); no bridge lock is held while checking or
//! downloading, so texts keep flowing; an install downloads and verifies first (a failed or
//! tampered download changes nothing), then drains the bridge the way Quit does
//! ([`Supervisor::while_drained`]: no text in flight, sessions saved) and only then puts the
//! new version in place; an install that fails starts the bridge again. One check or install
//! runs at a time. Every result is an [`Outcome`], shown as one [`sentence`](Outcome::sentence).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Change, Current, Supervisor};

/// Overrides the endpoint of `tauri.conf.json` (tests, people who host their own releases).
pub const ENDPOINT_ENV: &str = "SECOND_BRAIN_UPDATE_URL";

/// How often the automatic check runs; the first one this long after start-up.
pub const CHECK_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

/// A boxed future, so that [`Updater`] and [`Found`] can be used as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A version the endpoint offers that is newer than this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// Its version, as the manifest gives it.
    pub version: String,
    /// Its release notes, if the manifest has any.
    pub notes: Option<String>,
}

/// Why a step of an update failed; the message is a clause for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// The manifest or the download could not be fetched or read (network, HTTP status,
    /// a manifest that does not parse or names no build for this Mac).
    #[error("{0}")]
    Unreachable(String),
    /// The download is not what the release's signature vouches for (another key, a
    /// truncated or altered file, a signature for another version).
    #[error("{0}")]
    Refused(String),
    /// The new version could not be put in place.
    #[error("{0}")]
    Install(String),
}

/// Asks the update endpoint for a newer version.
pub trait Updater: Send + Sync {
    /// The newer version, if there is one; `endpoint` replaces the configured one.
    fn check<'a>(
        &'a self,
        endpoint: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Arc<dyn Found>>, UpdateError>>;
}

/// A newer version found by [`Updater::check`].
pub trait Found: Send + Sync {
    /// Its version and notes.
    fn release(&self) -> Release;
    /// Downloads it and verifies its signature; the bytes only when they verify.
    fn download(&self) -> BoxFuture<'_, Result<Vec<u8>, UpdateError>>;
    /// Puts the verified download in place of the running app (blocking: file work).
    fn install(&self, bytes: &[u8]) -> Result<(), UpdateError>;
}

/// What a check or an install came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// No newer version.
    UpToDate {
        /// The running version.
        version: String,
    },
    /// A newer version can be installed.
    Available {
        /// Its version.
        version: String,
        /// Its release notes.
        notes: Option<String>,
    },
    /// The endpoint could not be asked; nothing changed.
    CouldNotCheck {
        /// Why.
        reason: String,
    },
    /// The download did not verify; nothing changed.
    Refused {
        /// Why.
        reason: String,
    },
    /// The download could not be fetched or put in place; this version keeps running.
    CouldNotInstall {
        /// Why.
        reason: String,
    },
    /// The new version is in place; the app restarts into it.
    Installed {
        /// The new version.
        version: String,
    },
}

impl Outcome {
    /// The outcome as the update window and the logs say it: one sentence, the reason (the
    /// plugin's words) as a clause inside it.
    pub fn sentence(&self) -> String {
        let clause = |reason: &str| {
            let reason = reason.trim().trim_end_matches('.');
            let mut chars = reason.chars();
            match (chars.next(), chars.next()) {
                // "The signature…" becomes "the signature…"; "URL…" or "`x`" stay.
                (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
                    first.to_lowercase().chain(reason.chars().skip(1)).collect()
                }
                _ => reason.to_owned(),
            }
        };
        match self {
            Outcome::UpToDate { version } => {
                format!("Second Brain is up to date (version {version}).")
            }
            Outcome::Available { version, .. } => format!("Second Brain {version} is available."),
            Outcome::CouldNotCheck { reason } => {
                format!("Could not check for updates: {}.", clause(reason))
            }
            Outcome::Refused { reason } => format!(
                "The update was refused and nothing was changed: {}.",
                clause(reason)
            ),
            Outcome::CouldNotInstall { reason } => format!(
                "The update was not installed; this version keeps running: {}.",
                clause(reason)
            ),
            Outcome::Installed { version } => {
                format!("Second Brain {version} is installed; restarting.")
            }
        }
    }

    /// A failed download or install, as an outcome.
    fn of_failed_install(err: UpdateError) -> Outcome {
        let reason = err.to_string();
        match err {
            UpdateError::Refused(_) => Outcome::Refused { reason },
            UpdateError::Unreachable(_) | UpdateError::Install(_) => {
                Outcome::CouldNotInstall { reason }
            }
        }
    }
}

/// What the update window shows: the outcome and its sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateView {
    /// The outcome (`kind` and its fields).
    #[serde(flatten)]
    pub outcome: Outcome,
    /// [`Outcome::sentence`].
    pub sentence: String,
}

impl From<Outcome> for UpdateView {
    fn from(outcome: Outcome) -> UpdateView {
        let sentence = outcome.sentence();
        UpdateView { outcome, sentence }
    }
}

/// Checks and installs, for the menu item, the update window and the daily check.
pub struct Updates {
    updater: Arc<dyn Updater>,
    supervisor: Supervisor,
    current: String,
    endpoint: Option<String>,
    /// The version the last check found; held across a check or an install, so one runs at
    /// a time (never across the bridge's own locks).
    found: tokio::sync::Mutex<Option<Arc<dyn Found>>>,
    last: Mutex<Option<Outcome>>,
    stop: CancellationToken,
}

impl Updates {
    /// Updates of the running `current` version through `updater`; the endpoint is
    /// [`ENDPOINT_ENV`] when the supervisor's environment sets it. The front end spawns
    /// [`daily`](Self::daily) for the automatic check.
    pub fn new(updater: Arc<dyn Updater>, supervisor: Supervisor, current: &str) -> Arc<Updates> {
        let endpoint = supervisor.inner.env.var(ENDPOINT_ENV);
        Arc::new(Updates {
            updater,
            supervisor,
            current: current.to_owned(),
            endpoint: endpoint.map(|url| url.trim().to_owned()),
            found: tokio::sync::Mutex::new(None),
            last: Mutex::new(None),
            stop: CancellationToken::new(),
        })
    }

    /// Asks the endpoint for a newer version. A failed check forgets nothing.
    pub async fn check(&self) -> Outcome {
        let mut found = self.found.lock().await;
        let outcome = match self.updater.check(self.endpoint.as_deref()).await {
            Ok(Some(update)) => {
                let Release { version, notes } = update.release();
                *found = Some(update);
                Outcome::Available { version, notes }
            }
            Ok(None) => {
                *found = None;
                Outcome::UpToDate {
                    version: self.current.clone(),
                }
            }
            Err(err) => Outcome::CouldNotCheck {
                reason: err.to_string(),
            },
        };
        self.remember(outcome)
    }

    /// Downloads and verifies the version the last check found, then, with the bridge
    /// drained, puts it in place. On [`Outcome::Installed`] the caller restarts the app.
    pub async fn install(&self) -> Outcome {
        let mut found = self.found.lock().await;
        let Some(update) = found.clone() else {
            let reason = "no newer version was found; check for updates first".to_owned();
            return self.remember(Outcome::CouldNotInstall { reason });
        };
        let version = update.release().version;
        let bytes = match update.download().await {
            Ok(bytes) => bytes,
            Err(err) => return self.remember(Outcome::of_failed_install(err)),
        };
        let installed = self
            .supervisor
            .while_drained(async move {
                // Blocking: unpacks the archive and moves folders.
                tokio::task::spawn_blocking(move || update.install(&bytes))
                    .await
                    .unwrap_or_else(|join| Err(UpdateError::Install(join.to_string())))
            })
            .await;
        let outcome = match installed {
            Ok(()) => {
                *found = None;
                Outcome::Installed { version }
            }
            Err(err) => Outcome::of_failed_install(err),
        };
        self.remember(outcome)
    }

    /// The outcome of the last check or install, if any.
    pub fn last(&self) -> Option<Outcome> {
        crate::mutex::lock(&self.last).clone()
    }

    fn remember(&self, outcome: Outcome) -> Outcome {
        tracing::info!(outcome = %outcome.sentence(), "update");
        *crate::mutex::lock(&self.last) = Some(outcome.clone());
        outcome
    }

    /// Whether the user switched the automatic check on, in the settings the bridge runs with;
    /// a bridge that could not start has none in effect, so the check waits (and the settings
    /// file and keychain are not read behind its back).
    fn automatic(&self) -> bool {
        match &self.supervisor.shared().current {
            Current::Running(generation) => generation.config.check_updates,
            Current::Stopped | Current::Failed { .. } => false,
        }
    }

    /// The automatic check, for the front end to spawn on its runtime: every [`CHECK_EVERY`],
    /// the first one that long after it starts, while the setting is on; a newer version found
    /// is told as [`Change::Update`]. Ends with [`stop`](Self::stop).
    pub fn daily(self: &Arc<Self>) -> impl Future<Output = ()> + Send + 'static {
        let updates = Arc::clone(self);
        async move {
            let first = tokio::time::Instant::now() + CHECK_EVERY;
            let mut days = tokio::time::interval_at(first, CHECK_EVERY);
            // A Mac that slept through a day checks once on waking, not once per day missed.
            days.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = updates.stop.cancelled() => return,
                    _ = days.tick() => {}
                }
                if updates.automatic() && matches!(updates.check().await, Outcome::Available { .. })
                {
                    updates.supervisor.notify(Change::Update);
                }
            }
        }
    }

    /// Stops the automatic check.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests;
