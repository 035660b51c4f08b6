//! The update policy against a fake [`Updater`] (the app's tests drive the real plugin against
//! a local server): the daily schedule under a paused clock, the drain before an install with
//! a text in flight against the strict fake Anthropic API, and failures that change nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use util::anthropic::{FakeAnthropic, capture_flow, slow};
use util::bridge::{API_KEY, ME, ME_CHAT};
use util::chatdb::FixtureDb;

use super::*;
use crate::config::Overrides;
use crate::secrets::MemoryKeyStore;
use crate::sender::Sender;
use crate::supervisor::Environment;

const WITHIN: Duration = Duration::from_secs(60);

/// What the fake endpoint offers and what happened to it.
#[derive(Default)]
struct Endpoint {
    /// The newer version offered; `None`: up to date.
    offer: Mutex<Option<Release>>,
    /// The download's result (the bytes, or why they did not verify).
    download: Mutex<Option<Result<Vec<u8>, UpdateError>>>,
    /// Whether putting the new version in place fails.
    install_fails: bool,
    /// Holds the download until notified.
    gate: Option<Arc<tokio::sync::Notify>>,
    /// Whether the server is down.
    down: AtomicBool,
    checks: AtomicUsize,
    /// The endpoint each check was given.
    asked: Mutex<Vec<Option<String>>>,
    /// Per install: the bytes, the vault's notes, and whether `sessions.json` existed then.
    installs: Mutex<Vec<(Vec<u8>, usize, bool)>>,
    /// The folders [`Endpoint::installs`] looks at: the vault's `Tasks/` and the data dir.
    world: Mutex<Option<(std::path::PathBuf, std::path::PathBuf)>>,
}

struct FakeUpdater(Arc<Endpoint>);
struct FakeFound(Arc<Endpoint>, Release);

impl Updater for FakeUpdater {
    fn check<'a>(
        &'a self,
        endpoint: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Arc<dyn Found>>, UpdateError>> {
        Box::pin(async move {
            self.0.checks.fetch_add(1, Ordering::SeqCst);
            crate::mutex::lock(&self.0.asked).push(endpoint.map(str::to_owned));
            if self.0.down.load(Ordering::SeqCst) {
                return Err(UpdateError::Unreachable("connection refused".to_owned()));
            }
            let offer = crate::mutex::lock(&self.0.offer).clone();
            Ok(offer.map(|r| Arc::new(FakeFound(Arc::clone(&self.0), r)) as Arc<dyn Found>))
        })
    }
}

impl Found for FakeFound {
    fn release(&self) -> Release {
        self.1.clone()
    }

    fn download(&self) -> BoxFuture<'_, Result<Vec<u8>, UpdateError>> {
        let result = crate::mutex::lock(&self.0.download).clone();
        let gate = self.0.gate.clone();
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            result.unwrap_or_else(|| Ok(b"new app".to_vec()))
        })
    }

    fn install(&self, bytes: &[u8]) -> Result<(), UpdateError> {
        let (notes, saved) = match &*crate::mutex::lock(&self.0.world) {
            Some((tasks, data)) => (
                std::fs::read_dir(tasks).map_or(0, |dir| dir.count()),
                data.join("sessions.json").exists(),
            ),
            None => (0, false),
        };
        crate::mutex::lock(&self.0.installs).push((bytes.to_vec(), notes, saved));
        if self.0.install_fails {
            return Err(UpdateError::Install(
                "the app folder is read-only".to_owned(),
            ));
        }
        Ok(())
    }
}

fn newer() -> Release {
    Release {
        version: "0.2.0".to_owned(),
        notes: Some("Faster search.\nFixes “Inbox” links. 🧠".to_owned()),
    }
}

fn env(vars: HashMap<String, String>) -> Environment {
    Environment {
        overrides: Overrides::default(),
        vars: Arc::new(move |name| vars.get(name).cloned()),
        keys: Arc::new(MemoryKeyStore::default()),
        probe: Sender::with_program("true"),
        opener: Arc::new(|_| Err("no opener in tests".to_owned())),
    }
}

fn vars(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Updates over a bridge that waits for its setup (no vault, no key), with `settings.json`
/// as given.
async fn idle_updates(dir: &Path, check_updates: bool, endpoint: &Arc<Endpoint>) -> Arc<Updates> {
    idle_updates_telling(dir, check_updates, endpoint, Arc::new(|_| {})).await
}

async fn idle_updates_telling(
    dir: &Path,
    check_updates: bool,
    endpoint: &Arc<Endpoint>,
    notify: super::super::Notify,
) -> Arc<Updates> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = serde_json::json!({ "check_updates": check_updates });
    std::fs::write(data.join("settings.json"), file.to_string()).unwrap();
    let env = env(vars(&[
        ("SECOND_BRAIN_DATA_DIR", data.display().to_string()),
        (
            ENDPOINT_ENV,
            " http://127.0.0.1:8123/latest.json ".to_owned(),
        ),
    ]));
    let supervisor = Supervisor::new(env, notify).unwrap();
    supervisor.launch().await;
    let updater = Arc::new(FakeUpdater(Arc::clone(endpoint)));
    let updates = Updates::new(updater, supervisor, "0.1.0");
    tokio::spawn(updates.daily());
    updates
}

#[test]
fn every_outcome_is_one_sentence() {
    let reason = || "signature did not verify".to_owned();
    let table = [
        (
            Outcome::UpToDate {
                version: "0.1.0".to_owned(),
            },
            "Second Brain is up to date (version 0.1.0).",
        ),
        (
            Outcome::Available {
                version: "0.2.0".to_owned(),
                notes: None,
            },
            "Second Brain 0.2.0 is available.",
        ),
        (
            Outcome::CouldNotCheck { reason: reason() },
            "Could not check for updates: signature did not verify.",
        ),
        (
            Outcome::Refused { reason: reason() },
            "The update was refused and nothing was changed: signature did not verify.",
        ),
        (
            Outcome::CouldNotInstall { reason: reason() },
            "The update was not installed; this version keeps running: signature did not verify.",
        ),
        (
            Outcome::Installed {
                version: "0.2.0".to_owned(),
            },
            "Second Brain 0.2.0 is installed; restarting.",
        ),
    ];
    // The plugin's own words become a clause: first letter down, no second full stop.
    let words = [
        (
            "The signature verification failed",
            "the signature verification failed",
        ),
        (
            "Updater does not have any endpoints set.",
            "updater does not have any endpoints set",
        ),
        ("URL is invalid", "URL is invalid"),
        ("`{0}`", "`{0}`"),
        ("Échec.", "échec"),
        ("", ""),
    ];
    for (reason, clause) in words {
        let outcome = Outcome::Refused {
            reason: reason.to_owned(),
        };
        let expected = format!("The update was refused and nothing was changed: {clause}.");
        assert_eq!(outcome.sentence(), expected, "{reason:?}");
    }
    for (outcome, sentence) in table {
        assert_eq!(outcome.sentence(), sentence);
        let view = serde_json::to_value(UpdateView::from(outcome)).unwrap();
        assert_eq!(view["sentence"], sentence);
        assert!(view["kind"].is_string());
    }
}

/// Off by default and off in the file: three days pass and the endpoint is never asked.
#[tokio::test(start_paused = true)]
async fn the_automatic_check_off_never_asks() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Arc::new(Endpoint::default());
    let updates = idle_updates(dir.path(), false, &endpoint).await;
    for _ in 0..3 {
        tokio::time::sleep(CHECK_EVERY + Duration::from_secs(1)).await;
    }
    assert_eq!(endpoint.checks.load(Ordering::SeqCst), 0);
    assert_eq!(updates.last(), None);
    updates.stop();
}

/// On: nothing at start-up, nothing before a day has passed, then once a day; each newer
/// version found is told to the front end (which opens the update window).
#[tokio::test(start_paused = true)]
async fn the_automatic_check_on_asks_once_a_day_never_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Arc::new(Endpoint::default());
    *crate::mutex::lock(&endpoint.offer) = Some(newer());
    let told = Arc::new(AtomicUsize::new(0));
    let notify: super::super::Notify = {
        let told = Arc::clone(&told);
        Arc::new(move |change| {
            if change == Change::Update {
                told.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let updates = idle_updates_telling(dir.path(), true, &endpoint, notify).await;
    tokio::time::sleep(CHECK_EVERY - Duration::from_secs(1)).await;
    assert_eq!(endpoint.checks.load(Ordering::SeqCst), 0, "not at start-up");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(endpoint.checks.load(Ordering::SeqCst), 1);
    assert!(matches!(updates.last(), Some(Outcome::Available { .. })));
    assert_eq!(told.load(Ordering::SeqCst), 1, "the front end is told");
    // Up to date the next day: asked, and nothing to tell.
    *crate::mutex::lock(&endpoint.offer) = None;
    tokio::time::sleep(CHECK_EVERY).await;
    assert_eq!(endpoint.checks.load(Ordering::SeqCst), 2);
    assert_eq!(told.load(Ordering::SeqCst), 1);
    updates.stop();
    tokio::time::sleep(CHECK_EVERY * 2).await;
    assert_eq!(endpoint.checks.load(Ordering::SeqCst), 2, "stopped");
}

#[tokio::test]
async fn a_check_that_fails_forgets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Arc::new(Endpoint::default());
    *crate::mutex::lock(&endpoint.offer) = Some(newer());
    let updates = idle_updates(dir.path(), false, &endpoint).await;
    assert_eq!(
        updates.check().await,
        Outcome::Available {
            version: "0.2.0".to_owned(),
            notes: newer().notes
        }
    );
    // The server goes down: "could not check", and the version found is still installable.
    endpoint.down.store(true, Ordering::SeqCst);
    assert_eq!(
        updates.check().await,
        Outcome::CouldNotCheck {
            reason: "connection refused".to_owned()
        }
    );
    assert!(updates.found.lock().await.is_some());
    let url = Some("http://127.0.0.1:8123/latest.json".to_owned());
    assert_eq!(*crate::mutex::lock(&endpoint.asked), vec![url.clone(), url]);
}

#[tokio::test]
async fn nothing_to_install_before_a_check_finds_a_version() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = Arc::new(Endpoint::default());
    let updates = idle_updates(dir.path(), false, &endpoint).await;
    assert!(matches!(updates.check().await, Outcome::UpToDate { .. }));
    assert!(matches!(
        updates.install().await,
        Outcome::CouldNotInstall { .. }
    ));
    assert!(crate::mutex::lock(&endpoint.installs).is_empty());
}

/// A bridge with the strict fake API (each model turn taking `latency`), a vault, a fixture
/// chat.db and `ME` allowed; started, with intake running.
struct Running {
    dir: tempfile::TempDir,
    db: FixtureDb,
    api: FakeAnthropic,
    updates: Arc<Updates>,
    changes: tokio::sync::mpsc::UnboundedReceiver<Change>,
}

async fn running(endpoint: &Arc<Endpoint>, latency: Duration) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (data, vault) = (dir.path().join("data"), dir.path().join("vault"));
    std::fs::create_dir_all(&vault).unwrap();
    let db = FixtureDb::create(&dir.path().join("chat.db"));
    let api = FakeAnthropic::start(
        API_KEY,
        slow(
            latency,
            capture_flow("Tasks", "Buy milk", &["topic/home"], "Filed ✓"),
        ),
    );
    let env = env(vars(&[
        ("SECOND_BRAIN_DATA_DIR", data.display().to_string()),
        ("CHAT_DB_PATH", db.path().display().to_string()),
        ("VAULT_PATH", vault.display().to_string()),
        ("ALLOWED_SENDERS", ME.to_owned()),
        ("ANTHROPIC_API_KEY", API_KEY.to_owned()),
        ("ANTHROPIC_BASE_URL", api.base_url()),
        ("CHAT_DB_POLL_MS", "200".to_owned()),
    ]));
    *crate::mutex::lock(&endpoint.world) = Some((vault.join("Tasks"), data));
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    let notify: super::super::Notify = Arc::new(move |change| {
        let _ = tx.send(change);
    });
    let supervisor = Supervisor::new(env, notify).unwrap();
    supervisor.launch().await;
    // Intake has read its starting point once the status says "Running".
    tokio::time::timeout(WITHIN, async {
        while !supervisor.status().line.starts_with("Running") {
            changes.recv().await.expect("the change feed");
        }
    })
    .await
    .expect("the bridge runs");
    let updater = Arc::new(FakeUpdater(Arc::clone(endpoint)));
    let updates = Updates::new(updater, supervisor, "0.1.0");
    Running {
        dir,
        db,
        api,
        updates,
        changes,
    }
}

/// Issue 13: "Installing waits until no text is in flight and the session store has
/// flushed". The model takes 200 ms a turn (four turns); the install is asked for while the
/// first is out, and puts the new version in place only once the note is on disk and the
/// sessions are saved, and not before the model's time has passed.
///
/// On the real clock: the bridge writes notes on threads of its own, which a paused clock
/// does not wait for (only `spawn_blocking` holds its auto-advance back,
/// tokio-1.54.1/src/runtime/blocking/schedule.rs:25), so paused it would jump to the 10 s
/// drain deadline while the note is being written. The schedule's tests run paused.
#[tokio::test]
async fn an_install_waits_for_the_text_in_flight() {
    let endpoint = Arc::new(Endpoint::default());
    *crate::mutex::lock(&endpoint.offer) = Some(newer());
    let world = running(&endpoint, Duration::from_millis(200)).await;
    assert!(matches!(
        world.updates.check().await,
        Outcome::Available { .. }
    ));
    world.db.incoming(ME_CHAT, ME, "buy milk");
    world.api.wait_for_requests(1, WITHIN).await;
    let asked = std::time::Instant::now();
    let outcome = world.updates.install().await;
    assert_eq!(
        outcome,
        Outcome::Installed {
            version: "0.2.0".to_owned()
        }
    );
    assert!(
        asked.elapsed() >= Duration::from_millis(200),
        "{:?}",
        asked.elapsed()
    );
    let installs = crate::mutex::lock(&endpoint.installs).clone();
    assert_eq!(installs, vec![(b"new app".to_vec(), 1, true)]);
    // write, log, reply, end: every turn of the text ran before the bridge stopped.
    assert_eq!(world.api.requests().len(), 4);
    assert!(world.api.violations().is_empty());
    let note = std::fs::read_dir(world.dir.path().join("vault/Tasks"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert!(
        std::fs::read_to_string(note.path())
            .unwrap()
            .contains("buy milk")
    );
    // The bridge stays stopped (the app restarts) and has let go of the data folder.
    assert_eq!(world.updates.supervisor.status().line, "Starting…");
    assert!(!crate::lock::DataDirLock::is_held(
        &world.dir.path().join("data")
    ));
}

/// A download that does not verify changes nothing: the bridge never stops, the app is not
/// touched, and the window says why.
#[tokio::test]
async fn a_refused_download_changes_nothing() {
    let endpoint = Arc::new(Endpoint::default());
    *crate::mutex::lock(&endpoint.offer) = Some(newer());
    *crate::mutex::lock(&endpoint.download) = Some(Err(UpdateError::Refused(
        "the signature does not match the download".to_owned(),
    )));
    let mut world = running(&endpoint, Duration::ZERO).await;
    world.updates.check().await;
    while world.changes.try_recv().is_ok() {}
    let outcome = world.updates.install().await;
    assert_eq!(
        outcome.sentence(),
        "The update was refused and nothing was changed: the signature does not match the download."
    );
    assert!(crate::mutex::lock(&endpoint.installs).is_empty());
    assert!(
        world
            .updates
            .supervisor
            .status()
            .line
            .starts_with("Running")
    );
    assert!(world.changes.try_recv().is_err(), "no restart, no change");
    world.db.incoming(ME_CHAT, ME, "buy milk");
    world.api.wait_for_requests(1, WITHIN).await;
    world.updates.supervisor.shutdown().await;
}

/// Putting the new version in place fails after the drain: the bridge starts again.
#[tokio::test]
async fn a_failed_install_starts_the_bridge_again() {
    let endpoint = Arc::new(Endpoint {
        install_fails: true,
        ..Endpoint::default()
    });
    *crate::mutex::lock(&endpoint.offer) = Some(newer());
    let world = running(&endpoint, Duration::ZERO).await;
    world.updates.check().await;
    let outcome = world.updates.install().await;
    assert_eq!(
        outcome,
        Outcome::CouldNotInstall {
            reason: "the app folder is read-only".to_owned()
        }
    );
    assert_eq!(crate::mutex::lock(&endpoint.installs).len(), 1);
    assert!(crate::lock::DataDirLock::is_held(
        &world.dir.path().join("data")
    ));
    world.db.incoming(ME_CHAT, ME, "buy milk");
    world.api.wait_for_requests(1, WITHIN).await;
    world.updates.supervisor.shutdown().await;
}

/// "The check and the download never block the bridge": while a download hangs, a text is
/// filed (all four model turns) and a session change, which takes the supervisor's lifecycle
/// lock, goes through; the install ends once the download does.
#[tokio::test]
async fn a_slow_download_never_holds_the_bridge_up() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let endpoint = Arc::new(Endpoint {
        gate: Some(Arc::clone(&gate)),
        ..Endpoint::default()
    });
    *crate::mutex::lock(&endpoint.offer) = Some(newer());
    let world = running(&endpoint, Duration::ZERO).await;
    world.updates.check().await;
    let install = tokio::spawn({
        let updates = Arc::clone(&world.updates);
        async move { updates.install().await }
    });
    world.db.incoming(ME_CHAT, ME, "buy milk");
    world.api.wait_for_requests(4, WITHIN).await;
    let cleared = tokio::time::timeout(WITHIN, world.updates.supervisor.clear_all()).await;
    assert!(cleared.expect("not held up").is_ok());
    assert!(!install.is_finished(), "the download still hangs");
    assert!(crate::mutex::lock(&endpoint.installs).is_empty());
    gate.notify_one();
    let outcome = tokio::time::timeout(WITHIN, install)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Outcome::Installed { .. }), "{outcome:?}");
    assert_eq!(crate::mutex::lock(&endpoint.installs).len(), 1);
}
