//! A fake `osascript` for the end-to-end tests, the benchmarks and the sender's unit tests.
//!
//! [`FakeOsascript::install`] writes a POSIX `sh` script named `osascript` into `<dir>/bin`.
//! Every run records its argv byte for byte (`printf '%s\0'`) and its start time in
//! nanoseconds as one file, written under `<dir>/tmp` and then renamed into `<dir>/calls`,
//! so a reader never sees half a call; names sort in start order. It succeeds silently, or
//! fails on demand: when `<dir>/fail` exists, its first line is the exit status and the rest
//! goes to stderr; the file is taken (atomically, by one run) unless `<dir>/fail.keep` exists.
//! While `<dir>/hang` exists ([`FakeOsascript::hang`]), runs record their call and then do
//! not finish until [`FakeOsascript::release`] removes it.
//! [`FakeOsascript::wait_for_calls`] is event-driven (a `notify` watch on `<dir>/calls`).
//!
//! Used from `tests/` as `util::osascript` and from the bridge's unit tests through
//! `#[path]`, so it names no crate of its own.
#![allow(dead_code)]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

/// The recording script. `@DIR@` is replaced by the fake's directory, shell-quoted.
const SCRIPT: &str = r#"#!/bin/sh
# Fake osascript installed by the Second Brain tests: records each call, then exits 0 or
# fails as told by the file "fail".
d=@DIR@
ns=$(date +%s%N)
case $ns in
  ''|*[!0-9]*) ns="$(date +%s)000000000" ;; # no %N (BSD date): whole seconds
esac
tmp="$d/tmp/call.$$"
{ printf '%s\n' "$ns" && printf '%s\0' "$@"; } > "$tmp" || exit 70
mv "$tmp" "$d/calls/$ns-$$.call" || exit 70
# While "hang" exists, the run does not finish (as when Messages never answers).
while [ -e "$d/hang" ]; do sleep 0.05; done
f=
if [ -e "$d/fail.keep" ]; then
  if [ -f "$d/fail" ]; then f="$d/fail"; fi
elif mv "$d/fail" "$d/tmp/fail.$$" 2>/dev/null; then
  f="$d/tmp/fail.$$"
fi
if [ -z "$f" ]; then exit 0; fi
code=$(head -n 1 "$f")
tail -n +2 "$f" >&2
case $f in "$d/tmp/"*) rm -f "$f" ;; esac
exit "$code"
"#;

/// One recorded run of the fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The arguments after `-e <script>`: for the sender, `[target, text]`.
    pub argv: Vec<String>,
    /// The AppleScript source passed with `-e` (empty when there was no `-e`).
    pub script: String,
    /// `argv[0]`: the chat guid or the participant handle.
    pub target: String,
    /// `argv[1]`: the text sent.
    pub text: String,
    /// When the run started, in nanoseconds since the Unix epoch.
    pub started_ns: u128,
}

/// An installed fake `osascript` and the directory where it records its calls.
#[derive(Debug)]
pub struct FakeOsascript {
    dir: PathBuf,
}

impl FakeOsascript {
    /// Writes the fake into `dir/bin/osascript` (mode 755) and prepares `dir/calls`.
    pub fn install(dir: &Path) -> FakeOsascript {
        let dir = dir.to_path_buf();
        for sub in ["bin", "calls", "tmp"] {
            fs::create_dir_all(dir.join(sub)).expect("create the fake osascript's directories");
        }
        let dir_text = dir
            .to_str()
            .expect("the fake osascript's directory is UTF-8");
        let script = SCRIPT.replace("@DIR@", &sh_quote(dir_text));
        let program = dir.join("bin/osascript");
        write_executable(&program, script.as_bytes());
        FakeOsascript { dir }
    }

    /// The directory holding `osascript`: put it first on the child's `PATH`.
    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// Where each run's call file lands (see the module doc).
    pub fn calls_dir(&self) -> PathBuf {
        self.dir.join("calls")
    }

    /// The fake program itself, for `Sender::with_program`.
    pub fn program(&self) -> PathBuf {
        self.dir.join("bin/osascript")
    }

    /// Environment for a child process: `PATH` with [`bin_dir`](Self::bin_dir) first, and
    /// `FAKE_OSASCRIPT_DIR` (where the calls are recorded).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut path = self.bin_dir().to_string_lossy().into_owned();
        if let Some(rest) = std::env::var_os("PATH") {
            path.push(':');
            path.push_str(&rest.to_string_lossy());
        }
        vec![
            ("PATH".to_string(), path),
            (
                "FAKE_OSASCRIPT_DIR".to_string(),
                self.dir.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// The next run (only that one) exits with `code` and prints `stderr`.
    pub fn fail_next(&self, code: i32, stderr: &str) {
        let _ = fs::remove_file(self.dir.join("fail.keep"));
        self.write_fail(code, stderr);
    }

    /// Every run from now on exits with `code` and prints `stderr`.
    pub fn fail_always(&self, code: i32, stderr: &str) {
        fs::write(self.dir.join("fail.keep"), b"").expect("write fail.keep");
        self.write_fail(code, stderr);
    }

    /// From now on, runs record their call and then hang until [`release`](Self::release).
    pub fn hang(&self) {
        fs::write(self.dir.join("hang"), b"").expect("write hang");
    }

    /// Hanging runs finish (and later ones do not hang).
    pub fn release(&self) {
        let _ = fs::remove_file(self.dir.join("hang"));
    }

    /// Runs succeed again.
    pub fn succeed(&self) {
        let _ = fs::remove_file(self.dir.join("fail"));
        let _ = fs::remove_file(self.dir.join("fail.keep"));
    }

    /// Every call recorded so far, in start order.
    pub fn calls(&self) -> Vec<Call> {
        let mut files: Vec<(u128, String, PathBuf)> = fs::read_dir(self.dir.join("calls"))
            .expect("read the calls directory")
            .filter_map(|entry| {
                let path = entry.expect("read a calls entry").path();
                let name = path.file_name()?.to_str()?.to_string();
                let stem = name.strip_suffix(".call")?;
                let ns = stem.split('-').next()?.parse().ok()?;
                Some((ns, name, path))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, _, path)| parse_call(&fs::read(&path).expect("read a call")))
            .collect()
    }

    /// Waits until at least `n` calls are recorded and returns them all; panics with what
    /// was recorded if that takes longer than `within`. Driven by file events, not polling.
    /// Needs real time: do not use it under `tokio::time::pause()`.
    pub async fn wait_for_calls(&self, n: usize, within: Duration) -> Vec<Call> {
        let deadline = tokio::time::Instant::now() + within;
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        // Reading the directory makes access events of its own: only changes count, or
        // every look would wake the next one.
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if !matches!(&event, Ok(e) if e.kind.is_access()) {
                    let _ = tx.send(event.is_ok());
                }
            })
            .expect("create a file watcher");
        watcher
            .watch(&self.dir.join("calls"), RecursiveMode::NonRecursive)
            .expect("watch the calls directory");
        // Calls that landed before the watch started are seen by this first look.
        loop {
            let calls = self.calls();
            if calls.len() >= n {
                return calls;
            }
            let woke = tokio::time::Instant::now() < deadline
                && match tokio::time::timeout_at(deadline, events.recv()).await {
                    Ok(Some(_)) => true,
                    Ok(None) => panic!("the file watcher stopped"),
                    Err(_) => false,
                };
            if !woke {
                let calls = self.calls();
                if calls.len() >= n {
                    return calls;
                }
                panic!(
                    "expected {n} osascript call(s) within {within:?}, saw {}: {calls:#?}",
                    calls.len()
                );
            }
        }
    }

    fn write_fail(&self, code: i32, stderr: &str) {
        let tmp = self.dir.join("tmp/fail.new");
        fs::write(&tmp, format!("{code}\n{stderr}\n")).expect("write the failure");
        fs::rename(&tmp, self.dir.join("fail")).expect("install the failure");
    }
}

/// Parses a call file: the start time on the first line, then NUL-terminated arguments.
pub fn parse_call(bytes: &[u8]) -> Call {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .expect("a call starts with its time");
    let started_ns = std::str::from_utf8(&bytes[..newline])
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("the call's start time is a number");
    let rest = &bytes[newline + 1..];
    let mut raw: Vec<String> = rest
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8(arg.to_vec()).expect("argv is UTF-8"))
        .collect();
    // Every argument ends with NUL, so the split leaves one empty piece after the last.
    raw.pop();
    let (script, argv) = match raw.first().map(String::as_str) {
        Some("-e") if raw.len() >= 2 => (raw[1].clone(), raw[2..].to_vec()),
        _ => (String::new(), raw),
    };
    let target = argv.first().cloned().unwrap_or_default();
    let text = argv.get(1).cloned().unwrap_or_default();
    Call {
        argv,
        script,
        target,
        text,
        started_ns,
    }
}

/// Quotes `s` for `sh` with single quotes.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes an executable without ever holding it open for writing in this process: a file
/// open for writing here could be inherited by a child that another test thread is forking
/// at that moment, and `exec` of the script would then fail with "Text file busy".
fn write_executable(path: &Path, contents: &[u8]) {
    let mut child = Command::new("/bin/sh")
        .args(["-c", "cat > \"$1\"", "sh"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run /bin/sh to write the fake osascript");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(contents)
        .expect("write the fake osascript");
    let status = child.wait().expect("wait for /bin/sh");
    assert!(
        status.success(),
        "writing {} failed: {status}",
        path.display()
    );
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod 755");
}
