//! Real-window end-to-end test: the built app, running the real bridge, in a real WebKitGTK
//! window driven through `tauri-driver` (which fronts `WebKitWebDriver`) with a tiny W3C
//! WebDriver client.
//!
//! Each scenario builds a [`World`] from the bridge's own test fakes (`tests/util/`, the
//! `second-brain-testkit` crate): a fixture chat.db, a vault folder, a data folder, the strict fake Anthropic
//! server on `127.0.0.1:0` (in this test's tokio runtime) and the fake `osascript` first on
//! `PATH`; the app gets them through the bridge's environment variables. Assertions look at
//! the page and at the effects on disk (`sessions.json`, `settings.json`, osascript's argv).
//!
//! Needs an X display and a D-Bus session: run it through `scripts/app-e2e.sh`, which wraps it
//! in `dbus-run-session -- xvfb-run -a`. It is `test = false` in `Cargo.toml`, so a plain
//! `cargo test` does not try to open windows on a machine without a display.
//!
//! Each scenario starts its own `tauri-driver` on free ports with `SECOND_BRAIN_OPEN_WINDOW`
//! naming the window to open and `HOME` pointing at a fresh temporary folder, and stops it with
//! SIGTERM (SIGKILL would leave `WebKitWebDriver` holding its port); the app gets SIGTERM too,
//! which it answers by draining and saving. Waiting is done inside the page (`execute/async`
//! resolving when a condition holds) or on file events, not by sleeping in the test.
//! Screenshots of each page go to `<target dir>/e2e-screenshots/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bridge::chatdb::Chat;
use bridge::sessions::{Session as Conversation, SessionState};
use serde_json::{Value, json};

use util::{anthropic, chatdb, osascript};

use anthropic::{FakeAnthropic, Reply};
use chatdb::FixtureDb;
use osascript::FakeOsascript;

/// The W3C key under which an element reference is returned.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

type Result<T> = std::result::Result<T, String>;

/// A `tauri-driver` process for one scenario; stopped with SIGTERM when dropped.
struct Driver {
    child: Child,
    port: u16,
    _home: tempfile::TempDir,
}

impl Driver {
    fn start(window: &str, extra_env: &[(String, String)]) -> Result<Self> {
        let home = tempfile::tempdir().map_err(|e| format!("temp home: {e}"))?;
        let port = free_port()?;
        let native_port = free_port()?;
        let program = std::env::var_os("TAURI_DRIVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cargo_bin = dirs_home().join(".cargo/bin/tauri-driver");
                if cargo_bin.exists() {
                    cargo_bin
                } else {
                    PathBuf::from("tauri-driver")
                }
            });
        let child = Command::new(&program)
            .args([
                "--port",
                &port.to_string(),
                "--native-port",
                &native_port.to_string(),
            ])
            .env("SECOND_BRAIN_OPEN_WINDOW", window)
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env("XDG_DATA_HOME", home.path().join(".local/share"))
            .env("XDG_STATE_HOME", home.path().join(".local/state"))
            // Xvfb has no GPU: render on the CPU. With GPU rendering, WebKit's WebDriver
            // screenshots wait 30 s for a frame that never comes.
            .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
            .env("WEBKIT_SKIA_ENABLE_CPU_RENDERING", "1")
            .env("GTK_USE_PORTAL", "0")
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", program.display()))?;
        let driver = Driver {
            child,
            port,
            _home: home,
        };
        driver.wait_ready()?;
        Ok(driver)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until the driver answers `/status`: the one place that polls, because a child
    /// process's listening socket gives no other signal. Bounded by a deadline.
    fn wait_ready(&self) -> Result<()> {
        let client = http();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = client.get(self.url("/status")).send()
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("tauri-driver did not start listening within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The app this driver launched (and WebKitWebDriver) must be gone before the next
        // scenario starts, or the next app would find it holding the single-instance lock.
        let launched = descendants(self.child.id());
        // SIGTERM lets tauri-driver stop WebKitWebDriver; SIGKILL would orphan it on its port.
        terminate(self.child.id());
        let _ = self.child.wait();
        for pid in launched {
            if !exits_within(pid, Duration::from_secs(5)) {
                terminate(pid);
                exits_within(pid, Duration::from_secs(5));
            }
        }
    }
}

fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// Every process below `root`, read from `/proc/<pid>/stat` (field 4 is the parent).
fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name is in parentheses and may contain spaces: split after it.
            let after_name = &stat[stat.rfind(')')? + 1..];
            let ppid = after_name.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// Waits (bounded) for `pid` to end; a zombie counts as ended.
fn exits_within(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                let after_name = stat[stat.rfind(')')? + 1..].to_owned();
                after_name.split_whitespace().next().map(str::to_owned)
            });
        if state.is_none_or(|s| s == "Z") {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client with default settings builds")
}

/// One WebDriver session: the app launched by the driver, with one window.
struct Session<'d> {
    driver: &'d Driver,
    id: String,
    client: reqwest::blocking::Client,
}

impl<'d> Session<'d> {
    fn new(driver: &'d Driver) -> Result<Self> {
        let client = http();
        let app = env!("CARGO_BIN_EXE_second-brain");
        let body = json!({
            "capabilities": {
                "alwaysMatch": { "tauri:options": { "application": app } }
            }
        });
        let value = send(client.post(driver.url("/session")).json(&body))?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no sessionId in {value}"))?
            .to_owned();
        let session = Session { driver, id, client };
        session.post("/timeouts", json!({ "implicit": 10_000, "script": 15_000 }))?;
        Ok(session)
    }

    fn url(&self, path: &str) -> String {
        self.driver.url(&format!("/session/{}{path}", self.id))
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        let started = Instant::now();
        let result = send(self.client.post(self.url(path)).json(&body));
        eprintln!("POST {path} ({} ms)", started.elapsed().as_millis());
        result
    }

    fn get(&self, path: &str) -> Result<Value> {
        let started = Instant::now();
        let result = send(self.client.get(self.url(path)));
        eprintln!("GET {path} ({} ms)", started.elapsed().as_millis());
        result
    }

    /// Finds one element by CSS selector (the implicit timeout waits for it to appear).
    fn find(&self, css: &str) -> Result<String> {
        let value = self.post("/element", json!({ "using": "css selector", "value": css }))?;
        value[ELEMENT_KEY]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{css}: {value}"))
    }

    fn click(&self, css: &str) -> Result<()> {
        let element = self.find(css)?;
        self.post(&format!("/element/{element}/click"), json!({}))
            .map(drop)
    }

    fn text(&self, css: &str) -> Result<String> {
        let element = self.find(css)?;
        let value = self.get(&format!("/element/{element}/text"))?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{css} text: {value}"))
    }

    /// The `textContent` of the first element matching `css`. WebDriver's element text is
    /// the rendered text, which WebKit reports empty for a line-clamped box.
    fn content(&self, css: &str) -> Result<String> {
        self.find(css)?;
        let value = self.execute(
            "return document.querySelector(arguments[0]).textContent;",
            json!([css]),
        )?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{css} textContent: {value}"))
    }

    fn type_into(&self, css: &str, text: &str) -> Result<()> {
        let element = self.find(css)?;
        self.post(&format!("/element/{element}/clear"), json!({}))?;
        self.post(
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        )
        .map(drop)
    }

    fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Resolves when the JavaScript expression `condition` is truthy, checking once per
    /// animation frame inside the page; fails after the script timeout.
    fn wait_until(&self, condition: &str) -> Result<()> {
        let script = format!(
            "const done = arguments[arguments.length - 1];
             const check = () => {{ if ({condition}) done(true); else requestAnimationFrame(check); }};
             check();"
        );
        self.post("/execute/async", json!({ "script": script, "args": [] }))
            .map_err(|e| format!("waiting for `{condition}`: {e}"))
            .map(drop)
    }

    fn count(&self, css: &str) -> Result<u64> {
        let value = self.execute(
            "return document.querySelectorAll(arguments[0]).length;",
            json!([css]),
        )?;
        value
            .as_u64()
            .ok_or_else(|| format!("count {css}: {value}"))
    }

    fn screenshot(&self, name: &str) -> Result<PathBuf> {
        // WebKit answers a screenshot after the page's next rendering update, and a still page
        // has none: keep a practically invisible 1 px animation running while the shot is taken.
        self.execute(
            "const tick = document.createElement('div');
             tick.id = 'e2e-tick';
             Object.assign(tick.style, { position: 'fixed', right: '0', bottom: '0',
                 width: '1px', height: '1px', background: '#000', pointerEvents: 'none' });
             document.body.append(tick);
             tick.animate([{ opacity: 0 }, { opacity: 0.004 }], { duration: 10000 });
             return true;",
            json!([]),
        )?;
        let shot = self.get("/screenshot");
        self.execute(
            "document.getElementById('e2e-tick')?.remove(); return true;",
            json!([]),
        )?;
        let value = shot?;
        let encoded = value
            .as_str()
            .ok_or_else(|| format!("screenshot: {value}"))?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| format!("screenshot is not base64: {e}"))?;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err("screenshot is not a PNG".into());
        }
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("screenshot: {}", path.display());
        Ok(path)
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.client.delete(self.url("")).send();
    }
}

/// Sends a request and unwraps the W3C `{"value": …}` envelope, turning errors into text.
fn send(request: reqwest::blocking::RequestBuilder) -> Result<Value> {
    let response = request.send().map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body: Value = response
        .json()
        .map_err(|e| format!("{status}: body is not JSON: {e}"))?;
    let value = body.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(format!(
            "{status}: {} — {}",
            value["error"], value["message"]
        ))
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("e2e-screenshots")
}

/// The allowed sender of every world, and their direct chat.
const ME: &str = "+15551234567";
const ME_CHAT: &str = "iMessage;-;+15551234567";
/// The API key the fake Anthropic server expects.
const API_KEY: &str = "sk-ant-e2e-key";
/// What the fake model asks about every text.
const QUESTION: &str = "Is “Ana dinner” a plan for this Friday or a recurring one? 🍝";

/// How the allowed senders reach the app.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Senders {
    /// `ALLOWED_SENDERS` and `VAULT_PATH` in the environment (the service's way).
    Environment,
    /// Only `settings.json` (the app's way; the Settings page can change them).
    SettingsFile,
}

/// A temporary world for one app launch: folders, fixture chat.db and fakes.
struct World {
    dir: tempfile::TempDir,
    db: FixtureDb,
    api: FakeAnthropic,
    osascript: FakeOsascript,
    /// Runs the fake server; declared last so that it outlives it.
    runtime: tokio::runtime::Runtime,
}

impl World {
    fn new(responder: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> World {
        let dir = tempfile::tempdir().expect("a temporary folder");
        for sub in ["vault", "data", "Messages"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("the world's folders");
        }
        let db = FixtureDb::create(&dir.path().join("Messages/chat.db"));
        db.chat(ME_CHAT, ME, false);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the fake server");
        let api = {
            let _inside = runtime.enter();
            FakeAnthropic::start(API_KEY, responder)
        };
        let osascript = FakeOsascript::install(&dir.path().join("osascript"));
        World {
            dir,
            db,
            api,
            osascript,
            runtime,
        }
    }

    fn vault(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The app's environment in this world.
    fn env(&self, senders: Senders) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "SECOND_BRAIN_DATA_DIR".to_owned(),
                path_text(&self.data_dir()),
            ),
            ("CHAT_DB_PATH".to_owned(), path_text(self.db.path())),
            ("ANTHROPIC_BASE_URL".to_owned(), self.api.base_url()),
            ("ANTHROPIC_API_KEY".to_owned(), API_KEY.to_owned()),
            (
                "LOG_LEVEL".to_owned(),
                "info,bridge=debug,second_brain=debug".to_owned(),
            ),
        ];
        if senders == Senders::Environment {
            env.push(("VAULT_PATH".to_owned(), path_text(&self.vault())));
            env.push(("ALLOWED_SENDERS".to_owned(), ME.to_owned()));
        }
        env.extend(self.osascript.env());
        env
    }

    /// Writes `sessions.json` in the bridge's own format.
    fn write_sessions(&self, sessions: &[Conversation]) {
        let file = json!({ "version": bridge::sessions::FILE_VERSION, "sessions": sessions });
        std::fs::write(self.data_dir().join("sessions.json"), file.to_string())
            .expect("write sessions.json");
    }

    /// The chat guids in `sessions.json`, sorted.
    fn chats_on_disk(&self) -> Vec<String> {
        let bytes = std::fs::read(self.data_dir().join("sessions.json")).expect("sessions.json");
        let file: Value = serde_json::from_slice(&bytes).expect("sessions.json is JSON");
        let mut chats: Vec<String> = file["sessions"]
            .as_array()
            .expect("a sessions array")
            .iter()
            .filter_map(|s| s["chat"]["guid"].as_str().map(str::to_owned))
            .collect();
        chats.sort();
        chats
    }

    /// Waits, on file events in the data folder, until `sessions.json` holds exactly `chats`.
    fn wait_for_chats_on_disk(&self, chats: &[&str]) -> Result<()> {
        wait_for_file_event(&self.data_dir(), Duration::from_secs(20), || {
            self.chats_on_disk() == chats
        })
        .map_err(|()| {
            format!(
                "sessions.json never held {chats:?}: {:?}",
                self.chats_on_disk()
            )
        })
    }

    fn settings_file(&self) -> Option<Vec<u8>> {
        std::fs::read(self.data_dir().join("settings.json")).ok()
    }

    /// Waits, on file events in the data folder, until the bridge's `status.json` says it is
    /// reading chat.db.
    fn wait_until_running(&self) -> Result<()> {
        let status = self.data_dir().join("status.json");
        wait_for_file_event(&self.data_dir(), Duration::from_secs(20), || {
            std::fs::read(&status)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .is_some_and(|s| s["state"] == "running")
        })
        .map_err(|()| format!("the bridge did not report running in {}", status.display()))
    }
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("temporary paths are UTF-8").to_owned()
}

/// Returns once `done` holds, checking it again on every file event in `dir`.
fn wait_for_file_event(
    dir: &Path,
    within: Duration,
    done: impl Fn() -> bool,
) -> std::result::Result<(), ()> {
    use notify::Watcher as _;
    let (tx, events) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .map_err(drop)?;
    watcher
        .watch(dir, notify::RecursiveMode::NonRecursive)
        .map_err(drop)?;
    // Whatever happened before the watch started is seen by this first look.
    let deadline = Instant::now() + within;
    while !done() {
        let left = deadline.saturating_duration_since(Instant::now());
        if events.recv_timeout(left).is_err() {
            return if done() { Ok(()) } else { Err(()) };
        }
    }
    Ok(())
}

fn session(
    chat: &str,
    sender: &str,
    state: SessionState,
    minutes_ago: i64,
    count: u32,
) -> Conversation {
    let at = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    let chat = Chat {
        guid: chat.to_owned(),
        identifier: sender.to_owned(),
        is_group: false,
    };
    let mut session = Conversation::new(chat, sender.to_owned(), at);
    session.state = state;
    session.message_count = count;
    session
}

/// Three recent sessions, one in each state.
fn three_sessions() -> Vec<Conversation> {
    let waiting = session(
        ME_CHAT,
        ME,
        SessionState::Waiting {
            original: "atlas notes".to_owned(),
            question: Some("Is “Atlas” the client project or the book you mentioned?".to_owned()),
        },
        2,
        3,
    );
    let working = session(
        "iMessage;-;sarah@example.com",
        "sarah@example.com",
        SessionState::Working {
            original: Some("remind me to send the Q3 deck to Omar before Friday".to_owned()),
        },
        0,
        1,
    );
    let idle = session(
        "iMessage;-;+447700900123",
        "+447700900123",
        SessionState::Idle,
        48,
        5,
    );
    vec![waiting, working, idle]
}

/// One app at a time: they share the D-Bus session, where the single-instance lock lives.
static ONE_APP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(scenario: impl FnOnce(&Session<'_>) -> Result<()>, window: &str, env: &[(String, String)]) {
    let _one = ONE_APP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let driver = Driver::start(window, env).unwrap_or_else(|e| panic!("{e}"));
    let session = Session::new(&driver).unwrap_or_else(|e| panic!("new session: {e}"));
    if let Err(err) = scenario(&session) {
        let _ = session.screenshot(&format!("{window}-failure"));
        panic!("{err}");
    }
}

fn rows_are(n: usize) -> String {
    format!("document.querySelectorAll('[data-test=session-row]').length === {n}")
}

#[test]
fn sessions_page_lists_clears_and_shows_a_new_question_live() {
    let world = World::new(anthropic::clarify_flow(QUESTION));
    world.write_sessions(&three_sessions());
    run(
        |s| {
            three_rows_are_listed(s)?;
            the_idle_one_is_cleared(s, &world)?;
            clear_all_asks_then_clears(s, &world)?;
            a_new_question_appears_live(s, &world)
        },
        "sessions",
        &world.env(Senders::Environment),
    );
}

/// The waiting session's row of the sessions page.
const WAITING: &str = "[data-test=session-row][data-state=waiting]";

/// The three sessions of the world, with their state, text and count.
fn three_rows_are_listed(s: &Session<'_>) -> Result<()> {
    s.wait_until(&rows_are(3))?;
    assert_eq!(s.text("#session-count")?, "3 conversations active");
    assert_eq!(
        s.text(&format!("{WAITING} [data-test=state]"))?,
        "Waiting for your answer"
    );
    assert_eq!(
        s.content(&format!("{WAITING} [data-test=text]"))?,
        "Is “Atlas” the client project or the book you mentioned?"
    );
    assert_eq!(
        s.text(&format!("{WAITING} [data-test=message-count]"))?,
        "3 messages"
    );
    s.wait_until("document.getElementById('status-text').textContent === 'Running · 3 sessions'")?;
    s.screenshot("sessions")?;
    Ok(())
}

/// Clearing the idle one removes its row and its entry in sessions.json.
fn the_idle_one_is_cleared(s: &Session<'_>, world: &World) -> Result<()> {
    // Clear the idle one: the row goes, and so does its entry in sessions.json.
    let idle = "[data-test=session-row][data-chat='iMessage;-;+447700900123']";
    s.click(&format!("{idle} [data-test=clear-session]"))?;
    s.wait_until(&rows_are(2))?;
    assert_eq!(s.count(idle)?, 0, "the cleared row is gone");
    assert_eq!(s.text("#session-count")?, "2 conversations active");
    // The row may go on the change event, before the command has saved: wait for the file.
    world.wait_for_chats_on_disk(&[ME_CHAT, "iMessage;-;sarah@example.com"])?;
    Ok(())
}

/// Clear all asks first, in the page; Cancel keeps everything, Confirm clears all.
fn clear_all_asks_then_clears(s: &Session<'_>, world: &World) -> Result<()> {
    // Clear all asks first, in the page; Cancel keeps everything.
    s.click("#clear-all")?;
    s.wait_until("!document.getElementById('confirm-bar').hidden")?;
    assert_eq!(
        s.text("#confirm-text")?,
        "Clear 2 sessions? Pending questions are dropped."
    );
    s.screenshot("sessions-confirm-clear-all")?;
    s.click("#cancel-clear-all")?;
    s.wait_until("document.getElementById('confirm-bar').hidden")?;
    assert_eq!(s.count("[data-test=session-row]")?, 2);
    assert_eq!(world.chats_on_disk().len(), 2);

    s.click("#clear-all")?;
    s.click("#confirm-clear-all")?;
    s.wait_until("!document.getElementById('empty-state').hidden")?;
    assert_eq!(s.count("[data-test=session-row]")?, 0);
    assert_eq!(s.text("#empty-state h2")?, "No active conversations");
    world.wait_for_chats_on_disk(&[])?;
    s.wait_until("document.getElementById('status-text').textContent === 'Running · 0 sessions'")?;
    s.screenshot("sessions-empty")?;
    Ok(())
}

/// A new text whose run asks a question appears without a reload.
fn a_new_question_appears_live(s: &Session<'_>, world: &World) -> Result<()> {
    // A new text whose run asks a question appears without a reload.
    s.execute("window.e2eSamePage = true; return true;", json!([]))?;
    world.db.incoming(ME_CHAT, ME, "dinner with Ana");
    s.wait_until(&format!(
        "document.querySelectorAll('{WAITING}').length === 1"
    ))?;
    assert_eq!(s.content(&format!("{WAITING} [data-test=text]"))?, QUESTION);
    assert_eq!(s.content(&format!("{WAITING} [data-test=who]"))?, ME);
    assert_eq!(
        s.execute("return window.e2eSamePage === true;", json!([]))?,
        json!(true),
        "the page was not reloaded"
    );
    let calls = world
        .runtime
        .block_on(world.osascript.wait_for_calls(1, Duration::from_secs(20)));
    assert_eq!(
        (calls[0].target.as_str(), calls[0].text.as_str()),
        (ME_CHAT, QUESTION)
    );
    assert!(
        world.api.violations().is_empty(),
        "{:?}",
        world.api.violations()
    );
    s.wait_until("document.getElementById('status-text').textContent === 'Running · 1 session'")?;
    s.screenshot("sessions-new-question")?;
    Ok(())
}

/// Issue 11: the Sessions window lists an upcoming reminder (title, when, how soon), the
/// status pill ends with it, and Cancel removes it from the note on disk and from the page.
#[test]
fn sessions_page_lists_an_upcoming_reminder_and_cancel_removes_it_from_the_note() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    let note = world.vault().join("Tasks/Call the dentist.md");
    std::fs::create_dir_all(note.parent().expect("a folder")).expect("the Tasks folder");
    let due = chrono::Local::now() + chrono::Duration::hours(3);
    let due = chrono::Timelike::with_nanosecond(&due, 0).expect("whole seconds");
    let kept = "---\ntags:\n- status/active\n---\n# Call the dentist\n\nAsk about Friday.\n";
    let with_reminder = kept.replace(
        "---\n# Call",
        &format!(
            "reminder:\n  due: {}\n  sent: false\n---\n# Call",
            due.to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        ),
    );
    std::fs::write(&note, &with_reminder).expect("write the note");
    let next = if due.date_naive() == chrono::Local::now().date_naive() {
        format!("Next reminder {}", due.format("%H:%M"))
    } else {
        format!("Next reminder {}", due.format("%a %-d %b %H:%M"))
    };
    run(
        |s| {
            let row = "[data-test=reminder-row][data-path='Tasks/Call the dentist.md']";
            s.wait_until(&format!(
                "document.querySelectorAll(\"{row}\").length === 1"
            ))?;
            assert_eq!(
                s.content(&format!("{row} [data-test=reminder-title]"))?,
                "Call the dentist"
            );
            assert_eq!(
                s.text(&format!("{row} [data-test=reminder-until]"))?,
                "in 3 hr"
            );
            assert!(
                !s.text(&format!("{row} [data-test=reminder-when]"))?
                    .is_empty()
            );
            s.wait_until(&format!(
                "document.getElementById('status-text').textContent.endsWith(' · {next}')"
            ))?;
            s.screenshot("sessions-upcoming")?;
            s.click(&format!("{row} [data-test=cancel-reminder]"))?;
            s.wait_until("document.getElementById('upcoming').hidden")?;
            wait_for_file_event(&world.vault(), Duration::from_secs(20), || {
                std::fs::read_to_string(&note).is_ok_and(|t| t == kept)
            })
            .map_err(|()| {
                format!(
                    "the note still has its reminder: {:?}",
                    std::fs::read_to_string(&note)
                )
            })?;
            s.wait_until(
                "!document.getElementById('status-text').textContent.includes('Next reminder')",
            )?;
            Ok(())
        },
        "sessions",
        &world.env(Senders::Environment),
    );
}

#[test]
fn settings_page_refuses_an_invalid_vault_and_allows_a_stranger() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    let settings = json!({
        "vault_path": world.vault(),
        "model": "claude-opus-4-1",
        "allowed_senders": [ME],
        "session_timeout_minutes": 45
    });
    std::fs::write(world.data_dir().join("settings.json"), settings.to_string())
        .expect("write settings.json");
    let stranger = "+15559876543";
    run(
        |s| {
            the_form_shows_the_file(s, &world)?;
            an_invalid_vault_is_refused_and_reverted(s, &world)?;
            a_stranger_is_listed_and_allowed(s, &world, stranger)?;
            other_pages_commands_are_denied(s)
        },
        "settings",
        &world.env(Senders::SettingsFile),
    );
}

/// The value of the settings page's input `id`.
fn field(s: &Session<'_>, id: &str) -> Result<Value> {
    s.execute(
        "return document.getElementById(arguments[0]).value;",
        json!([id]),
    )
}

/// The form shows settings.json, and the key of the environment.
fn the_form_shows_the_file(s: &Session<'_>, world: &World) -> Result<()> {
    s.wait_until("document.getElementById('model').value !== ''")?;
    assert_eq!(field(s, "model")?, "claude-opus-4-1");
    assert_eq!(field(s, "timeout")?, "45");
    assert_eq!(field(s, "vault-path")?, json!(path_text(&world.vault())));
    assert_eq!(s.count("[data-test=sender]")?, 1);
    assert_eq!(
        s.text("#key-state-text")?,
        "Key set",
        "ANTHROPIC_API_KEY counts"
    );
    s.screenshot("settings")?;
    Ok(())
}

/// A vault that does not exist is refused, marked, not saved; Revert reloads.
fn an_invalid_vault_is_refused_and_reverted(s: &Session<'_>, world: &World) -> Result<()> {
    let before = world.settings_file();
    s.type_into("#vault-path", "/no/such/vault")?;
    s.click("#save")?;
    s.wait_until("document.getElementById('form-error').textContent !== ''")?;
    assert_eq!(
        s.text("#form-error")?,
        "Vault folder: /no/such/vault does not exist"
    );
    let invalid = s.execute(
        "return document.getElementById('vault-path').classList.contains('invalid');",
        json!([]),
    )?;
    assert_eq!(invalid, json!(true), "the vault field is marked");
    assert_eq!(world.settings_file(), before, "settings.json is unchanged");
    s.screenshot("settings-invalid-vault")?;

    // Nothing was half-saved: Revert reloads what the app holds.
    s.click("#revert")?;
    s.wait_until("document.getElementById('vault-path').value !== '/no/such/vault'")?;
    assert_eq!(field(s, "vault-path")?, json!(path_text(&world.vault())));
    Ok(())
}

/// A stranger texting while the window is open is listed live, then allowed.
fn a_stranger_is_listed_and_allowed(s: &Session<'_>, world: &World, stranger: &str) -> Result<()> {
    world.wait_until_running()?;
    world
        .db
        .incoming("iMessage;-;+15559876543", stranger, "hi, is this Sam?");
    let listed = format!("[data-test=stranger][data-handle='{stranger}']");
    s.wait_until(&format!("document.querySelector(\"{listed}\") !== null"))?;
    s.screenshot("settings-stranger")?;
    s.click(&format!("{listed} [data-test=allow-stranger]"))?;
    s.wait_until(&format!(
        "document.querySelector(\"[data-test=sender][data-handle='{stranger}']\") !== null"
    ))?;
    let saved: Value = serde_json::from_slice(&world.settings_file().unwrap_or_default())
        .map_err(|e| format!("settings.json: {e}"))?;
    assert_eq!(saved["allowed_senders"], json!([ME, stranger]));
    s.wait_until("document.getElementById('strangers').hidden")?;
    Ok(())
}

/// Capabilities: the settings window may not call the sessions window's commands.
fn other_pages_commands_are_denied(s: &Session<'_>) -> Result<()> {
    let denied = s.post(
        "/execute/async",
        json!({ "script": "const done = arguments[0];
            window.__TAURI__.core.invoke('clear_all_sessions')
                .then(() => done('allowed'), (err) => done(String(err)));", "args": [] }),
    )?;
    let denied = denied.as_str().unwrap_or_default();
    assert!(
        denied.contains("not allowed"),
        "clear_all_sessions from settings: {denied}"
    );
    Ok(())
}

/// The settings page lists the allowed group chats and removes one on Save; its group
/// commands are granted to it (the page shows no error: a command left out of the app's ACL
/// manifest is refused in a real window, tauri-2.11.6/src/webview/mod.rs:1823).
#[test]
fn settings_page_removes_an_allowed_group() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    let group = "iMessage;+;chat424242";
    let settings = json!({
        "vault_path": world.vault(),
        "allowed_senders": [ME],
        "allowed_groups": [group]
    });
    std::fs::write(world.data_dir().join("settings.json"), settings.to_string())
        .expect("write settings.json");
    run(
        |s| {
            let row = format!("[data-test=allowed-group][data-guid='{group}']");
            s.wait_until(&format!("document.querySelector(\"{row}\") !== null"))?;
            s.screenshot("settings-allowed-group")?;
            s.click(&format!("{row} [data-test=remove-group]"))?;
            s.wait_until("document.getElementById('allowed-groups').hidden")?;
            assert_eq!(
                world.settings_file(),
                Some(settings.to_string().into_bytes()),
                "nothing is saved before Save"
            );
            s.click("#save")?;
            s.wait_until("!document.getElementById('saved-note').hidden")?;
            let saved: Value = serde_json::from_slice(&world.settings_file().unwrap_or_default())
                .map_err(|e| format!("settings.json: {e}"))?;
            assert_eq!(saved["allowed_groups"], json!([]));
            assert_eq!(saved["allowed_senders"], json!([ME]));
            let error = s.execute(
                "const e = document.getElementById('page-error'); return e.hidden ? '' : e.textContent;",
                json!([]),
            )?;
            assert_eq!(error, json!(""), "the page shows no error");
            Ok(())
        },
        "settings",
        &world.env(Senders::SettingsFile),
    );
}

/// The key typed into Settings is kept by the system keychain (GNOME Keyring's Secret Service
/// on the test's D-Bus session, started by `scripts/app-e2e.sh`): it is in the store, and a
/// restarted app still says "Key set". The key is removed again at the end.
#[test]
fn the_api_key_is_kept_in_the_keychain_across_a_restart() {
    use bridge::secrets::{KeyStore as _, SystemKeychain};
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    let env: Vec<(String, String)> = world
        .env(Senders::Environment)
        .into_iter()
        .filter(|(name, _)| name != "ANTHROPIC_API_KEY")
        .collect();
    assert_eq!(
        SystemKeychain.api_key().map_err(|e| e.to_string()),
        Ok(None),
        "the test's keychain starts empty"
    );
    let loaded = "document.getElementById('model').value !== ''";
    run(
        |s| {
            s.wait_until(loaded)?;
            assert_eq!(s.text("#key-state-text")?, "No key set");
            s.type_into("#api-key", API_KEY)?;
            s.click("#set-key")?;
            s.wait_until("document.getElementById('key-state-text').textContent === 'Key set'")?;
            assert_eq!(s.text("#form-error")?, "");
            Ok(())
        },
        "settings",
        &env,
    );
    assert_eq!(
        SystemKeychain.api_key().map_err(|e| e.to_string()),
        Ok(Some(API_KEY.to_owned())),
        "the key is in the Secret Service"
    );
    run(
        |s| {
            s.wait_until(loaded)?;
            assert_eq!(
                s.text("#key-state-text")?,
                "Key set",
                "kept across the restart"
            );
            // The restarted bridge read it: without a key it would not report running.
            world.wait_until_running()?;
            s.click("#clear-key")?;
            s.wait_until("document.getElementById('key-state-text').textContent === 'No key set'")?;
            Ok(())
        },
        "settings",
        &env,
    );
    assert_eq!(
        SystemKeychain.api_key().map_err(|e| e.to_string()),
        Ok(None),
        "Clear removed it from the Secret Service"
    );
}

#[test]
fn setup_page_lists_the_checks_and_rechecks_on_focus() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    // Nobody allowed, and Messages refuses Apple Events (the Automation permission).
    world.osascript.fail_always(
        1,
        "0:40: execution error: Not authorized to send Apple events to Messages. (-1743)",
    );
    let mut env = world.env(Senders::SettingsFile);
    env.push(("VAULT_PATH".to_owned(), path_text(&world.vault())));
    run(
        |s| {
            s.wait_until("document.querySelectorAll('[data-test=check]').length === 5")?;
            let ok = |id: &str| {
                s.execute(
                    "return document.querySelector(`[data-test=check][data-id=${arguments[0]}]`).dataset.ok;",
                    json!([id]),
                )
            };
            for id in ["chat_db", "vault", "api_key"] {
                assert_eq!(ok(id)?, "true", "{id}");
            }
            assert_eq!(ok("allowed_senders")?, "false");
            assert_eq!(ok("automation")?, "false");
            let automation = "[data-test=check][data-id=automation]";
            assert_eq!(
                s.text(&format!("{automation} [data-test=open-pane]"))?,
                "Open Automation"
            );
            assert_eq!(
                s.count("[data-test=open-pane]")?,
                1,
                "only Automation has a pane"
            );
            assert_eq!(s.text("#summary")?, "3 of 5 ready");
            s.screenshot("setup")?;

            // Coming back from System Settings (a focus event) checks again.
            world.osascript.succeed();
            s.execute(
                "window.dispatchEvent(new Event('focus')); return true;",
                json!([]),
            )?;
            s.wait_until("document.getElementById('summary').textContent === '4 of 5 ready'")?;
            assert_eq!(ok("automation")?, "true");
            Ok(())
        },
        "setup",
        &env,
    );
}

#[test]
fn a_second_launch_opens_the_sessions_window_of_the_first() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    run(
        |s| {
            s.wait_until("document.querySelectorAll('[data-test=check]').length === 5")?;
            let before = s.get("/window/handles")?;
            assert_eq!(
                before.as_array().map(Vec::len),
                Some(1),
                "only the setup window: {before}"
            );

            // Same display and D-Bus session as the first instance, which holds the lock.
            let home = tempfile::tempdir().map_err(|e| e.to_string())?;
            let second = Command::new(env!("CARGO_BIN_EXE_second-brain"))
                .env("HOME", home.path())
                .env("SECOND_BRAIN_DATA_DIR", home.path().join("data"))
                .env_remove("SECOND_BRAIN_OPEN_WINDOW")
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("second launch: {e}"))?;
            assert!(
                second.success(),
                "the second instance hands over and exits: {second}"
            );
            assert!(
                !home.path().join("data/bridge.lock").exists(),
                "the second instance started no bridge"
            );

            // The first instance opens its sessions window: a second browsing context appears.
            let deadline = Instant::now() + Duration::from_secs(15);
            let handles = loop {
                let handles = s.get("/window/handles")?;
                if handles.as_array().is_some_and(|h| h.len() == 2) {
                    break handles;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "no sessions window after the second launch: {handles}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            let new = handles
                .as_array()
                .and_then(|h| {
                    h.iter()
                        .find(|h| !before.as_array().is_some_and(|b| b.contains(h)))
                })
                .ok_or("no new window handle")?
                .clone();
            s.post("/window", json!({ "handle": new }))?;
            s.wait_until("!document.getElementById('empty-state').hidden")?;
            assert_eq!(
                s.execute("return document.title;", json!([]))?,
                "Sessions — Second Brain"
            );
            Ok(())
        },
        "setup",
        &world.env(Senders::Environment),
    );
}

#[test]
fn pages_follow_the_dark_appearance() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    world.write_sessions(&three_sessions());
    let mut env = world.env(Senders::Environment);
    env.push(("GTK_THEME".to_owned(), "Adwaita:dark".to_owned()));
    run(
        |s| {
            s.wait_until(&rows_are(3))?;
            let dark = s.execute(
                "return [matchMedia('(prefers-color-scheme: dark)').matches,
                         getComputedStyle(document.body).backgroundColor];",
                json!([]),
            )?;
            assert_eq!(
                dark,
                json!([true, "rgb(30, 30, 30)"]),
                "dark window background"
            );
            s.wait_until(
                "document.getElementById('status-text').textContent.startsWith('Running')",
            )?;
            s.screenshot("sessions-dark")?;
            Ok(())
        },
        "sessions",
        &env,
    );
}

#[test]
fn sigterm_stops_intake_saves_and_exits_cleanly() {
    let _one = ONE_APP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    world.write_sessions(&three_sessions());
    let home = tempfile::tempdir().expect("a temporary home");
    let mut app = Command::new(env!("CARGO_BIN_EXE_second-brain"))
        .envs(world.env(Senders::Environment))
        .env("HOME", home.path())
        .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
        .env_remove("SECOND_BRAIN_OPEN_WINDOW")
        .stdin(Stdio::null())
        .spawn()
        .expect("start the app");
    let running = world.wait_until_running();
    terminate(app.id());
    let exited = exits_within(app.id(), Duration::from_secs(20));
    let status = app.wait().expect("reap the app");
    running.unwrap_or_else(|e| panic!("{e}"));
    assert!(exited, "the app did not exit within 20 s of SIGTERM");
    assert!(
        status.success(),
        "SIGTERM is a clean quit, not a kill: {status}"
    );

    // The bridge went through its stop (a killed app would have left "running" behind),
    // let go of the data folder and kept the sessions.
    let data = world.data_dir();
    let last: Value =
        serde_json::from_slice(&std::fs::read(data.join("status.json")).expect("status.json"))
            .expect("status.json is JSON");
    assert_eq!(last["state"], "stopping", "{last}");
    assert!(!bridge::lock::DataDirLock::is_held(&data));
    assert_eq!(world.chats_on_disk().len(), 3);
}

/// An update server on `127.0.0.1:0` whose `latest.json` offers `version` for this platform
/// (the plugin reads the platform's entry even when the version is not newer,
/// tauri-plugin-updater-2.12.0/src/updater.rs:597-599). Counts the requests it answers; its
/// thread ends with the test process.
struct ManifestServer {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl ManifestServer {
    fn start(version: &str) -> ManifestServer {
        use std::io::{BufRead, BufReader, Write};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("its port").port();
        let target = tauri_plugin_updater::target().expect("a platform the updater knows");
        let manifest = json!({
            "version": version, "notes": "Nothing new.",
            "platforms": { target: {
                "url": format!("http://127.0.0.1:{port}/app.tar.gz"),
                "signature": "not needed: nothing is downloaded when up to date" } }
        })
        .to_string();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) && line.len() < 65536 {}
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    manifest.len()
                );
                // Counted before the answer, so the page never sees an answer not yet counted.
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut stream = reader.into_inner();
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(manifest.as_bytes());
            }
        });
        ManifestServer { port, requests }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/latest.json", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The Software Update window (what "Check for Updates…" opens) asks the server when it opens
/// and says the running version is up to date, with no Install button; Check Again asks again.
#[test]
fn update_window_says_up_to_date() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    let version = env!("CARGO_PKG_VERSION");
    let server = ManifestServer::start(version);
    let mut env = world.env(Senders::Environment);
    env.push(("SECOND_BRAIN_UPDATE_URL".to_owned(), server.url()));
    let up_to_date = "document.getElementById('sentence').dataset.kind === 'up_to_date'";
    run(
        |s| {
            s.wait_until(up_to_date)?;
            let sentence = format!("Second Brain is up to date (version {version}).");
            assert_eq!(s.text("[data-test=update-sentence]")?, sentence);
            assert_eq!(s.count("[data-test=install]:not([hidden])")?, 0);
            assert_eq!(s.count("[data-test=update-notes-box]:not([hidden])")?, 0);
            assert_eq!(server.requests(), 1, "one request when the window opened");
            s.screenshot("update")?;
            s.click("[data-test=check]")?;
            s.wait_until(&format!(
                "{up_to_date} && !document.getElementById('check').disabled"
            ))?;
            assert_eq!(server.requests(), 2, "Check Again asked again");
            Ok(())
        },
        "update",
        &env,
    );
}

/// A newer version: its version, its notes and the Install button (not clicked: installing
/// would replace the app under test).
#[test]
fn update_window_shows_a_newer_version_with_its_notes() {
    let world = World::new(anthropic::scripted(Vec::<Reply>::new()));
    let server = ManifestServer::start("99.0.0");
    let mut env = world.env(Senders::Environment);
    env.push(("SECOND_BRAIN_UPDATE_URL".to_owned(), server.url()));
    run(
        |s| {
            s.wait_until("document.getElementById('sentence').dataset.kind === 'available'")?;
            assert_eq!(
                s.text("[data-test=update-sentence]")?,
                "Second Brain 99.0.0 is available."
            );
            assert_eq!(s.text("[data-test=update-notes]")?, "Nothing new.");
            assert_eq!(s.text("[data-test=install]")?, "Install and Restart");
            s.screenshot("update-available")?;
            Ok(())
        },
        "update",
        &env,
    );
}
