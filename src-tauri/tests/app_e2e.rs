//! Real-window end-to-end test: the built app in a real WebKitGTK window, driven through
//! `tauri-driver` (which fronts `WebKitWebDriver`) with a tiny W3C WebDriver client.
//!
//! Needs an X display and a D-Bus session: run it through `scripts/app-e2e.sh`, which wraps it
//! in `dbus-run-session -- xvfb-run -a`. It is `test = false` in `Cargo.toml`, so a plain
//! `cargo test` does not try to open windows on a machine without a display.
//!
//! Each scenario starts its own `tauri-driver` on free ports with `SECOND_BRAIN_OPEN_WINDOW`
//! naming the window to open and `HOME` pointing at a fresh temporary folder, and stops it with
//! SIGTERM (SIGKILL would leave `WebKitWebDriver` holding its port). Waiting is done inside
//! the page (`execute/async` resolving when a condition holds), not by sleeping in the test.
//! Screenshots of each page go to `<target dir>/e2e-screenshots/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

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
    fn start(window: &str, extra_env: &[(&str, &str)]) -> Result<Self> {
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
            .envs(extra_env.iter().copied())
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

/// One app at a time: they share the D-Bus session, where the single-instance lock lives.
static ONE_APP: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run(scenario: impl FnOnce(&Session<'_>) -> Result<()>, window: &str) {
    run_with(scenario, window, &[]);
}

fn run_with(
    scenario: impl FnOnce(&Session<'_>) -> Result<()>,
    window: &str,
    extra_env: &[(&str, &str)],
) {
    let _one = ONE_APP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let driver = Driver::start(window, extra_env).unwrap_or_else(|e| panic!("{e}"));
    let session = Session::new(&driver).unwrap_or_else(|e| panic!("new session: {e}"));
    if let Err(err) = scenario(&session) {
        let _ = session.screenshot(&format!("{window}-failure"));
        panic!("{err}");
    }
}

#[test]
fn sessions_page_clear_one_then_all() {
    run(
        |s| {
            s.wait_until("document.querySelectorAll('[data-test=session-row]').length === 3")?;
            assert_eq!(s.count("[data-test=session-row]")?, 3);
            assert_eq!(s.text("#session-count")?, "3 conversations active");
            let waiting =
                s.text("[data-test=session-row][data-state=waiting] [data-test=state]")?;
            assert_eq!(waiting, "Waiting for your answer");
            let status = s.text("#status-text")?;
            assert!(status.starts_with("Needs setup:"), "status line: {status}");
            s.screenshot("sessions")?;

            // Clear the idle one.
            let idle = "[data-test=session-row][data-chat='iMessage;-;+447700900123']";
            s.click(&format!("{idle} [data-test=clear-session]"))?;
            s.wait_until("document.querySelectorAll('[data-test=session-row]').length === 2")?;
            assert_eq!(s.count(idle)?, 0, "the cleared row is gone");
            assert_eq!(s.text("#session-count")?, "2 conversations active");

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

            s.click("#clear-all")?;
            s.click("#confirm-clear-all")?;
            s.wait_until("!document.getElementById('empty-state').hidden")?;
            assert_eq!(s.count("[data-test=session-row]")?, 0);
            assert_eq!(s.text("#empty-state h2")?, "No active conversations");
            s.screenshot("sessions-empty")?;

            // The list is really empty in the app, not only on the page: reload and look again.
            s.execute("location.reload(); return true;", json!([]))?;
            s.wait_until("document.readyState === 'complete' && !document.getElementById('empty-state').hidden")?;
            assert_eq!(s.count("[data-test=session-row]")?, 0);
            Ok(())
        },
        "sessions",
    );
}

#[test]
fn settings_page_refuses_an_invalid_vault() {
    run(
        |s| {
            s.wait_until("document.getElementById('model').value !== ''")?;
            assert_eq!(
                s.execute("return document.getElementById('model').value;", json!([]))?,
                "claude-sonnet-4-5"
            );
            assert_eq!(s.count("[data-test=sender]")?, 2);
            assert_eq!(s.text("#key-state-text")?, "No key stored");
            s.screenshot("settings")?;

            s.type_into("#vault-path", "/no/such/vault")?;
            s.click("#save")?;
            s.wait_until("document.getElementById('form-error').textContent !== ''")?;
            assert_eq!(
                s.text("#form-error")?,
                "Vault folder: “/no/such/vault” does not exist"
            );
            let invalid = s.execute(
                "return document.getElementById('vault-path').classList.contains('invalid');",
                json!([]),
            )?;
            assert_eq!(invalid, json!(true), "the vault field is marked");
            s.screenshot("settings-invalid-vault")?;

            // Nothing was half-saved: Revert reloads what the app holds.
            s.click("#revert")?;
            s.wait_until("document.getElementById('vault-path').value !== '/no/such/vault'")?;
            let vault = s.execute(
                "return document.getElementById('vault-path').value;",
                json!([]),
            )?;
            assert!(
                vault
                    .as_str()
                    .is_some_and(|v| v.ends_with("/Documents/Second Brain")),
                "{vault}"
            );

            // The API key is set, never shown back.
            s.type_into("#api-key", "sk-ant-e2e")?;
            s.click("#set-key")?;
            s.wait_until("document.getElementById('key-state').dataset.set === 'true'")?;
            assert_eq!(s.text("#set-key")?, "Replace");
            let field = s.execute(
                "return document.getElementById('api-key').value;",
                json!([]),
            )?;
            assert_eq!(field, json!(""));

            // Capabilities: the settings window may not call the sessions window's commands.
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
        },
        "settings",
    );
}

#[test]
fn setup_page_lists_the_checks() {
    run(
        |s| {
            s.wait_until("document.querySelectorAll('[data-test=check]').length === 5")?;
            let fda = "[data-test=check][data-id=full_disk_access]";
            assert_eq!(
                s.execute(
                    &format!("return document.querySelector('{fda}').dataset.ok;"),
                    json!([])
                )?,
                "false"
            );
            assert_eq!(
                s.text(&format!("{fda} [data-test=open-pane]"))?,
                "Open Full Disk Access"
            );
            assert_eq!(
                s.count("[data-test=open-pane]")?,
                2,
                "FDA and Automation offer a pane"
            );
            assert_eq!(s.text("#summary")?, "1 of 5 ready");
            s.screenshot("setup")?;
            Ok(())
        },
        "setup",
    );
}

#[test]
fn a_second_launch_opens_the_sessions_window_of_the_first() {
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
                .env_remove("SECOND_BRAIN_OPEN_WINDOW")
                .stdin(Stdio::null())
                .status()
                .map_err(|e| format!("second launch: {e}"))?;
            assert!(
                second.success(),
                "the second instance hands over and exits: {second}"
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
            s.wait_until("document.querySelectorAll('[data-test=session-row]').length === 3")?;
            assert_eq!(
                s.execute("return document.title;", json!([]))?,
                "Sessions — Second Brain"
            );
            Ok(())
        },
        "setup",
    );
}

#[test]
fn pages_follow_the_dark_appearance() {
    run_with(
        |s| {
            s.wait_until("document.querySelectorAll('[data-test=session-row]').length === 3")?;
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
            s.screenshot("sessions-dark")?;
            Ok(())
        },
        "sessions",
        &[("GTK_THEME", "Adwaita:dark")],
    );
}
