//! The shell driven through `tauri::test::mock_builder()` over a real bridge: commands over
//! IPC, menu dispatch, windows on demand. Each test has its own temporary home and data
//! folder; the bridge's configuration comes from a map (never this process's environment)
//! and the API key from an in-memory key store. Waiting is done on the supervisor's change
//! feed or on the launch task, never by sleeping.
//!
//! On macOS these tests are ignored: they build the tray menu on a test thread, and muda
//! panics off the main thread (muda-0.19.3/src/platform_impl/macos/mod.rs:132); the mock
//! runtime has no main thread to hand it to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::chatdb::Chat;
use bridge::config::Overrides;
use bridge::secrets::{KeyStore, MemoryKeyStore};
use bridge::sender::Sender;
use bridge::sessions::{Session, SessionState, StateKind};
use bridge::supervisor::{Supervisor, pages};
use serde_json::{Value, json};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{Listener, WebviewWindow};

use super::*;
use crate::tray::TrayMenu;

use util::chatdb;

mod updates;

const IDENTIFIER: &str = "app.secondbrain.SecondBrain";
/// How long any one wait may take before the test fails.
const WITHIN: Duration = Duration::from_secs(20);
const ME: &str = "+15551234567";

/// What a test world starts with.
#[derive(Default)]
struct Setup {
    /// Sessions written to `sessions.json` before the app starts.
    sessions: Vec<Session>,
    /// `settings.json` written before the app starts, given the test's vault folder.
    settings: Option<fn(&Path) -> Value>,
    /// A fixture chat.db at `CHAT_DB_PATH` (otherwise the path does not exist).
    chat_db: bool,
    /// A key in the key store.
    api_key: Option<&'static str>,
    /// The Automation probe's program.
    probe: Option<&'static str>,
    /// `SECOND_BRAIN_UPDATE_URL` (otherwise the test config's endpoint, which refuses).
    update_url: Option<String>,
}

struct Harness {
    app: App<MockRuntime>,
    dir: tempfile::TempDir,
    host: Supervisor,
    keychain: Arc<MemoryKeyStore>,
    opened: Arc<Mutex<Vec<String>>>,
    alerts: Arc<Mutex<Vec<String>>>,
    picked: Arc<Mutex<Option<PathBuf>>>,
    /// Host change notices.
    changes: mpsc::Receiver<Change>,
    /// `sessions-changed` events as the pages receive them.
    events: mpsc::Receiver<()>,
    db: Option<chatdb::FixtureDb>,
}

fn session(chat: &str, sender: &str, state: StateKind, minutes_ago: i64) -> Session {
    let at = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    let chat = Chat {
        guid: chat.to_owned(),
        identifier: sender.to_owned(),
        is_group: false,
    };
    let mut session = Session::new(chat, sender.to_owned(), at);
    session.state = match state {
        StateKind::Working => SessionState::Working { original: None },
        StateKind::Waiting => SessionState::Waiting {
            original: "book club thursday".to_owned(),
            question: Some("Is that the Atlas book club? 📚".to_owned()),
        },
        StateKind::Idle => SessionState::Idle,
    };
    session.message_count = 1;
    session
}

fn three_sessions() -> Vec<Session> {
    vec![
        session("iMessage;-;+15551234567", ME, StateKind::Waiting, 2),
        session(
            "iMessage;-;sarah@example.com",
            "sarah@example.com",
            StateKind::Working,
            1,
        ),
        session(
            "iMessage;-;+447700900123",
            "+447700900123",
            StateKind::Idle,
            30,
        ),
    ]
}

/// Writes the files `setup` asks for under `dir`; returns the bridge's variables and the
/// fixture chat.db, when asked for.
fn world(dir: &Path, setup: &Setup) -> (HashMap<String, String>, Option<chatdb::FixtureDb>) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(dir.join("vault")).unwrap();
    if !setup.sessions.is_empty() {
        let file = json!({ "version": bridge::sessions::FILE_VERSION, "sessions": setup.sessions });
        std::fs::write(data.join("sessions.json"), file.to_string()).unwrap();
    }
    if let Some(settings) = setup.settings {
        let settings = settings(&dir.join("vault"));
        std::fs::write(data.join("settings.json"), settings.to_string()).unwrap();
    }
    let chat_db = dir.join("Messages/chat.db");
    let db = setup.chat_db.then(|| {
        std::fs::create_dir_all(chat_db.parent().unwrap()).unwrap();
        chatdb::FixtureDb::create(&chat_db)
    });
    let vars = [
        ("SECOND_BRAIN_DATA_DIR", data.display().to_string()),
        ("CHAT_DB_PATH", chat_db.display().to_string()),
        // Never contacted: no test here lets an allowed sender text.
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:9".to_owned()),
        ("CHAT_DB_POLL_MS", "200".to_owned()),
    ];
    let update = setup
        .update_url
        .clone()
        .map(|url| (updates::ENDPOINT_ENV, url));
    let vars = vars.into_iter().chain(update);
    let vars = vars.map(|(k, v)| (k.to_owned(), v)).collect();
    (vars, db)
}

/// Hooks that record alerts and answer the folder picker with what `picked` holds.
fn fake_hooks(alerts: &Arc<Mutex<Vec<String>>>, picked: &Arc<Mutex<Option<PathBuf>>>) -> Hooks {
    let (alerts, picked) = (Arc::clone(alerts), Arc::clone(picked));
    Hooks {
        alert: Box::new(move |text| alerts.lock().unwrap().push(text.to_owned())),
        pick_folder: Arc::new(move || Ok(picked.lock().unwrap().clone())),
    }
}

/// Tells the pages, like the production notice, and the test; see [`harness`].
fn test_notify(app: &App<MockRuntime>) -> (Notify, mpsc::Receiver<Change>) {
    // The production notice also rewrites the tray through `run_on_main_thread`, which the
    // mock runtime runs inline on the calling thread: from the host's tasks that would touch
    // the (single-threaded) menu concurrently with the test. Tests refresh the tray on their
    // own thread instead; `production_notice_refreshes_the_tray` covers the real notice.
    let (change_tx, changes) = mpsc::channel();
    let handle = app.handle().clone();
    let change_tx = Mutex::new(change_tx);
    let notify: Notify = Arc::new(move |change| {
        tell_pages(&handle, change);
        let _ = change_tx.lock().unwrap().send(change);
    });
    (notify, changes)
}

fn harness(setup: Setup) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let (vars, db) = world(dir.path(), &setup);
    let keychain = Arc::new(
        setup
            .api_key
            .map_or_else(MemoryKeyStore::default, MemoryKeyStore::with_key),
    );
    let opened = Arc::new(Mutex::new(Vec::new()));
    let env = Environment {
        overrides: Overrides::default(),
        vars: Arc::new(move |name| vars.get(name).cloned()),
        keys: Arc::clone(&keychain) as Arc<dyn KeyStore>,
        // A program on PATH on Linux and macOS alike.
        probe: Sender::with_program(setup.probe.unwrap_or("true")),
        opener: {
            let opened = Arc::clone(&opened);
            Arc::new(move |target| {
                opened.lock().unwrap().push(target.to_owned());
                Ok(())
            })
        },
    };
    let app = build_app(mock_builder(), updates::test_context()).unwrap();
    let (event_tx, events) = mpsc::channel();
    app.listen_any(pages::event(Change::Sessions), move |_| {
        let _ = event_tx.send(());
    });
    let (notify, changes) = test_notify(&app);
    let (alerts, picked) = (Arc::default(), Arc::default());
    app.manage(fake_hooks(&alerts, &picked));
    let options = Options {
        login: LoginItem {
            home: dir.path().to_path_buf(),
            label: IDENTIFIER.to_owned(),
            program: PathBuf::from("/Applications/Second Brain.app/Contents/MacOS/second-brain"),
        },
        env,
        tray: false,
        open_window: None,
    };
    let launched = install(app.handle(), options, notify).unwrap();
    tauri::async_runtime::block_on(launched).unwrap();
    let host = app.state::<Supervisor>().inner().clone();
    Harness {
        app,
        dir,
        host,
        keychain,
        opened,
        alerts,
        picked,
        changes,
        events,
        db,
    }
}

impl Harness {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn vault(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    fn window(&self) -> WebviewWindow<MockRuntime> {
        windows::show(self.app.handle(), Page::Sessions).unwrap()
    }

    fn invoke(&self, cmd: &str, args: Value) -> Result<Value, Value> {
        let request = InvokeRequest {
            cmd: cmd.into(),
            callback: tauri::ipc::CallbackFn(0),
            error: tauri::ipc::CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: tauri::ipc::InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        };
        get_ipc_response(&self.window(), request).map(|body| body.deserialize::<Value>().unwrap())
    }

    fn chats(&self) -> Vec<String> {
        let rows = self.invoke("list_sessions", json!({})).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|row| row["chat"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The chat guids in `sessions.json`, in file order.
    fn chats_on_disk(&self) -> Vec<String> {
        let bytes = std::fs::read(self.data().join("sessions.json")).unwrap();
        let file: Value = serde_json::from_slice(&bytes).unwrap();
        let mut chats: Vec<String> = file["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["chat"]["guid"].as_str().unwrap().to_owned())
            .collect();
        chats.sort();
        chats
    }

    fn settings_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.data().join("settings.json")).ok()
    }

    /// Waits, on the host's change notices, until `done` holds.
    fn wait_until(&self, what: &str, done: impl Fn(&Harness) -> bool) {
        let deadline = Instant::now() + WITHIN;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.changes.recv_timeout(left).is_err() {
                assert!(done(self), "timed out waiting for {what}");
                return;
            }
        }
    }

    /// Waits for one `sessions-changed` event.
    fn next_event(&self) {
        self.events
            .recv_timeout(WITHIN)
            .expect("a sessions-changed event");
    }

    fn status_line(&self) -> String {
        self.invoke("status", json!({})).unwrap()["line"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn menu(&self) -> tauri::State<'_, TrayMenu<MockRuntime>> {
        self.app.state::<TrayMenu<MockRuntime>>()
    }

    fn settings_with_vault(&self) -> Value {
        json!({
            "vault_path": self.vault(),
            "model": "claude-opus-4-1",
            "allowed_senders": [ME],
            "session_timeout_minutes": 60
        })
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        tauri::async_runtime::block_on(self.host.shutdown());
    }
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn clear_one_and_clear_all_change_sessions_json_and_notify() {
    let h = harness(Setup {
        sessions: three_sessions(),
        ..Setup::default()
    });
    let chats = h.chats();
    assert_eq!(
        chats,
        [
            "iMessage;-;sarah@example.com",
            "iMessage;-;+15551234567",
            "iMessage;-;+447700900123"
        ],
        "most recent first"
    );
    let rows = h.invoke("list_sessions", json!({})).unwrap();
    assert_eq!(rows[1]["state"], "waiting");
    assert_eq!(rows[1]["text"], "Is that the Atlas book club? 📚");
    assert_eq!(rows[1]["who"], ME);
    while h.events.try_recv().is_ok() {}

    assert_eq!(
        h.invoke("clear_session", json!({ "chat": chats[2] })),
        Ok(Value::Null)
    );
    // The file says so as soon as the command returns.
    let mut left = chats[..2].to_vec();
    left.sort();
    assert_eq!(h.chats_on_disk(), left);
    assert_eq!(h.chats(), chats[..2].to_vec());
    h.next_event();

    let err = h
        .invoke("clear_session", json!({ "chat": chats[2] }))
        .unwrap_err();
    assert_eq!(err, json!(format!("no session for chat {}", chats[2])));
    assert_eq!(h.chats_on_disk(), left, "a refused clear changes nothing");

    assert_eq!(h.invoke("clear_all_sessions", json!({})), Ok(json!(2)));
    assert!(h.chats_on_disk().is_empty());
    assert!(h.chats().is_empty());
    h.next_event();
    assert_eq!(h.invoke("clear_all_sessions", json!({})), Ok(json!(0)));
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn invalid_settings_change_nothing_on_disk() {
    let h = harness(Setup {
        settings: Some(|vault| {
            json!({
                "vault_path": vault,
                "allowed_senders": [ME],
                "base_url": "http://127.0.0.1:9"
            })
        }),
        ..Setup::default()
    });
    let before = h.settings_bytes().unwrap();
    let shown = h.invoke("get_settings", json!({})).unwrap();
    assert_eq!(shown["vault_path"], json!(h.vault()));
    assert_eq!(shown["allowed_senders"], json!([ME]));
    assert_eq!(shown["session_timeout_minutes"], json!(60));
    assert_eq!(shown["api_key_set"], json!(false));

    let missing = h.dir.path().join("no such vault 🧠");
    let file = h.dir.path().join("note.md");
    std::fs::write(&file, "x").unwrap();
    let good = h.settings_with_vault();
    type Edit = fn(&mut Value, &Path, &Path);
    let cases: [(Edit, String); 6] = [
        (
            |s, missing, _| s["vault_path"] = json!(missing),
            format!("Vault folder: {} does not exist", missing.display()),
        ),
        (
            |s, _, file| s["vault_path"] = json!(file),
            format!("Vault folder: {} is a file, not a folder", file.display()),
        ),
        (
            |s, _, _| s["vault_path"] = json!("relative/vault"),
            "Vault folder: relative/vault is not an absolute path".to_owned(),
        ),
        (
            |s, _, _| s["model"] = json!("claude sonnet"),
            "Model: \"claude sonnet\" is not a model name".to_owned(),
        ),
        (
            |s, _, _| s["allowed_senders"] = json!([ME, "555-1234"]),
            "Allowed senders: \"555-1234\": write phone numbers with their country code, like +1 555 123 4567".to_owned(),
        ),
        (
            |s, _, _| s["session_timeout_minutes"] = json!(0),
            "Session timeout: must be between 1 ms and 7 days".to_owned(),
        ),
    ];
    for (edit, expected) in cases {
        let mut settings = good.clone();
        edit(&mut settings, &missing, &file);
        let err = h
            .invoke("save_settings", json!({ "settings": settings }))
            .unwrap_err();
        assert_eq!(err, json!(expected));
        assert_eq!(
            h.settings_bytes().unwrap(),
            before,
            "nothing written: {expected}"
        );
        assert_eq!(h.invoke("get_settings", json!({})).unwrap(), shown);
    }
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_valid_save_is_written_whole_and_applied() {
    let h = harness(Setup {
        settings: Some(|vault| {
            json!({
                "vault_path": vault,
                "allowed_senders": [ME],
                "base_url": "http://127.0.0.1:9"
            })
        }),
        ..Setup::default()
    });
    let good = h.settings_with_vault();
    // A valid save is written whole (the API base URL the page does not edit is kept) and
    // applied by a restarted bridge.
    let mut settings = good.clone();
    settings["allowed_senders"] = json!(["+1 (555) 123-4567", "Sarah@Example.COM"]);
    settings["session_timeout_minutes"] = json!(90);
    let saved = h
        .invoke("save_settings", json!({ "settings": settings }))
        .unwrap();
    assert_eq!(saved["allowed_senders"], json!([ME, "sarah@example.com"]));
    assert_eq!(saved["session_timeout_minutes"], json!(90));
    assert_eq!(saved["model"], json!("claude-opus-4-1"));
    let on_disk: Value = serde_json::from_slice(&h.settings_bytes().unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({
            "vault_path": h.vault(),
            "model": "claude-opus-4-1",
            "allowed_senders": [ME, "sarah@example.com"],
            "session_timeout_minutes": 90,
            "base_url": "http://127.0.0.1:9",
            "allow_sms": false,
            "allowed_groups": []
        })
    );
    assert_eq!(h.invoke("get_settings", json!({})).unwrap(), saved);
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn the_api_key_is_write_only_and_restarts_the_bridge() {
    let h = harness(Setup::default());
    let vault = h.vault();
    h.invoke(
        "save_settings",
        json!({ "settings": h.settings_with_vault() }),
    )
    .unwrap();
    h.wait_until("the bridge to ask for a key", |h| {
        h.status_line() == "Needs setup: API key missing"
    });
    for bad in ["", "  ", "sk-ant key", "sk-ant\nkey", "sk\u{2028}x"] {
        let err = h.invoke("set_api_key", json!({ "key": bad })).unwrap_err();
        assert!(
            err.as_str().unwrap().starts_with("API key: "),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(h.keychain.api_key().unwrap(), None);

    assert_eq!(
        h.invoke("set_api_key", json!({ "key": " sk-ant-123 " })),
        Ok(Value::Null)
    );
    assert_eq!(h.keychain.api_key().unwrap().as_deref(), Some("sk-ant-123"));
    let view = h.invoke("get_settings", json!({})).unwrap();
    assert_eq!(view["api_key_set"], json!(true));
    assert!(!view.to_string().contains("sk-ant-123"), "{view}");
    // The restarted bridge has the key: what it misses now is chat.db.
    h.wait_until("the bridge to look for chat.db", |h| {
        h.status_line() == "Needs setup: Messages is not set up (no chat.db)"
    });
    assert_eq!(
        h.invoke("get_settings", json!({})).unwrap()["vault_path"],
        json!(vault)
    );

    assert_eq!(h.invoke("clear_api_key", json!({})), Ok(Value::Null));
    assert_eq!(h.keychain.api_key().unwrap(), None);
    assert_eq!(
        h.invoke("get_settings", json!({})).unwrap()["api_key_set"],
        json!(false)
    );
    h.wait_until("the bridge to ask for a key again", |h| {
        h.status_line() == "Needs setup: API key missing"
    });
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn strangers_are_listed_live_and_allowed_across_a_restart() {
    let h = harness(Setup {
        chat_db: true,
        api_key: Some("sk-ant-test"),
        settings: Some(|vault| json!({ "vault_path": vault, "allowed_senders": [ME] })),
        ..Setup::default()
    });
    h.wait_until("the bridge to run", |h| {
        h.status_line() == "Running · 0 sessions"
    });
    let db = h.db.as_ref().unwrap();
    db.incoming(
        "iMessage;-;+15559876543",
        "+15559876543",
        "hi, who is this? 👋",
    );
    db.incoming("iMessage;-;zoë@example.com", "zoë@example.com", "مرحبا");
    h.wait_until("two strangers", |h| {
        h.invoke("recent_strangers", json!({}))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    let strangers = h.invoke("recent_strangers", json!({})).unwrap();
    assert_eq!(strangers[0]["handle"], "zoë@example.com", "newest first");
    assert_eq!(strangers[1]["handle"], "+15559876543");
    assert!(strangers[0]["last_seen"].as_str().is_some());

    let saved = h
        .invoke("allow_sender", json!({ "handle": "+1 555 987 6543" }))
        .unwrap();
    assert_eq!(saved["allowed_senders"], json!([ME, "+15559876543"]));
    let on_disk: Value = serde_json::from_slice(&h.settings_bytes().unwrap()).unwrap();
    assert_eq!(on_disk["allowed_senders"], json!([ME, "+15559876543"]));
    let left = h.invoke("recent_strangers", json!({})).unwrap();
    assert_eq!(
        left,
        json!([strangers[0]]),
        "the other stranger is kept across the restart"
    );
    let err = h
        .invoke("allow_sender", json!({ "handle": "nobody" }))
        .unwrap_err();
    assert_eq!(
        err,
        json!("Allowed senders: \"nobody\" is neither a phone number nor an email address")
    );

    // Pause and resume reach the running bridge and the tray.
    h.wait_until("the restarted bridge to run", |h| {
        h.status_line() == "Running · 0 sessions"
    });
    assert_eq!(
        h.invoke("set_paused", json!({ "paused": true })),
        Ok(json!({ "line": "Paused", "paused": true }))
    );
    tray::refresh(h.app.handle());
    assert_eq!(h.menu().status.text().unwrap(), "Paused");
    assert_eq!(h.menu().pause.text().unwrap(), "Resume");
    // A text sent while paused waits in chat.db and is read on resume.
    db.incoming("iMessage;-;+15550000001", "+15550000001", "paused?");
    h.invoke("set_paused", json!({ "paused": false })).unwrap();
    h.wait_until("the paused text to be read on resume", |h| {
        h.invoke("recent_strangers", json!({}))
            .unwrap()
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    tray::refresh(h.app.handle());
    assert_eq!(h.menu().pause.text().unwrap(), "Pause");
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_configuration_that_does_not_resolve_still_opens_and_can_be_repaired() {
    let h = harness(Setup {
        sessions: three_sessions(),
        settings: Some(|_| json!({ "model": "claude sonnet", "allowed_senders": [ME] })),
        ..Setup::default()
    });
    let problem = "model: \"claude sonnet\" is not a model name";
    assert_eq!(h.status_line(), format!("Needs setup: {problem}"));
    let err = h.invoke("list_sessions", json!({})).unwrap_err();
    assert_eq!(err, json!(format!("the bridge is not running: {problem}")));
    let shown = h.invoke("get_settings", json!({})).unwrap();
    assert_eq!(shown["model"], json!("claude sonnet"), "the file's values");
    assert_eq!(shown["allowed_senders"], json!([ME]));
    let checks = h.invoke("setup_checks", json!({})).unwrap();
    assert_eq!(checks[0]["id"], "settings");
    assert_eq!(checks[0]["detail"], problem);

    let mut repaired = h.settings_with_vault();
    repaired["model"] = json!("");
    let saved = h
        .invoke("save_settings", json!({ "settings": repaired }))
        .unwrap();
    assert_eq!(saved["model"], json!(bridge::anthropic::DEFAULT_MODEL));
    assert_eq!(h.chats().len(), 3, "the sessions were kept");
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn setup_checks_and_panes_over_ipc() {
    let h = harness(Setup {
        probe: Some("false"),
        ..Setup::default()
    });
    let checks = h.invoke("setup_checks", json!({})).unwrap();
    let ids: Vec<&str> = checks
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "chat_db",
            "vault",
            "api_key",
            "allowed_senders",
            "automation"
        ]
    );
    for check in checks.as_array().unwrap() {
        assert_eq!(check["ok"], json!(false), "{check}");
        assert!(
            check["fix"].as_str().is_some_and(|f| !f.is_empty()),
            "{check}"
        );
    }
    assert!(
        checks[0]["detail"]
            .as_str()
            .unwrap()
            .ends_with("does not exist"),
        "{}",
        checks[0]
    );

    let h = harness(Setup {
        chat_db: true,
        api_key: Some("sk-ant-1"),
        settings: Some(|vault| json!({ "vault_path": vault, "allowed_senders": [ME] })),
        ..Setup::default()
    });
    let checks = h.invoke("setup_checks", json!({})).unwrap();
    let failing: Vec<&Value> = checks
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] != json!(true))
        .collect();
    assert!(failing.is_empty(), "{failing:?}");

    assert_eq!(
        h.invoke("open_settings_pane", json!({ "pane": "automation" })),
        Ok(Value::Null)
    );
    assert_eq!(
        h.invoke("open_settings_pane", json!({ "pane": "full_disk_access" })),
        Ok(Value::Null)
    );
    // A pane of another name is refused when the arguments are read, and opens nothing.
    let refused = h
        .invoke("open_settings_pane", json!({ "pane": "camera" }))
        .unwrap_err();
    assert!(
        refused
            .as_str()
            .unwrap()
            .contains("unknown variant `camera`"),
        "{refused}"
    );
    assert_eq!(
        *h.opened.lock().unwrap(),
        [
            "x-apple.systempreferences:com.apple.preference.security?Privacy_Automation",
            "x-apple.systempreferences:com.apple.preference.security?Privacy_AllFiles",
        ]
    );
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn the_folder_picker_goes_through_the_hook() {
    let h = harness(Setup::default());
    assert_eq!(h.invoke("pick_vault_folder", json!({})), Ok(Value::Null));
    *h.picked.lock().unwrap() = Some(PathBuf::from("/Users/zoë/Obsidian/🧠 Brain"));
    assert_eq!(
        h.invoke("pick_vault_folder", json!({})),
        Ok(json!("/Users/zoë/Obsidian/🧠 Brain"))
    );
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn shutdown_saves_and_releases_the_data_dir() {
    let h = harness(Setup {
        sessions: three_sessions(),
        ..Setup::default()
    });
    assert!(bridge::lock::DataDirLock::is_held(&h.data()));
    tauri::async_runtime::block_on(h.host.shutdown());
    assert!(!bridge::lock::DataDirLock::is_held(&h.data()));
    assert_eq!(h.chats_on_disk().len(), 3);
    // Stopping twice is harmless (the app's exit path may run after a Quit).
    tauri::async_runtime::block_on(h.host.shutdown());
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn windows_are_created_on_demand_and_focused_when_open() {
    let h = harness(Setup::default());
    let mut labels: Vec<String> = h.app.webview_windows().into_keys().collect();
    assert_eq!(
        labels,
        ["setup"],
        "setup is incomplete: the checklist opens at launch"
    );
    for kind in Page::ALL {
        windows::show(h.app.handle(), kind).unwrap();
    }
    labels = h.app.webview_windows().into_keys().collect();
    labels.sort();
    assert_eq!(labels, ["sessions", "settings", "setup", "update"]);
    // Showing again reuses the open window. (Focus is asked for on every show; the mock
    // runtime's `set_focus` does nothing and `is_focused` is always false,
    // tauri-2.11.6/src/test/mock_runtime.rs:657,753, so it cannot be observed here.)
    let again = windows::show(h.app.handle(), Page::Settings).unwrap();
    assert_eq!(again.label(), "settings");
    assert_eq!(h.app.webview_windows().len(), Page::ALL.len());
}

/// The menu as built: every item in order with its text, and a click on "Check for
/// Updates…" (through the same handler as the icon's menu events) opens the Software Update
/// window, as Sessions… opens the sessions window.
#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn the_menu_lists_its_items_and_check_for_updates_opens_the_update_window() {
    let h = harness(Setup::default());
    let items: Vec<(String, String)> = h
        .menu()
        .menu
        .items()
        .unwrap()
        .iter()
        .filter_map(|item| {
            let text = match item {
                tauri::menu::MenuItemKind::MenuItem(i) => i.text().unwrap(),
                tauri::menu::MenuItemKind::Check(i) => i.text().unwrap(),
                _ => return None,
            };
            Some((item.id().as_ref().to_string(), text))
        })
        .collect();
    let ids: Vec<&str> = items.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            tray::STATUS,
            tray::SESSIONS,
            tray::SETTINGS,
            tray::SETUP,
            tray::UPDATES,
            tray::PAUSE,
            tray::LOGIN,
            tray::OPEN_VAULT,
            tray::OPEN_LOGS,
            tray::QUIT
        ]
    );
    assert_eq!(items[4].1, "Check for Updates…");
    assert!(!h.app.webview_windows().contains_key("update"));
    tray::handle(h.app.handle(), tray::UPDATES);
    assert!(h.app.webview_windows().contains_key("update"));
    tray::handle(h.app.handle(), tray::SESSIONS);
    assert!(h.app.webview_windows().contains_key("sessions"));
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_complete_setup_opens_nothing_at_launch_and_reopen_shows_the_sessions() {
    let h = harness(Setup {
        chat_db: true,
        api_key: Some("sk-ant-1"),
        settings: Some(|vault| json!({ "vault_path": vault, "allowed_senders": [ME] })),
        ..Setup::default()
    });
    assert!(
        h.app.webview_windows().is_empty(),
        "nothing opens at launch"
    );
    tauri::async_runtime::block_on(reopen(h.app.handle())).unwrap();
    let labels: Vec<String> = h.app.webview_windows().into_keys().collect();
    assert_eq!(labels, ["sessions"]);
    // Reopening again brings the same window forward.
    tauri::async_runtime::block_on(reopen(h.app.handle())).unwrap();
    assert_eq!(h.app.webview_windows().len(), 1);
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn reopen_shows_the_checklist_while_setup_is_incomplete() {
    let h = harness(Setup::default());
    h.app.get_webview_window("setup").unwrap().close().unwrap();
    tauri::async_runtime::block_on(reopen(h.app.handle())).unwrap();
    let labels: Vec<String> = h.app.webview_windows().into_keys().collect();
    assert_eq!(labels, ["setup"]);
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn a_start_that_cannot_run_stays_up_and_says_why() {
    let app = build_app(mock_builder(), updates::test_context()).unwrap();
    app.manage(Hooks {
        pick_folder: Arc::new(|| Ok(None)),
        alert: Box::new(|_| {}),
    });
    needs_attention(
        app.handle(),
        "no folder for the app's data".to_owned(),
        false,
    );
    let labels: Vec<String> = app.webview_windows().into_keys().collect();
    assert_eq!(labels, ["setup"], "the checklist opens with the reason");
    let menu = app.state::<TrayMenu<MockRuntime>>();
    assert_eq!(
        menu.status.text().unwrap(),
        "Needs attention: no folder for the app's data"
    );
    let window = app.get_webview_window("setup").unwrap();
    let invoke = |cmd: &str| {
        let request = InvokeRequest {
            cmd: cmd.into(),
            callback: tauri::ipc::CallbackFn(0),
            error: tauri::ipc::CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: tauri::ipc::InvokeBody::Json(json!({})),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        };
        get_ipc_response(&window, request).map(|body| body.deserialize::<Value>().unwrap())
    };
    let checks = invoke("setup_checks").unwrap();
    assert_eq!(checks[0]["id"], "startup");
    assert_eq!(checks[0]["ok"], json!(false));
    assert_eq!(checks[0]["detail"], "no folder for the app's data");
    assert_eq!(
        invoke("status").unwrap()["line"],
        "Needs attention: no folder for the app's data"
    );
    // What `main` returns for a start that failed: 0, after reporting, so launchd does not
    // start the app again and again.
    assert_eq!(
        exit_code(&Err(anyhow::anyhow!("could not start the app"))),
        0
    );
    assert_eq!(exit_code(&Ok(())), 0);
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn menu_dispatch_of_each_id() {
    let h = harness(Setup::default());
    let app = h.app.handle();

    let at_launch = h.app.webview_windows().len();
    tray::handle(app, tray::STATUS);
    tray::handle(app, "no-such-id");
    assert_eq!(
        h.app.webview_windows().len(),
        at_launch,
        "the status line does nothing"
    );

    for (id, label) in [
        (tray::SESSIONS, "sessions"),
        (tray::SETTINGS, "settings"),
        (tray::SETUP, "setup"),
    ] {
        tray::handle(app, id);
        assert!(
            h.app.get_webview_window(label).is_some(),
            "{id} opens {label}"
        );
    }

    h.wait_until("the bridge to say what is missing", |h| {
        h.status_line() == "Needs setup: no vault folder chosen"
    });
    tray::refresh(app);
    assert_eq!(
        h.menu().status.text().unwrap(),
        "Needs setup: no vault folder chosen"
    );
    tray::handle(app, tray::PAUSE);
    assert_eq!(h.menu().pause.text().unwrap(), "Resume");
    assert_eq!(
        h.invoke("status", json!({})).unwrap()["paused"],
        json!(true)
    );
    tray::handle(app, tray::PAUSE);
    assert_eq!(h.menu().pause.text().unwrap(), "Pause");
    assert_eq!(
        h.invoke("status", json!({})).unwrap()["paused"],
        json!(false)
    );

    // Quit calls `AppHandle::exit(0)`, which the mock runtime cannot carry out; its contract
    // is that the exit code it produces is never prevented.
    assert_eq!(tray::action_for(tray::QUIT), Some(tray::MenuAction::Quit));
    assert!(!keeps_running(Some(0)));
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn the_login_item_is_flipped_from_the_menu() {
    let h = harness(Setup::default());
    let app = h.app.handle();
    let agent = bridge::login_item::agent_path(h.dir.path(), IDENTIFIER);
    assert!(!h.menu().login.is_checked().unwrap());
    tray::handle(app, tray::LOGIN);
    assert!(h.menu().login.is_checked().unwrap());
    let plist = std::fs::read_to_string(&agent).unwrap();
    assert!(
        plist.contains("/Applications/Second Brain.app/Contents/MacOS/second-brain"),
        "{plist}"
    );
    tray::handle(app, tray::LOGIN);
    assert!(!h.menu().login.is_checked().unwrap());
    assert!(!agent.exists());
    assert!(h.alerts.lock().unwrap().is_empty(), "{:?}", h.alerts.lock());
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn open_vault_and_open_logs_go_through_the_opener() {
    let h = harness(Setup::default());
    let app = h.app.handle();
    // No vault chosen: Open Vault opens nothing and says why; once saved, it opens the vault.
    tray::handle(app, tray::OPEN_VAULT);
    assert!(h.opened.lock().unwrap().is_empty());
    assert_eq!(
        *h.alerts.lock().unwrap(),
        ["no vault folder chosen yet"],
        "a failed click tells the user"
    );
    h.invoke(
        "save_settings",
        json!({ "settings": h.settings_with_vault() }),
    )
    .unwrap();
    tray::handle(app, tray::OPEN_VAULT);
    tray::handle(app, tray::OPEN_LOGS);
    let logs = h.data().join("logs");
    assert_eq!(
        *h.opened.lock().unwrap(),
        [h.vault().display().to_string(), logs.display().to_string()]
    );
    assert!(logs.is_dir(), "Open Logs creates the folder first");
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn production_notice_refreshes_the_tray() {
    let h = harness(Setup::default());
    let notice = production_notify(h.app.handle());
    h.host.set_paused(true);
    assert_eq!(h.menu().pause.text().unwrap(), "Pause", "not refreshed yet");
    while h.events.try_recv().is_ok() {}
    notice(Change::Sessions);
    h.next_event();
    assert_eq!(
        h.menu().pause.text().unwrap(),
        "Pause",
        "sessions leave the tray alone"
    );
    notice(Change::Status);
    assert_eq!(h.menu().pause.text().unwrap(), "Resume");
}

#[test]
fn closing_the_last_window_never_quits() {
    assert!(
        keeps_running(None),
        "last window closed: stay in the menu bar"
    );
    for code in [0, 1, -1, 130] {
        assert!(
            !keeps_running(Some(code)),
            "explicit exit {code} goes through"
        );
    }
}

#[test]
#[cfg_attr(
    target_os = "macos",
    ignore = "muda builds menus on the main thread only"
)]
fn login_check_mark_reflects_the_disk() {
    let h = harness(Setup::default());
    bridge::login_item::enable(
        h.dir.path(),
        IDENTIFIER,
        Path::new("/Applications/Second Brain.app/Contents/MacOS/second-brain"),
    )
    .unwrap();
    tray::refresh_login(h.app.handle());
    assert!(h.menu().login.is_checked().unwrap());
    assert_eq!(h.menu().login.text().unwrap(), "Launch at Login");
}

#[test]
fn the_bundle_identifier_is_the_bridge_s() {
    let config: Value = serde_json::from_str(include_str!("../tauri.conf.json")).unwrap();
    assert_eq!(config["identifier"], json!(bridge::config::BUNDLE_ID));
}

/// Every command the app registers is in the ACL manifest of `build.rs`, and granted to a
/// page; every command a page is granted is registered. A command left out of the manifest is
/// refused in a real window (tauri-2.11.6/src/webview/mod.rs:1823), which the mock runtime
/// does not check: so the settings page's group commands once failed only in the real app.
#[test]
fn every_command_is_in_the_manifest_and_granted_to_a_page() {
    fn between<'a>(text: &'a str, start: &str, end: &str) -> &'a str {
        let from = text.find(start).expect(start) + start.len();
        &text[from..from + text[from..].find(end).expect(end)]
    }
    let mut registered: Vec<String> = between(include_str!("lib.rs"), "generate_handler![", "]")
        .split(',')
        .filter_map(|name| name.trim().strip_prefix("commands::").map(str::to_owned))
        .collect();
    let mut manifest: Vec<String> =
        between(include_str!("../build.rs"), "COMMANDS: &[&str] = &[", "];")
            .split(',')
            .map(|name| name.trim().trim_matches('"').to_owned())
            .filter(|name| !name.is_empty())
            .collect();
    registered.sort();
    manifest.sort();
    assert_eq!(registered, manifest);
    let mut granted: Vec<String> = [
        include_str!("../capabilities/sessions.json"),
        include_str!("../capabilities/settings.json"),
        include_str!("../capabilities/setup.json"),
        include_str!("../capabilities/update.json"),
    ]
    .into_iter()
    .flat_map(|file| {
        let capability: Value = serde_json::from_str(file).unwrap();
        let permissions = capability["permissions"].as_array().unwrap().clone();
        permissions.into_iter().filter_map(|p| {
            let command = p.as_str()?.strip_prefix("allow-")?.replace('-', "_");
            Some(command)
        })
    })
    .collect();
    granted.sort();
    granted.dedup();
    assert_eq!(granted, manifest, "each command is granted to a page");
}
