//! Runs the real `second-brain-bridge` binary in a temporary world: a fixture chat.db, a
//! vault, a data dir, the fake Anthropic server and the fake `osascript` first on `PATH`.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use super::anthropic::{FakeAnthropic, Reply};
use super::chatdb::FixtureDb;
use super::messages::FakeMessages;
use super::osascript::FakeOsascript;

/// The bridge binary of this build. Cargo puts test and bench executables in
/// `<target>/<profile>/deps/` and binaries one level up, in `<target>/<profile>/` (the Cargo
/// Book, "Build cache"); `SECOND_BRAIN_BRIDGE_BIN` overrides it.
pub fn program() -> PathBuf {
    if let Some(path) = std::env::var_os("SECOND_BRAIN_BRIDGE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test executable in <target>/<profile>/deps");
    profile_dir.join(format!(
        "second-brain-bridge{}",
        std::env::consts::EXE_SUFFIX
    ))
}

/// The API key the fake server expects.
pub const API_KEY: &str = "sk-ant-test-key";
/// The allowed sender in every test world.
pub const ME: &str = "+15551234567";
/// A direct chat with [`ME`].
pub const ME_CHAT: &str = "iMessage;-;+15551234567";
/// The line intake logs once it has read its starting point: a text written after it is
/// read. (Other lines say "ready" too, earlier: the search index, say.)
pub const READY: &str = "ready: watching for new texts";
/// How long any single wait may take before the test fails.
pub const WITHIN: Duration = Duration::from_secs(20);

/// The account's own address in a world where the bridge has an Apple ID of its own.
pub const ACCOUNT: &str = "fixture@example.com";

/// A temporary world for one test.
pub struct World {
    pub dir: tempfile::TempDir,
    pub db: FixtureDb,
    pub api: FakeAnthropic,
    pub osascript: FakeOsascript,
    /// Writes every reply back into chat.db as Messages does.
    pub messages: FakeMessages,
}

impl World {
    /// A world whose fake LLM answers with `responder`.
    pub async fn new(
        responder: impl Fn(&serde_json::Value) -> Reply + Send + Sync + 'static,
    ) -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("vault")).unwrap();
        std::fs::create_dir_all(dir.path().join("Messages")).unwrap();
        let db = FixtureDb::create(&dir.path().join("Messages/chat.db"));
        db.chat(ME_CHAT, ME, false);
        let api = FakeAnthropic::start(API_KEY, responder);
        let osascript = FakeOsascript::install(&dir.path().join("osascript"));
        let messages = FakeMessages::start(&osascript.calls_dir(), db.path(), ACCOUNT);
        World {
            dir,
            db,
            api,
            osascript,
            messages,
        }
    }

    /// A world where the Mac is signed in with the person's own Apple ID: [`ME`] texts
    /// [`ME_CHAT`], a chat with themselves, and Messages records every reply there twice.
    pub async fn self_chat(
        responder: impl Fn(&serde_json::Value) -> Reply + Send + Sync + 'static,
    ) -> World {
        let mut world = World::new(responder).await;
        world.messages = FakeMessages::start(&world.osascript.calls_dir(), world.db.path(), ME);
        world
    }

    pub fn vault(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The vault's notes below `folder`, as (relative path, contents), sorted by name.
    pub fn notes(&self, folder: &str) -> Vec<(String, String)> {
        let dir = self.vault().join(folder);
        let mut notes: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().extension().is_some_and(|x| x == "md"))
                    .map(|e| {
                        let name = format!("{folder}/{}", e.file_name().to_string_lossy());
                        (name, std::fs::read_to_string(e.path()).unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default();
        notes.sort();
        notes
    }

    /// The persisted sessions file, parsed.
    pub fn sessions_file(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.data_dir().join("sessions.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Runs a one-shot command of the binary (`status`, `doctor`, …) in this world and
    /// returns its standard output.
    pub async fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(program())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("SECOND_BRAIN_DATA_DIR", self.data_dir())
            .env("VAULT_PATH", self.vault())
            .env("CHAT_DB_PATH", self.db.path())
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run the binary");
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Starts the bridge and waits for its ready line.
    pub async fn start(&self) -> Bridge {
        self.start_with(&[]).await
    }

    /// The status file a running bridge keeps, parsed.
    pub fn status(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.data_dir().join("status.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Waits (on file events, not by polling) until the status file satisfies `ready`;
    /// returns it. Panics with the last status seen after [`WITHIN`].
    pub async fn wait_status(
        &self,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.try_wait_status(ready).await.unwrap_or_else(|last| {
            panic!(
                "status never showed {what}; last status: {last:#}\nlogs:\n{}",
                self.log_files()
            )
        })
    }

    /// The bridge's log files in the data dir, for a failure message.
    fn log_files(&self) -> String {
        let Ok(entries) = std::fs::read_dir(self.data_dir().join("logs")) else {
            return "(no log folder)".into();
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        paths
            .iter()
            .map(|p| {
                format!(
                    "== {}\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }

    /// [`World::wait_status`] for a running `bridge`: a failure also shows what it logged.
    pub async fn wait_status_of(
        &self,
        bridge: &Bridge,
        what: &str,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        self.try_wait_status(ready).await.unwrap_or_else(|last| {
            panic!(
                "status never showed {what}; last status: {last:#}\nlog:\n{}",
                bridge.log()
            )
        })
    }

    /// Waits until the status file satisfies `ready`; `Err` holds the last status seen.
    async fn try_wait_status(
        &self,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, serde_json::Value> {
        let file = self.data_dir().join("status.json");
        let mut last = serde_json::Value::Null;
        let found = super::wait::until(&[self.data_dir()], WITHIN, || {
            let status: serde_json::Value = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())?;
            last = status.clone();
            ready(&status).then_some(status)
        })
        .await;
        found.ok_or(last)
    }

    /// Starts the bridge with extra environment variables.
    pub async fn start_with(&self, extra: &[(&str, &str)]) -> Bridge {
        let mut bridge = self.spawn_with(extra, None);
        bridge.wait_line(READY).await;
        bridge
    }

    /// Starts the bridge without waiting for it to be ready; as user `uid` when given.
    pub fn spawn_with(&self, extra: &[(&str, &str)], uid: Option<u32>) -> Bridge {
        self.spawn(&[], extra, uid)
    }

    /// Starts the bridge as the last argument of `wrapper` (a program and its arguments, for
    /// example `strace -f -o <file>`) and waits for its ready line.
    pub async fn start_wrapped(&self, wrapper: &[&OsStr], extra: &[(&str, &str)]) -> Bridge {
        let mut bridge = self.spawn(wrapper, extra, None);
        bridge.wait_line(READY).await;
        bridge
    }

    /// Starts the bridge (inside `wrapper` when not empty; as user `uid` when given).
    fn spawn(&self, wrapper: &[&OsStr], extra: &[(&str, &str)], uid: Option<u32>) -> Bridge {
        let path = format!(
            "{}:{}",
            self.osascript.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let program = program();
        let program = program.as_os_str();
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.arg("run")
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.dir.path())
            .env("SECOND_BRAIN_DATA_DIR", self.data_dir())
            .env("VAULT_PATH", self.vault())
            .env("CHAT_DB_PATH", self.db.path())
            .env("ANTHROPIC_BASE_URL", self.api.base_url())
            .env("ANTHROPIC_API_KEY", API_KEY)
            .env("ALLOWED_SENDERS", ME)
            .env("LOG_LEVEL", "info,second_brain_bridge=debug,bridge=debug")
            .envs(self.osascript.env())
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(uid) = uid {
            cmd.uid(uid);
        }
        let mut child = cmd.spawn().expect("start the bridge");
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let log_copy = Arc::clone(&log);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log_copy.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Bridge {
            child,
            lines: rx,
            log,
        }
    }
}

/// A running bridge process.
pub struct Bridge {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Bridge {
    /// Waits for a log line containing `needle`; panics with the log after [`WITHIN`].
    pub async fn wait_line(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(WITHIN, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no log line with {needle:?}; log:\n{}", self.log()),
        }
    }

    /// Everything the bridge logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(self) -> String {
        let pid = self.pid();
        self.stop_process(pid).await
    }

    /// The bridge's process id (or its wrapper's).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM to `pid` (the bridge inside a wrapper) and waits for a clean exit.
    pub async fn stop_process(mut self, pid: u32) -> String {
        let pid = pid.to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(WITHIN, self.child.wait())
            .await
            .expect("bridge exits")
            .unwrap();
        // Let the reader drain the last lines.
        let log = self.log();
        assert!(exit.success(), "bridge exited with {exit}; log:\n{log}");
        log
    }

    /// Kills the bridge with SIGKILL (a crash); returns what it logged.
    pub async fn kill(mut self) -> String {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
        self.drained_log().await
    }

    /// The whole log, once the bridge's stderr has closed (the reader saw every line).
    async fn drained_log(&mut self) -> String {
        let drained =
            tokio::time::timeout(WITHIN, async { while self.lines.recv().await.is_some() {} })
                .await;
        if drained.is_err() {
            // A child of the bridge (a hung fake osascript) may hold stderr open.
            return self.log();
        }
        self.log()
    }
}

/// Reads a whole file as a string (helper for assertions).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
