//! A fake Messages.app for the end-to-end tests: every reply the fake `osascript` was asked
//! to send is written back into the fixture chat.db the way Messages records it.
//!
//! As Messages does: the reply becomes a sent row (`is_from_me = 1`, `account` the
//! account's own address as `E:…`/`p:…`, the text in `text`); in a chat with yourself (a
//! direct chat whose identifier is the account's own address) it is recorded a second time
//! as received from your own address (`is_from_me = 0`, a new guid, `destination_caller_id`
//! your address), with the words only in `attributedBody` and straight quotes turned
//! typographic, as issue 15 observed on a Mac signed in with one Apple ID. Rows are written
//! asynchronously, after the send, as on a real Mac. Driven by file events on the fake
//! `osascript`'s calls folder; each call is written back once, in start order.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use super::chatdb::{FixtureDb, Msg, typedstream};
use super::osascript::parse_call;

/// The running fake; stops when dropped.
pub struct FakeMessages {
    /// How many replies were written back so far.
    written: Arc<(Mutex<usize>, Condvar)>,
    stop: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
    _watcher: notify::RecommendedWatcher,
}

impl FakeMessages {
    /// Writes the replies recorded in `calls_dir` into `chat_db`, for the account whose own
    /// address is `own` (a phone number or an email address).
    pub fn start(calls_dir: &Path, chat_db: &Path, own: &str) -> FakeMessages {
        let (tx, events) = mpsc::channel::<()>();
        let wake = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if !matches!(&event, Ok(e) if e.kind.is_access()) {
                    let _ = wake.send(());
                }
            })
            .expect("create a file watcher");
        watcher
            .watch(calls_dir, RecursiveMode::NonRecursive)
            .expect("watch the calls folder");
        let (stop, stopped) = mpsc::channel::<()>();
        let calls_dir = calls_dir.to_path_buf();
        let db = FixtureDb::open(chat_db);
        let own = own.to_string();
        let written = Arc::new((Mutex::new(0), Condvar::new()));
        let counter = Arc::clone(&written);
        let thread = std::thread::spawn(move || {
            let mut done = BTreeSet::new();
            loop {
                let n = write_back(&calls_dir, &db, &own, &mut done);
                if n > 0 {
                    let (count, changed) = &*counter;
                    *count.lock().unwrap() += n;
                    changed.notify_all();
                }
                if stopped.try_recv().is_ok() {
                    return;
                }
                // Woken by the next call file, or checks for the stop signal now and then.
                let _ = events.recv_timeout(Duration::from_millis(200));
                if stopped.try_recv().is_ok() {
                    return;
                }
            }
        });
        drop(tx);
        FakeMessages {
            written,
            stop,
            thread: Some(thread),
            _watcher: watcher,
        }
    }
}

impl FakeMessages {
    /// Blocks until at least `n` replies are written back into chat.db (as Messages has them
    /// on disk before it, say, rewrites its file); panics after `within`.
    pub fn wait_written(&self, n: usize, within: Duration) {
        let (count, changed) = &*self.written;
        let guard = count.lock().unwrap();
        let (guard, _) = changed
            .wait_timeout_while(guard, within, |c| *c < n)
            .unwrap();
        assert!(*guard >= n, "{} of {n} replies written back", *guard);
    }
}

impl Drop for FakeMessages {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The account address as Messages writes it in `message.account`.
fn account(own: &str) -> String {
    if own.contains('@') {
        format!("E:{own}")
    } else {
        format!("p:{own}")
    }
}

/// Straight quotes turned typographic, as Messages' smart punctuation does.
fn curl(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut open_double = true;
    for c in text.chars() {
        match c {
            '"' => {
                out.push(if open_double { '\u{201C}' } else { '\u{201D}' });
                open_double = !open_double;
            }
            '\'' => out.push('\u{2019}'),
            other => out.push(other),
        }
    }
    out
}

/// Writes back every call not written yet, in start order; returns how many replies.
fn write_back(calls_dir: &Path, db: &FixtureDb, own: &str, done: &mut BTreeSet<String>) -> usize {
    let Ok(entries) = std::fs::read_dir(calls_dir) else {
        return 0;
    };
    let mut replies = 0;
    let mut names: Vec<(String, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.ends_with(".call").then(|| (name, e.path()))
        })
        .filter(|(name, _)| !done.contains(name))
        .collect();
    names.sort();
    for (name, path) in names {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        done.insert(name);
        let call = parse_call(&bytes);
        if !call.script.contains("send") || call.argv.len() < 2 {
            continue; // the permission probe, say
        }
        let chat = if call.script.contains("chat id") {
            call.target.clone()
        } else {
            format!("iMessage;-;{}", call.target)
        };
        let identifier = db
            .chat_identifier(&chat)
            .unwrap_or_else(|| call.target.clone());
        let sent = Msg {
            sender: Some(identifier.clone()),
            ..Msg::new(&chat, &identifier)
                .text(&call.text)
                .from_me(&account(own))
        };
        db.insert(&sent);
        if identifier.eq_ignore_ascii_case(own) {
            let mut received = Msg::new(&chat, own).body(typedstream(&curl(&call.text)));
            received.destination = Some(own.to_string());
            db.insert(&received);
        }
        replies += 1;
    }
    replies
}
