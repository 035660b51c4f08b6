//! The shell driven through `tauri::test::mock_builder()`: commands over IPC, menu dispatch,
//! windows on demand. Each test has its own temporary home folder.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tauri::test::{
    INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder, mock_context, noop_assets,
};
use tauri::webview::InvokeRequest;
use tauri::{Listener, WebviewWindow};

use super::*;
use crate::tray::TrayMenu;

const IDENTIFIER: &str = "app.secondbrain.SecondBrain";

struct Harness {
    app: App<MockRuntime>,
    home: tempfile::TempDir,
    opened: Arc<Mutex<Vec<String>>>,
    picked: Arc<Mutex<Option<PathBuf>>>,
    events: mpsc::Receiver<()>,
}

fn harness() -> Harness {
    let home = tempfile::tempdir().unwrap();
    let app = build_app(mock_builder(), mock_context(noop_assets())).unwrap();
    let opened = Arc::new(Mutex::new(Vec::new()));
    let picked = Arc::new(Mutex::new(None));
    let (tx, events) = mpsc::channel();
    app.listen_any(commands::SESSIONS_CHANGED, move |_| {
        let _ = tx.send(());
    });
    let handle = app.handle().clone();
    let hooks = Hooks {
        changed: Box::new(move || notify_changed(&handle)),
        pick_folder: {
            let picked = Arc::clone(&picked);
            Arc::new(move || Ok(picked.lock().unwrap().clone()))
        },
        open_url: {
            let opened = Arc::clone(&opened);
            Box::new(move |target| {
                opened.lock().unwrap().push(target.to_owned());
                Ok(())
            })
        },
    };
    let options = Options {
        shell: Shell {
            home: home.path().to_path_buf(),
            logs_dir: home.path().join("Library/Logs/Second Brain"),
            identifier: IDENTIFIER.to_owned(),
            executable: PathBuf::from("/Applications/Second Brain.app/Contents/MacOS/second-brain"),
        },
        tray: false,
        open_window: None,
    };
    install(app.handle(), options, hooks).unwrap();
    Harness {
        app,
        home,
        opened,
        picked,
        events,
    }
}

impl Harness {
    fn window(&self) -> WebviewWindow<MockRuntime> {
        windows::show(self.app.handle(), WindowKind::Sessions).unwrap()
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

    fn events_seen(&self) -> usize {
        self.events.try_iter().count()
    }

    fn menu(&self) -> tauri::State<'_, TrayMenu<MockRuntime>> {
        self.app.state::<TrayMenu<MockRuntime>>()
    }
}

#[test]
fn clear_one_and_clear_all_change_the_state_and_notify() {
    let h = harness();
    let chats = h.chats();
    assert_eq!(chats.len(), 3);
    assert_eq!(h.events_seen(), 0);

    assert_eq!(
        h.invoke("clear_session", json!({ "chat": chats[0] })),
        Ok(Value::Null)
    );
    assert_eq!(h.chats(), chats[1..].to_vec());
    assert_eq!(h.events_seen(), 1, "one sessions-changed per change");

    let err = h
        .invoke("clear_session", json!({ "chat": chats[0] }))
        .unwrap_err();
    assert_eq!(err, json!(format!("no session for chat {}", chats[0])));
    assert_eq!(h.events_seen(), 0, "a refused clear changes nothing");

    assert_eq!(h.invoke("clear_all_sessions", json!({})), Ok(json!(2)));
    assert!(h.chats().is_empty());
    assert_eq!(h.events_seen(), 1);
}

#[test]
fn settings_round_trip_and_refusal_over_ipc() {
    let h = harness();
    let vault = h.home.path().join("Vault");
    std::fs::create_dir(&vault).unwrap();
    let before = h.invoke("get_settings", json!({})).unwrap();
    assert_eq!(before["api_key_set"], json!(false));
    assert_eq!(before["session_timeout_minutes"], json!(60));

    let missing = h.home.path().join("no such vault");
    let mut settings = json!({
        "vault_path": missing.display().to_string(),
        "model": "claude-opus-4-1",
        "allowed_senders": ["+1 555 000 1111"],
        "session_timeout_minutes": 30
    });
    let err = h
        .invoke("save_settings", json!({ "settings": settings }))
        .unwrap_err();
    assert_eq!(
        err,
        json!(format!(
            "Vault folder: “{}” does not exist",
            missing.display()
        ))
    );
    assert_eq!(
        h.invoke("get_settings", json!({})).unwrap(),
        before,
        "nothing half-saved"
    );

    settings["vault_path"] = json!(vault.display().to_string());
    let saved = h
        .invoke("save_settings", json!({ "settings": settings }))
        .unwrap();
    assert_eq!(saved["allowed_senders"], json!(["+15550001111"]));
    assert_eq!(saved["model"], json!("claude-opus-4-1"));
    assert_eq!(h.invoke("get_settings", json!({})).unwrap(), saved);

    assert_eq!(
        h.invoke("set_api_key", json!({ "key": "sk-ant-xyz" })),
        Ok(Value::Null)
    );
    let with_key = h.invoke("get_settings", json!({})).unwrap();
    assert_eq!(with_key["api_key_set"], json!(true));
    assert!(!with_key.to_string().contains("sk-ant-xyz"));
    assert_eq!(h.invoke("clear_api_key", json!({})), Ok(Value::Null));
    assert_eq!(
        h.invoke("get_settings", json!({})).unwrap()["api_key_set"],
        json!(false)
    );
}

#[test]
fn strangers_can_be_allowed() {
    let h = harness();
    let strangers = h.invoke("recent_strangers", json!({})).unwrap();
    assert_eq!(strangers[0]["handle"], json!("+15559876543"));
    let saved = h
        .invoke("allow_sender", json!({ "handle": "+15559876543" }))
        .unwrap();
    assert!(
        saved["allowed_senders"]
            .as_array()
            .unwrap()
            .contains(&json!("+15559876543"))
    );
    let strangers = h.invoke("recent_strangers", json!({})).unwrap();
    assert_eq!(strangers.as_array().unwrap().len(), 1);
}

#[test]
fn folder_picker_and_settings_panes_go_through_the_hooks() {
    let h = harness();
    assert_eq!(h.invoke("pick_vault_folder", json!({})), Ok(Value::Null));
    *h.picked.lock().unwrap() = Some(PathBuf::from("/Users/zoë/Obsidian/🧠 Brain"));
    assert_eq!(
        h.invoke("pick_vault_folder", json!({})),
        Ok(json!("/Users/zoë/Obsidian/🧠 Brain"))
    );

    assert_eq!(
        h.invoke("open_settings_pane", json!({ "pane": "automation" })),
        Ok(Value::Null)
    );
    assert_eq!(
        h.invoke("open_settings_pane", json!({ "pane": "full_disk_access" })),
        Ok(Value::Null)
    );
    assert!(
        h.invoke("open_settings_pane", json!({ "pane": "camera" }))
            .is_err()
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
fn setup_checks_and_status_over_ipc() {
    let h = harness();
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
            "full_disk_access",
            "automation",
            "vault",
            "api_key",
            "senders"
        ]
    );
    assert_eq!(checks[0]["pane"], json!("full_disk_access"));
    assert_eq!(checks[3]["pane"], Value::Null);

    assert_eq!(
        h.invoke("status", json!({})),
        Ok(json!({ "line": "Needs setup: Full Disk Access", "paused": false }))
    );
    assert_eq!(
        h.invoke("set_paused", json!({ "paused": true })),
        Ok(json!({ "line": "Paused", "paused": true }))
    );
    assert_eq!(h.menu().status.text().unwrap(), "Paused");
    assert_eq!(h.menu().pause.text().unwrap(), "Resume");
    assert_eq!(h.events_seen(), 1);
}

#[test]
fn windows_are_created_on_demand_and_focused_when_open() {
    let h = harness();
    assert!(h.app.webview_windows().is_empty(), "no window at launch");
    for kind in WindowKind::ALL {
        windows::show(h.app.handle(), kind).unwrap();
    }
    let mut labels: Vec<String> = h.app.webview_windows().into_keys().collect();
    labels.sort();
    assert_eq!(labels, ["sessions", "settings", "setup"]);
    // Showing again reuses the open window.
    let again = windows::show(h.app.handle(), WindowKind::Settings).unwrap();
    assert_eq!(again.label(), "settings");
    assert_eq!(h.app.webview_windows().len(), 3);
}

#[test]
fn the_e2e_switch_opens_one_window_at_launch() {
    let home = tempfile::tempdir().unwrap();
    let app = build_app(mock_builder(), mock_context(noop_assets())).unwrap();
    let hooks = Hooks {
        changed: Box::new(|| {}),
        pick_folder: Arc::new(|| Ok(None)),
        open_url: Box::new(|_| Ok(())),
    };
    let mut options = Options::from_env(IDENTIFIER).unwrap();
    options.shell.home = home.path().to_path_buf();
    options.tray = false;
    options.open_window = Some(WindowKind::Setup);
    install(app.handle(), options, hooks).unwrap();
    let labels: Vec<String> = app.webview_windows().into_keys().collect();
    assert_eq!(labels, ["setup"]);
}

#[test]
fn menu_dispatch_of_each_id() {
    let h = harness();
    let app = h.app.handle();
    let agent = login_item::agent_path(h.home.path(), IDENTIFIER);

    tray::handle(app, tray::STATUS);
    tray::handle(app, "no-such-id");
    assert!(
        h.app.webview_windows().is_empty(),
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

    assert_eq!(
        h.menu().status.text().unwrap(),
        "Needs setup: Full Disk Access"
    );
    tray::handle(app, tray::PAUSE);
    assert_eq!(h.menu().status.text().unwrap(), "Paused");
    assert_eq!(h.menu().pause.text().unwrap(), "Resume");
    assert_eq!(
        h.invoke("status", json!({})).unwrap()["paused"],
        json!(true)
    );
    tray::handle(app, tray::PAUSE);
    assert_eq!(h.menu().pause.text().unwrap(), "Pause");
    assert_eq!(h.events_seen(), 2, "pause and resume both notify the pages");

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

    tray::handle(app, tray::OPEN_VAULT);
    tray::handle(app, tray::OPEN_LOGS);
    let vault = h.invoke("get_settings", json!({})).unwrap()["vault_path"]
        .as_str()
        .unwrap()
        .to_owned();
    let logs = h.home.path().join("Library/Logs/Second Brain");
    assert_eq!(
        *h.opened.lock().unwrap(),
        [vault, logs.display().to_string()]
    );
    assert!(logs.is_dir(), "Open Logs creates the folder first");

    // Quit calls `AppHandle::exit(0)`, which the mock runtime cannot carry out; its contract
    // is that the exit code it produces is never prevented.
    assert_eq!(tray::action_for(tray::QUIT), Some(tray::MenuAction::Quit));
    assert!(!keeps_running(Some(0)));
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
fn login_check_mark_reflects_the_disk() {
    let h = harness();
    login_item::enable(h.home.path(), IDENTIFIER, Path::new("/bin/true")).unwrap();
    tray::refresh(h.app.handle());
    assert!(h.menu().login.is_checked().unwrap());
}
