//! Says when to look at `chat.db` again: at once when the database's files change, and at a
//! slow poll interval as a safety net.
//!
//! The directory holding `chat.db` is watched (non-recursively), not the file: Messages
//! checkpoints its WAL, and may swap in a replacement file by renaming, so `chat.db`,
//! `chat.db-wal` and `chat.db-shm` come and go. Invariants: notify's callback never blocks
//! (it `try_send`s into a channel of one, so a burst of events becomes one wake-up); only
//! changes to those three files wake the caller (not opens or reads, not other files); when
//! the directory cannot be watched the watcher works by poll alone, logs that once, and tries
//! again at every poll tick.
//!
//! A file event can come a moment *before* the commit it belongs to is visible: SQLite
//! writes the WAL frames (an event), then publishes the commit in the memory-mapped `-shm`
//! index (no event). So every file event is followed by a few short echo wake-ups
//! ([`ECHOES`] after it) that read again once the commit is visible, instead of leaving that
//! text to the poll.
//!
//! A poll tick wakes the owner only when the database's files differ from when it last woke
//! ([`Stamp`]: identity, size and mtime of `chat.db` and `-wal`, and the WAL-index header at
//! the start of `-shm`, which SQLite rewrites at every commit), or at every
//! [`LOOK_ANYWAY_EVERY`]th tick: an idle Mac's poll costs two `stat`s and a 48-byte read,
//! not a query.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{Event, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::{debug, info, warn};

/// Wake-ups after a file event, measured from it, for commits that become visible late.
pub const ECHOES: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(20),
    Duration::from_millis(80),
];

/// The shortest poll interval (a zero interval is not a timer).
const MIN_POLL: Duration = Duration::from_millis(1);

/// A poll tick wakes the owner at least this often (in ticks) even when the files look the
/// same, for what changes with time alone (a row whose chat join is late).
pub const LOOK_ANYWAY_EVERY: u32 = 20;

/// The size of SQLite's WAL-index header at the start of `-shm` (one copy of
/// `WalIndexHdr`: its change counter, last valid frame, salts and checksum; "The WAL-Index
/// Header", sqlite.org/walformat.html §2.1). A commit rewrites it.
const WAL_INDEX_HEADER: usize = 48;

/// What the database's files look like: when it is equal to an earlier one, nothing was
/// committed in between (every commit writes `-wal`, or the database itself when it is not
/// in WAL mode, and publishes itself in the `-shm` header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    db: Option<FileStamp>,
    wal: Option<FileStamp>,
    shm_header: Vec<u8>,
}

/// Identity, size and modification time of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileStamp {
    id: (u64, u64),
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt as _;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let id = (0, 0);
        Some(FileStamp {
            id,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// Reads the start of `file` into `buf` without moving a shared offset: as many bytes as
/// the file has, up to `buf`'s length.
fn read_at_start(file: &std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt as _;
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], filled as u64)? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read as _, Seek as _};
        let mut file = file;
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

/// Wakes its owner when `chat.db` may have new rows.
#[derive(Debug)]
pub struct Watcher {
    dir: PathBuf,
    files: Arc<DbFiles>,
    poll: Duration,
    /// Created at the first [`Watcher::changed`], so that a `Watcher` can be built outside a
    /// runtime; its first tick is one interval after that.
    interval: Option<Interval>,
    /// Kept so that the channel never closes and a new watch can be given a sender.
    tx: mpsc::Sender<()>,
    rx: mpsc::Receiver<()>,
    /// `None` while the directory cannot be watched.
    fs_watcher: Option<RecommendedWatcher>,
    /// Whether a failure to watch has been logged since the last success.
    warned: bool,
    /// The last file event and how many of its [`ECHOES`] were given.
    echo: Option<(Instant, usize)>,
    /// The files when the owner was last woken, and the poll ticks swallowed since.
    seen: Option<Stamp>,
    quiet_ticks: u32,
}

/// The `-shm` files whose headers this process reads, each kept open (with its identity)
/// for the life of the process, and opened again only when a new file replaces it. Closing
/// a file descriptor drops every POSIX advisory lock the process holds on that file, and
/// SQLite's connections to `chat.db` in this process hold theirs on `-shm` (its WAL-index
/// locks), so a look that opened and closed `-shm` could release them under a read ("How To
/// Corrupt An SQLite Database File", sqlite.org/howtocorrupt.html, §2.2). Held here rather
/// than by each [`Watcher`], because watchers come and go (a text's wait for its files has
/// one) while intake's connection stays. A held descriptor is also no open event for every
/// watcher of the folder at each look.
static HELD_SHM: std::sync::Mutex<Vec<(PathBuf, FileStamp, std::fs::File)>> =
    std::sync::Mutex::new(Vec::new());

/// The file names that concern the database.
#[derive(Debug)]
struct DbFiles {
    db: OsString,
    wal: OsString,
    shm: OsString,
}

impl DbFiles {
    fn new(db_path: &Path) -> DbFiles {
        let db = db_path
            .file_name()
            .unwrap_or(OsStr::new("chat.db"))
            .to_os_string();
        let with = |suffix: &str| {
            let mut name = db.clone();
            name.push(suffix);
            name
        };
        DbFiles {
            wal: with("-wal"),
            shm: with("-shm"),
            db,
        }
    }

    /// The files as they are now, in `dir`. Three `stat`s and one small read: cheap enough
    /// for the runtime's thread (local files, no lock taken; SQLite's own locks are in
    /// byte ranges past the header).
    fn stamp(&self, dir: &Path) -> Stamp {
        Stamp {
            db: FileStamp::of(&dir.join(&self.db)),
            wal: FileStamp::of(&dir.join(&self.wal)),
            shm_header: self.shm_header(&dir.join(&self.shm)),
        }
    }

    /// The WAL-index header at the start of `shm`, read through the descriptor the process
    /// holds for it ([`HELD_SHM`]); empty when there is none.
    fn shm_header(&self, shm: &Path) -> Vec<u8> {
        let mut held = crate::mutex::lock(&HELD_SHM);
        let now = FileStamp::of(shm);
        let at = held.iter().position(|(path, _, _)| path == shm);
        match (now, at) {
            (None, Some(at)) => drop(held.swap_remove(at)),
            (Some(now), at) if at.is_none_or(|at| held[at].1.id != now.id) => {
                if let Some(at) = at {
                    held.swap_remove(at);
                }
                if let Ok(file) = std::fs::File::open(shm) {
                    held.push((shm.to_path_buf(), now, file));
                }
            }
            _ => {}
        }
        let mut header = vec![0; WAL_INDEX_HEADER];
        let read = held
            .iter()
            .find(|(path, _, _)| path == shm)
            .map_or(Ok(0), |(_, _, file)| read_at_start(file, &mut header));
        header.truncate(read.unwrap_or(0));
        header
    }

    /// Whether `event` may mean new rows.
    ///
    /// Opens and reads never do. The `-shm` file is only the WAL's index: readers (this app
    /// included) write to it, so only its creation, removal or renaming counts; every commit
    /// also writes `-wal` or the database itself.
    fn concern(&self, event: &Event) -> bool {
        if event.need_rescan() {
            return true;
        }
        if matches!(event.kind, EventKind::Access(_)) {
            return false;
        }
        if event.paths.is_empty() {
            return true;
        }
        event.paths.iter().any(|path| match path.file_name() {
            Some(name) if name == self.db || name == self.wal => true,
            Some(name) if name == self.shm => matches!(
                event.kind,
                EventKind::Create(_)
                    | EventKind::Remove(_)
                    | EventKind::Modify(ModifyKind::Name(_))
            ),
            _ => false,
        })
    }
}

impl Watcher {
    /// Watches the directory holding `db_path`, polling every `poll` as well. If the
    /// directory cannot be watched, works by poll alone and retries at each poll tick.
    pub fn new(db_path: &Path, poll: Duration) -> Watcher {
        let dir = match db_path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let (tx, rx) = mpsc::channel(1);
        let mut watcher = Watcher {
            dir,
            files: Arc::new(DbFiles::new(db_path)),
            poll: poll.max(MIN_POLL),
            interval: None,
            tx,
            rx,
            fs_watcher: None,
            warned: false,
            echo: None,
            seen: None,
            quiet_ticks: 0,
        };
        watcher.try_watch();
        watcher
    }

    /// Whether file events are being received (rather than polling alone).
    pub fn is_watching(&self) -> bool {
        self.fs_watcher.is_some()
    }

    /// Returns when one of the database's files changed since the last call: at once on a
    /// file event (and its echoes), else at the first poll tick that finds the files
    /// changed, or at every [`LOOK_ANYWAY_EVERY`]th tick. Cancel-safe: it can be a branch of
    /// `select!`.
    pub async fn changed(&mut self) {
        loop {
            let ticked = self.next_wake().await;
            let now = self.files.stamp(&self.dir);
            if ticked
                && self.seen.as_ref() == Some(&now)
                && self.quiet_ticks + 1 < LOOK_ANYWAY_EVERY
            {
                self.quiet_ticks += 1;
                continue;
            }
            self.seen = Some(now);
            self.quiet_ticks = 0;
            return;
        }
    }

    /// Waits for a file event, an echo of one, or a poll tick (`true`).
    async fn next_wake(&mut self) -> bool {
        let poll = self.poll;
        let interval = self.interval.get_or_insert_with(|| {
            let mut interval = tokio::time::interval_at(Instant::now() + poll, poll);
            interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
            interval
        });
        let next_echo = self
            .echo
            .and_then(|(event, given)| ECHOES.get(given).map(|after| (event + *after, given)));
        let echo = async {
            match next_echo {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let ticked = tokio::select! {
            _ = self.rx.recv() => {
                self.echo = Some((Instant::now(), 0));
                false
            }
            _ = echo => {
                if let Some((event, given)) = next_echo.and(self.echo) {
                    self.echo = Some((event, given + 1));
                }
                false
            }
            _ = interval.tick() => true,
        };
        if ticked && self.fs_watcher.is_none() {
            self.try_watch();
        }
        ticked
    }

    fn try_watch(&mut self) {
        match start_watch(&self.dir, Arc::clone(&self.files), self.tx.clone()) {
            Ok(fs_watcher) => {
                if self.warned {
                    info!(dir = ?self.dir, "watching the Messages folder again");
                }
                self.fs_watcher = Some(fs_watcher);
                self.warned = false;
            }
            Err(err) if !self.warned => {
                warn!(
                    dir = ?self.dir,
                    cause = %err,
                    poll_secs = self.poll.as_secs_f64(),
                    "cannot watch the Messages folder; checking for new texts by polling only"
                );
                self.warned = true;
            }
            Err(err) => debug!(dir = ?self.dir, cause = %err, "still cannot watch"),
        }
    }
}

/// Starts a non-recursive watch on `dir` whose callback wakes the channel for events that
/// concern the database. The callback runs on notify's thread and never blocks.
fn start_watch(
    dir: &Path,
    files: Arc<DbFiles>,
    tx: mpsc::Sender<()>,
) -> notify::Result<RecommendedWatcher> {
    let mut fs_watcher = notify::recommended_watcher(move |res: notify::Result<Event>| {
        let wake = match res {
            Ok(event) => files.concern(&event),
            Err(err) => {
                // Events may have been lost: look, to be safe.
                debug!(cause = %err, "file watch error");
                true
            }
        };
        if wake {
            // Full: a wake-up is already pending, which covers this event too.
            let _ = tx.try_send(());
        }
    })?;
    fs_watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(fs_watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use tokio::time::timeout;

    /// Long enough that a wake-up within the bound can only come from a file event.
    const LONG_POLL: Duration = Duration::from_secs(60);
    /// The bound on waiting for an event-driven wake-up.
    const WAKE_BOUND: Duration = Duration::from_secs(5);
    /// How long to wait for a wake-up that must not come.
    const QUIET: Duration = Duration::from_millis(700);

    fn append(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(bytes).unwrap();
        file.sync_all().unwrap();
    }

    /// A directory with `chat.db` (and its WAL files) already there, before any watching.
    fn messages_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        fs::write(&db, b"db").unwrap();
        fs::write(dir.path().join("chat.db-wal"), b"wal").unwrap();
        fs::write(dir.path().join("chat.db-shm"), b"shm").unwrap();
        fs::write(dir.path().join("chat.db.swap"), b"replacement").unwrap();
        (dir, db)
    }

    /// Paused time lands on timer deadlines, rounded to the timer's millisecond resolution.
    fn assert_near(elapsed: Duration, want: Duration) {
        assert!(
            elapsed >= want && elapsed < want + Duration::from_millis(10),
            "woke after {elapsed:?}, expected {want:?}"
        );
    }

    async fn assert_wakes(watcher: &mut Watcher, what: &str) {
        let woke = timeout(WAKE_BOUND, watcher.changed()).await;
        assert!(
            woke.is_ok(),
            "{what} did not wake the watcher within {WAKE_BOUND:?}"
        );
    }

    #[tokio::test]
    async fn changes_to_the_database_files_wake_without_waiting_for_the_poll() {
        type Change = fn(&Path);
        let cases: &[(&str, Change)] = &[
            ("write to chat.db", |d| append(&d.join("chat.db"), b"row")),
            ("write to chat.db-wal", |d| {
                append(&d.join("chat.db-wal"), b"frame")
            }),
            ("rename over chat.db", |d| {
                fs::rename(d.join("chat.db.swap"), d.join("chat.db")).unwrap()
            }),
            ("remove chat.db-wal (checkpoint)", |d| {
                fs::remove_file(d.join("chat.db-wal")).unwrap()
            }),
            ("remove chat.db-shm", |d| {
                fs::remove_file(d.join("chat.db-shm")).unwrap()
            }),
            ("create chat.db-shm", |d| {
                fs::remove_file(d.join("chat.db-shm")).unwrap();
                fs::write(d.join("chat.db-shm"), b"new").unwrap()
            }),
            ("rename chat.db away", |d| {
                fs::rename(d.join("chat.db"), d.join("old.db")).unwrap()
            }),
        ];
        for (what, change) in cases {
            let (dir, db) = messages_dir();
            let mut watcher = Watcher::new(&db, LONG_POLL);
            assert!(watcher.is_watching());
            change(dir.path());
            assert_wakes(&mut watcher, what).await;
        }
    }

    #[tokio::test]
    async fn a_burst_of_writes_is_one_pending_wake_up() {
        let (dir, db) = messages_dir();
        let mut watcher = Watcher::new(&db, LONG_POLL);
        // Few enough that notify reads them in one go.
        for i in 0..20 {
            append(
                &dir.path().join("chat.db-wal"),
                format!("frame {i}").as_bytes(),
            );
        }
        assert_wakes(&mut watcher, "a burst").await;
        // Then at most one more queued wake-up and the echoes, then quiet.
        let mut more = 0;
        while timeout(QUIET, watcher.changed()).await.is_ok() {
            more += 1;
            assert!(
                more <= 3 * (ECHOES.len() + 1),
                "keeps waking with no change"
            );
        }
    }

    /// A commit can become visible after its file event (SQLite publishes it in the mapped
    /// `-shm`, which raises no event), so each event is followed by the echoes.
    #[tokio::test]
    async fn a_file_event_is_followed_by_its_echoes_then_quiet() {
        let (dir, db) = messages_dir();
        let mut watcher = Watcher::new(&db, LONG_POLL);
        append(&dir.path().join("chat.db-wal"), b"frame");
        assert_wakes(&mut watcher, "a WAL write").await;
        let start = Instant::now();
        for _ in ECHOES {
            assert_wakes(&mut watcher, "an echo").await;
        }
        assert!(start.elapsed() >= ECHOES[ECHOES.len() - 1] - ECHOES[0]);
        assert!(
            timeout(QUIET, watcher.changed()).await.is_err(),
            "woke after the echoes with no change"
        );
    }

    #[tokio::test]
    async fn unrelated_files_and_reads_do_not_wake() {
        let (dir, db) = messages_dir();
        let d = dir.path();
        fs::create_dir(d.join("Attachments")).unwrap();
        let mut watcher = Watcher::new(&db, LONG_POLL);
        for name in [
            "notes.txt",
            "chat.db-journal",
            "chat.dbx",
            "xchat.db",
            "chat.db.swap",
        ] {
            append(&d.join(name), b"unrelated");
        }
        fs::rename(d.join("notes.txt"), d.join("notes2.txt")).unwrap();
        fs::remove_file(d.join("chat.dbx")).unwrap();
        fs::create_dir(d.join("sub")).unwrap();
        append(&d.join("Attachments").join("chat.db"), b"not recursive");
        // Reading the database (as the bridge does) is not a change.
        fs::read(&db).unwrap();
        fs::read(d.join("chat.db-wal")).unwrap();
        // The -shm index alone is rewritten by every reader.
        append(&d.join("chat.db-shm"), b"read mark");

        assert!(
            timeout(QUIET, watcher.changed()).await.is_err(),
            "woken by an unrelated change"
        );
        // The watch is alive: a real change still wakes it.
        append(&d.join("chat.db-wal"), b"frame");
        assert_wakes(&mut watcher, "write to chat.db-wal").await;
    }

    /// Issue 8: the first poll tick wakes (nothing was seen yet); after that, ticks that find
    /// the files as they were are swallowed, except every [`LOOK_ANYWAY_EVERY`]th.
    #[tokio::test(start_paused = true)]
    async fn the_poll_wakes_when_nothing_changes_only_every_twentieth_tick() {
        let (_dir, db) = messages_dir();
        let poll = Duration::from_secs(30);
        let mut watcher = Watcher::new(&db, poll);
        let start = Instant::now();
        watcher.changed().await;
        assert_near(start.elapsed(), poll);
        watcher.changed().await;
        assert_near(start.elapsed(), poll * (1 + LOOK_ANYWAY_EVERY));
    }

    /// Issue 8: the stamp a poll compares changes with every commit of a real SQLite
    /// database in WAL mode (including one that only rewrites the `-shm` header, a
    /// checkpoint) and with the file's replacement, and not with reads.
    /// A look at the files never drops the POSIX locks SQLite holds on `-shm` for a read
    /// in this process (closing any descriptor of a file drops them all), and it reads the
    /// header through one descriptor, opened again only for a new `-shm`. Locks as the
    /// kernel lists them in `/proc/locks` (proc(5): `maj:min:inode` of the file, and the
    /// holder's pid).
    #[cfg(target_os = "linux")]
    #[test]
    fn looking_keeps_sqlites_locks_and_holds_one_descriptor_of_the_shm() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let shm = dir.path().join("chat.db-shm");
        let files = DbFiles::new(&db);
        let writer = rusqlite::Connection::open(&db).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE message (text TEXT); INSERT INTO message VALUES ('a');")
            .unwrap();
        let reader = rusqlite::Connection::open(&db).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let n: i64 = reader
            .query_row("SELECT count(*) FROM message", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1, "a read transaction is open");
        let ino = std::fs::metadata(&shm).unwrap().ino();
        let pid = std::process::id().to_string();
        let locks = || {
            std::fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(4) == Some(&pid.as_str())
                        && f.get(5).is_some_and(|id| id.ends_with(&format!(":{ino}")))
                })
                .count()
        };
        let held = locks();
        assert!(held > 0, "SQLite holds locks on -shm during a read");
        let descriptors = |path: &Path| {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .filter(|target| target == path)
                .count()
        };
        let sqlites = descriptors(&shm);
        let first = files.stamp(dir.path());
        for _ in 0..3 {
            assert_eq!(files.stamp(dir.path()), first);
        }
        // A watcher that comes and goes (a text's wait) looks through the same descriptor.
        let passing = DbFiles::new(&db);
        assert_eq!(passing.stamp(dir.path()), first);
        drop(passing);
        assert_eq!(locks(), held, "the looks dropped none of SQLite's locks");
        assert_eq!(
            descriptors(&shm),
            sqlites + 1,
            "one descriptor held for the looks"
        );
        assert_eq!(first.shm_header.len(), WAL_INDEX_HEADER);
        reader.execute_batch("COMMIT").unwrap();
        drop((writer, reader));
        // A new -shm (the database replaced): the next look reads it, not the old one. (The
        // last connection's close may have removed the old one already.)
        let _ = std::fs::remove_file(&shm);
        std::fs::write(&shm, [7u8; 64]).unwrap();
        assert_eq!(
            files.stamp(dir.path()).shm_header,
            vec![7u8; WAL_INDEX_HEADER]
        );
        assert_eq!(descriptors(&shm), 1);
        std::fs::remove_file(&shm).unwrap();
        assert!(files.stamp(dir.path()).shm_header.is_empty());
    }

    #[test]
    fn the_stamp_changes_with_every_commit_and_not_with_reads() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let files = DbFiles::new(&db);
        let writer = rusqlite::Connection::open(&db).unwrap();
        writer
            .execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE message (text TEXT);")
            .unwrap();
        let reader = rusqlite::Connection::open(&db).unwrap();
        let count = || -> i64 {
            (reader.query_row("SELECT count(*) FROM message", [], |r| r.get(0))).unwrap()
        };
        let mut seen = files.stamp(dir.path());
        for n in 1..=5 {
            writer
                .execute("INSERT INTO message VALUES (?1)", [format!("text {n}")])
                .unwrap();
            let now = files.stamp(dir.path());
            assert_ne!(now, seen, "commit {n} changes the stamp");
            assert_eq!(count(), n);
            assert_eq!(files.stamp(dir.path()), now, "a read does not");
            seen = now;
        }
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let checkpointed = files.stamp(dir.path());
        assert_ne!(checkpointed, seen, "a checkpoint changes it");
        writer
            .execute("INSERT INTO message VALUES ('after')", [])
            .unwrap();
        assert_ne!(
            files.stamp(dir.path()),
            checkpointed,
            "so does the next commit"
        );
        drop((writer, reader));
        let replacement = dir.path().join("new.db");
        std::fs::copy(&db, &replacement).unwrap();
        let before = files.stamp(dir.path());
        std::fs::rename(&replacement, &db).unwrap();
        assert_ne!(
            files.stamp(dir.path()),
            before,
            "a replaced file changes it"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_folder_is_polled_and_watched_once_it_appears() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("Messages");
        let db = dir.join("chat.db");
        let mut watcher = Watcher::new(&db, LONG_POLL);
        assert!(!watcher.is_watching());

        let start = Instant::now();
        watcher.changed().await;
        assert_near(start.elapsed(), LONG_POLL);
        assert!(!watcher.is_watching());

        fs::create_dir(&dir).unwrap();
        fs::write(&db, b"db").unwrap();
        watcher.changed().await;
        assert_near(start.elapsed(), 2 * LONG_POLL);
        assert!(
            watcher.is_watching(),
            "the watch is set up again at a poll tick"
        );

        // From now on the clock runs: the next poll is a real minute away.
        tokio::time::resume();
        append(&db, b"row");
        assert_wakes(&mut watcher, "write after the folder appeared").await;
    }

    #[test]
    fn only_the_database_files_concern_the_watcher() {
        use notify::event::{AccessKind, CreateKind, DataChange, RemoveKind, RenameMode};
        let files = DbFiles::new(Path::new("/m/chat.db"));
        let ev = |kind, paths: &[&str]| {
            let mut event = Event::new(kind);
            for p in paths {
                event = event.add_path(PathBuf::from(p));
            }
            event
        };
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Content));
        let renamed = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        let cases = [
            (ev(data, &["/m/chat.db"]), true),
            (ev(data, &["/m/chat.db-wal"]), true),
            (ev(data, &["/m/chat.db-shm"]), false),
            (
                ev(EventKind::Create(CreateKind::File), &["/m/chat.db-shm"]),
                true,
            ),
            (
                ev(EventKind::Remove(RemoveKind::File), &["/m/chat.db-shm"]),
                true,
            ),
            (ev(renamed, &["/m/chat.db.swap", "/m/chat.db"]), true),
            (
                ev(EventKind::Access(AccessKind::Any), &["/m/chat.db"]),
                false,
            ),
            (ev(data, &["/m/chat.db-journal"]), false),
            (ev(data, &["/m/other.db"]), false),
            (ev(EventKind::Any, &["/m/chat.db"]), true),
            (ev(EventKind::Any, &[]), true),
            (
                ev(EventKind::Other, &["/m/x"]).set_flag(notify::event::Flag::Rescan),
                true,
            ),
        ];
        for (i, (event, want)) in cases.iter().enumerate() {
            assert_eq!(files.concern(event), *want, "case {i}: {event:?}");
        }
    }
}
