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
use super::osascript::FakeOsascript;

/// The API key the fake server expects.
pub const API_KEY: &str = "sk-ant-test-key";
/// The allowed sender in every test world.
pub const ME: &str = "+15551234567";
/// A direct chat with [`ME`].
pub const ME_CHAT: &str = "iMessage;-;+15551234567";
/// How long any single wait may take before the test fails.
pub const WITHIN: Duration = Duration::from_secs(20);

/// A temporary world for one test.
pub struct World {
    pub dir: tempfile::TempDir,
    pub db: FixtureDb,
    pub api: FakeAnthropic,
    pub osascript: FakeOsascript,
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
        World {
            dir,
            db,
            api,
            osascript,
        }
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

    /// Starts the bridge and waits for its ready line.
    pub async fn start(&self) -> Bridge {
        self.start_with(&[]).await
    }

    /// Starts the bridge with extra environment variables.
    pub async fn start_with(&self, extra: &[(&str, &str)]) -> Bridge {
        self.start_wrapped(&[], extra).await
    }

    /// Starts the bridge as the last argument of `wrapper` (a program and its arguments, for
    /// example `strace -f -o <file>`), or directly when `wrapper` is empty, with extra
    /// environment variables, and waits for its ready line.
    pub async fn start_wrapped(&self, wrapper: &[&OsStr], extra: &[(&str, &str)]) -> Bridge {
        let path = format!(
            "{}:{}",
            self.osascript.bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let program = OsStr::new(env!("CARGO_BIN_EXE_second-brain-bridge"));
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
        let mut bridge = Bridge {
            child,
            lines: rx,
            log,
        };
        bridge.wait_line("ready").await;
        bridge
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

    /// The process id of the child started (the wrapper's, when there is one).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(self) -> String {
        let pid = self.pid();
        self.stop_process(pid).await
    }

    /// Sends SIGTERM to `pid` (the bridge itself when it runs under a wrapper, which then
    /// exits with it) and waits for the child to exit cleanly.
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

    /// Kills the bridge with SIGKILL (a crash).
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
    }
}

/// Reads a whole file as a string (helper for assertions).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
