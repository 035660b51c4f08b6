//! The Obsidian vault: creates notes, reads them back, lists them, and keeps the daily
//! interaction log.
//!
//! Invariants: nothing is ever read or written outside the vault root (relative paths only,
//! no `..`, canonical paths checked against the canonical root, symlinks never followed when
//! listing); a note is written whole under a hidden temporary name and then hard-linked to
//! its name, which fails rather than replace a note, so two writers never share a name, a
//! reader never sees half a note, and a crash never leaves an empty one; a note with a given `source` and title is written at most once per folder;
//! log appends are serialised by a lock held by the [`Vault`] (shared by its clones), so
//! none is lost. Everything here is blocking file-system work: async callers use
//! `spawn_blocking`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use chrono::{DateTime, Local, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;
use serde_yaml_ng::Value as Yaml;

/// Largest note [`Vault::read_note`] returns.
pub const MAX_READ_BYTES: u64 = 1024 * 1024;
/// Longest title accepted, in bytes.
pub const MAX_TITLE_BYTES: usize = 1024;
/// Largest note body (and largest log field) accepted, in bytes.
pub const MAX_CONTENT_BYTES: usize = 256 * 1024;
/// Most tags on one note.
pub const MAX_TAGS: usize = 50;
/// Longest tag accepted, in bytes.
pub const MAX_TAG_BYTES: usize = 200;
/// Number of notes [`ListQuery::default`] asks for.
pub const DEFAULT_LIST_LIMIT: usize = 20;

/// Longest slug in a note's file name, in characters.
const MAX_SLUG_CHARS: usize = 50;
/// How much of a note a listing reads: enough for the frontmatter and the first heading.
const HEADER_CAP: u64 = 8 * 1024;
/// How deep a listing descends into a folder's subfolders.
const MAX_DEPTH: usize = 8;
/// Where the interaction logs live, relative to the root.
const LOG_DIR: &str = "_system/logs";
/// How many suffixed names (`-1`, `-2`, …) are tried before giving up.
const MAX_NAME_ATTEMPTS: u32 = 100_000;

/// Makes probe-file names unique within the process.
static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a vault operation failed. Every message is short enough to hand back to the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path leaves the vault (absolute, `..`, or a symlink that points out of it).
    #[error("{path:?} is outside the vault")]
    Outside {
        /// The path as it was asked for.
        path: String,
    },
    /// Nothing at that path.
    #[error("{path:?} does not exist in the vault")]
    NotFound {
        /// The path as it was asked for (vault-relative), or the missing vault root.
        path: String,
    },
    /// An input was refused before touching the disk.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending input field (`title`, `folder`, `filepath`, …).
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The file system failed.
    #[error("file error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// macOS refused access to the vault folder.
    #[error(
        "permission denied on {}: allow Second Brain in System Settings › Privacy & Security › \
         Files and Folders (or Full Disk Access), or pick another vault folder",
        path.display()
    )]
    PermissionDenied {
        /// The file or directory involved.
        path: PathBuf,
    },
}

impl Error {
    fn io(path: &Path, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                path: path.to_path_buf(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// The vault's content folders; the agent files every note into one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Folder {
    /// Things to do.
    Tasks,
    /// Ideas to keep.
    Ideas,
    /// Links, facts and things to look up later.
    Reference,
    /// Notes about an ongoing project.
    Projects,
    /// Still ambiguous, or filed without an answer.
    Inbox,
    /// Done or no longer relevant.
    Archive,
}

impl Folder {
    /// Every content folder, in the order they are documented.
    pub const ALL: [Folder; 6] = [
        Folder::Tasks,
        Folder::Ideas,
        Folder::Reference,
        Folder::Projects,
        Folder::Inbox,
        Folder::Archive,
    ];

    /// The folder's name on disk, which is also its name in tool inputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Folder::Tasks => "Tasks",
            Folder::Ideas => "Ideas",
            Folder::Reference => "Reference",
            Folder::Projects => "Projects",
            Folder::Inbox => "Inbox",
            Folder::Archive => "Archive",
        }
    }
}

impl fmt::Display for Folder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Folder {
    type Err = Error;

    /// Exact, case-sensitive names only.
    fn from_str(s: &str) -> Result<Folder, Error> {
        Folder::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let valid: Vec<&str> = Folder::ALL.iter().map(|f| f.as_str()).collect();
                Error::invalid(
                    "folder",
                    format!(
                        "unknown folder {:?}; use one of {}",
                        preview(s),
                        valid.join(", ")
                    ),
                )
            })
    }
}

/// A note to create with [`Vault::write_note`].
#[derive(Clone, Copy, Debug)]
pub struct NewNote<'a> {
    /// Where it goes.
    pub folder: Folder,
    /// Its title: the `# ` heading, and the slug of the file name.
    pub title: &'a str,
    /// Markdown body, without frontmatter or title heading.
    pub content: &'a str,
    /// Tags without `#` (a leading one is dropped), e.g. `person/sarah`.
    pub tags: &'a [String],
    /// The agent's confidence in the filing, 0–100.
    pub confidence: Option<u8>,
    /// Where the note came from, e.g. `imessage:<message guid>`; makes the write idempotent.
    pub source: Option<&'a str>,
}

/// What [`Vault::list`] returns for one note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NoteSummary {
    /// Vault-relative path with `/` separators.
    pub path: String,
    /// The first `# ` heading, else the file name without `.md`.
    pub title: String,
    /// The frontmatter `tags`, without `#`.
    pub tags: Vec<String>,
    /// The frontmatter `created`, as written.
    pub created: Option<String>,
}

/// A query for [`Vault::list`].
#[derive(Clone, Copy, Debug)]
pub struct ListQuery<'a> {
    /// One folder, or all content folders when `None`.
    pub folder: Option<Folder>,
    /// Tags that must all be present (case-insensitive, a leading `#` ignored).
    pub tags: &'a [String],
    /// At most this many notes.
    pub limit: usize,
}

impl Default for ListQuery<'_> {
    fn default() -> Self {
        ListQuery {
            folder: None,
            tags: &[],
            limit: DEFAULT_LIST_LIMIT,
        }
    }
}

/// One entry of the daily interaction log, written by [`Vault::log_interaction`].
#[derive(Clone, Copy, Debug, Default)]
pub struct LogEntry<'a> {
    /// What the user sent.
    pub input: &'a str,
    /// The folder or kind chosen.
    pub category: Option<&'a str>,
    /// The agent's confidence, 0–100.
    pub confidence: Option<u8>,
    /// Why the agent decided as it did.
    pub reasoning: Option<&'a str>,
    /// Tags given to the note.
    pub tags: Option<&'a [String]>,
    /// Where the note was stored (vault-relative).
    pub stored_path: Option<&'a str>,
    /// The question asked, when the agent was unsure.
    pub clarification: Option<&'a str>,
    /// The user's answer to that question.
    pub user_response: Option<&'a str>,
}

/// An Obsidian vault on disk. Clones share the listing cache and the log lock.
#[derive(Clone, Debug)]
pub struct Vault {
    root: PathBuf,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// What a listing learnt about each note, valid while its mtime and length are unchanged.
    headers: Mutex<HashMap<PathBuf, Cached>>,
    /// Serialises log appends (read, extend, replace).
    log_lock: Mutex<()>,
    /// Serialises the idempotency check and name reservation of note writes.
    write_lock: Mutex<()>,
    /// How many note headers were read from disk (the cache's effect, seen by tests).
    header_reads: AtomicU64,
}

#[derive(Debug)]
struct Cached {
    modified: SystemTime,
    len: u64,
    header: Arc<Header>,
}

/// The parts of a note a listing needs.
#[derive(Debug, Default, PartialEq, Eq)]
struct Header {
    title: Option<String>,
    tags: Vec<String>,
    created: Option<String>,
    source: Option<String>,
}

/// A note found by a scan.
struct Found {
    rel: String,
    modified: SystemTime,
    header: Arc<Header>,
}

#[derive(Serialize)]
struct FrontMatter<'a> {
    created: String,
    tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    confidence: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
}

/// The sections here are short and never span an `.await`; a poisoned lock only means a
/// panic elsewhere, and the data it guards stays usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Vault {
    /// A vault rooted at `root` (the folder the user picked). Touches nothing on disk.
    pub fn new(root: impl Into<PathBuf>) -> Vault {
        Vault {
            root: root.into(),
            shared: Arc::default(),
        }
    }

    /// The vault's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the layout (`Tasks/ Ideas/ Reference/ Projects/ Inbox/ Archive/
    /// _system/logs/`) where missing and proves that a file can be created and removed.
    /// The root itself must already exist: a vault on an unmounted disk is not recreated.
    pub fn check_writable(&self) -> Result<(), Error> {
        match fs::metadata(&self.root) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::invalid(
                    "vault",
                    format!("{} is not a folder", self.root.display()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    path: self.root.display().to_string(),
                });
            }
            Err(e) => return Err(Error::io(&self.root, e)),
        }
        for folder in Folder::ALL {
            let dir = self.root.join(folder.as_str());
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let logs = self.root.join(LOG_DIR);
        fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
        let n = PROBE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let probe = logs.join(format!(".write-check-{}-{n}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|e| Error::io(&probe, e))?;
        fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))
    }

    /// Creates a note and returns its vault-relative path, `<folder>/<YYYY-MM-DD>_<slug>.md`
    /// (`-1`, `-2`, … appended when the name is taken). When `source` is given and a note in
    /// the folder already has that source and title, returns that note's path instead.
    pub fn write_note(&self, note: &NewNote, now: DateTime<Local>) -> Result<String, Error> {
        let title = heading_text(note.title)?;
        check_text("content", note.content, MAX_CONTENT_BYTES)?;
        let tags = normalize_tags(note.tags)?;
        if let Some(c) = note.confidence {
            check_confidence(c)?;
        }
        if let Some(source) = note.source {
            check_text("source", source, MAX_TITLE_BYTES)?;
        }

        let front = FrontMatter {
            created: now.to_rfc3339_opts(SecondsFormat::Secs, false),
            tags: &tags,
            confidence: note.confidence,
            source: note.source,
        };
        let yaml = serde_yaml_ng::to_string(&front)
            .map_err(|e| Error::invalid("note", format!("frontmatter: {e}")))?;
        let body = note.content.trim_end_matches(['\r', '\n']);
        let mut text = format!("---\n{yaml}---\n# {title}\n");
        if !body.is_empty() {
            text.push('\n');
            text.push_str(body);
            text.push('\n');
        }

        let dir = self.root.join(note.folder.as_str());
        let _guard = lock(&self.shared.write_lock);
        if let Some(source) = note.source
            && let Some(existing) = self.find_by_source(note.folder, source, &title)?
        {
            tracing::debug!(path = %existing, "note for this source already written");
            return Ok(existing);
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let stem = format!("{}_{}", now.format("%Y-%m-%d"), slugify(&title));
        let name = create_note(&dir, &stem, text.as_bytes())?;
        Ok(format!("{}/{name}", note.folder.as_str()))
    }

    /// Returns the text of the note at `rel` (vault-relative). Refuses absolute paths, `..`,
    /// NUL bytes, anything not ending in `.md`, anything whose real location is outside the
    /// vault, and files over 1 MiB.
    pub fn read_note(&self, rel: &str) -> Result<String, Error> {
        let outside = || Error::Outside { path: preview(rel) };
        if rel.is_empty() {
            return Err(Error::invalid("filepath", "empty"));
        }
        if rel.contains('\0') {
            return Err(Error::invalid("filepath", "contains a NUL byte"));
        }
        let path = Path::new(rel);
        if path.is_absolute() || rel.starts_with(['/', '\\']) {
            return Err(outside());
        }
        for component in path.components() {
            match component {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                    return Err(outside());
                }
            }
        }
        if !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("md"))
        {
            return Err(Error::invalid("filepath", "only .md notes can be read"));
        }
        let root = fs::canonicalize(&self.root).map_err(|e| Error::io(&self.root, e))?;
        let joined = root.join(path);
        let real = match fs::canonicalize(&joined) {
            Ok(real) => real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound { path: preview(rel) });
            }
            Err(e) => return Err(Error::io(&joined, e)),
        };
        if !real.starts_with(&root) || real == root {
            return Err(outside());
        }
        // Open the resolved path, so what is checked is what is read.
        let file = File::open(&real).map_err(|e| Error::io(&real, e))?;
        let meta = file.metadata().map_err(|e| Error::io(&real, e))?;
        if !meta.is_file() {
            return Err(Error::invalid("filepath", "not a file"));
        }
        if meta.len() > MAX_READ_BYTES {
            return Err(Error::invalid("filepath", "note is larger than 1 MiB"));
        }
        let mut bytes = Vec::new();
        file.take(MAX_READ_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(&real, e))?;
        if bytes.len() as u64 > MAX_READ_BYTES {
            return Err(Error::invalid("filepath", "note is larger than 1 MiB"));
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Lists notes, newest first (by frontmatter `created`, else modification time). Only
    /// each note's beginning is read, and only when it changed since the last listing.
    /// A note that cannot be read is logged and skipped; one without frontmatter or with
    /// broken YAML is listed with what could be read.
    pub fn list(&self, q: &ListQuery) -> Result<Vec<NoteSummary>, Error> {
        let folders: Vec<Folder> = match q.folder {
            Some(f) => vec![f],
            None => Folder::ALL.to_vec(),
        };
        let wanted: Vec<String> = q
            .tags
            .iter()
            .map(|t| t.trim_start_matches('#').to_lowercase())
            .collect();
        let mut notes: Vec<(DateTime<Utc>, NoteSummary)> = self
            .scan(&folders)?
            .into_iter()
            .filter(|n| {
                wanted
                    .iter()
                    .all(|w| n.header.tags.iter().any(|t| t.to_lowercase() == *w))
            })
            .map(|n| {
                let when = n
                    .header
                    .created
                    .as_deref()
                    .and_then(parse_created)
                    .unwrap_or_else(|| DateTime::<Utc>::from(n.modified));
                let title = n.header.title.clone().unwrap_or_else(|| file_stem(&n.rel));
                let summary = NoteSummary {
                    path: n.rel,
                    title,
                    tags: n.header.tags.clone(),
                    created: n.header.created.clone(),
                };
                (when, summary)
            })
            .collect();
        notes.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
        Ok(notes.into_iter().take(q.limit).map(|(_, s)| s).collect())
    }

    /// Appends an entry to `_system/logs/<YYYY-MM-DD>.md` (created with its header first) and
    /// returns that file's vault-relative path. The file is replaced atomically; appends are
    /// serialised so that concurrent ones all land.
    pub fn log_interaction(&self, e: &LogEntry, now: DateTime<Local>) -> Result<String, Error> {
        check_text("input", e.input, MAX_CONTENT_BYTES)?;
        let texts = [
            ("category", e.category),
            ("reasoning", e.reasoning),
            ("stored_path", e.stored_path),
            ("clarification", e.clarification),
            ("user_response", e.user_response),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                check_text(field, value, MAX_CONTENT_BYTES)?;
            }
        }
        if let Some(c) = e.confidence {
            check_confidence(c)?;
        }
        let tags = e.tags.map(normalize_tags).transpose()?;

        let mut entry = format!("## {}\n", now.format("%H:%M:%S"));
        let mut field = |name: &str, value: &str| {
            entry.push_str(&format!("- **{name}:** {}\n", log_value(value)));
        };
        field("Input", e.input);
        if let Some(v) = e.category {
            field("Category", v);
        }
        if let Some(v) = e.confidence {
            field("Confidence", &v.to_string());
        }
        if let Some(v) = e.reasoning {
            field("Reasoning", v);
        }
        if let Some(v) = &tags {
            field("Tags", &v.join(", "));
        }
        if let Some(v) = e.stored_path {
            field("Stored path", v);
        }
        if let Some(v) = e.clarification {
            field("Clarification", v);
        }
        if let Some(v) = e.user_response {
            field("User response", v);
        }

        let date = now.format("%Y-%m-%d").to_string();
        let rel = format!("{LOG_DIR}/{date}.md");
        let path = self.root.join(LOG_DIR).join(format!("{date}.md"));
        let _guard = lock(&self.shared.log_lock);
        let mut text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                format!("# Interaction Log: {date}\n")
            }
            Err(err) => return Err(Error::io(&path, err)),
        };
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push('\n');
        text.push_str(&entry);
        crate::persist::write_atomic(&path, text.as_bytes())
            .map_err(|err| Error::io(&path, err))?;
        Ok(rel)
    }

    /// The note in `folder` written from `source` with this title, if any.
    fn find_by_source(
        &self,
        folder: Folder,
        source: &str,
        title: &str,
    ) -> Result<Option<String>, Error> {
        Ok(self.scan(&[folder])?.into_iter().find_map(|n| {
            let same = n.header.source.as_deref() == Some(source)
                && n.header.title.as_deref() == Some(title);
            same.then_some(n.rel)
        }))
    }

    /// Finds every note under `folders`, reading headers only for notes that changed.
    fn scan(&self, folders: &[Folder]) -> Result<Vec<Found>, Error> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut scanned = Vec::new();
        for &folder in folders {
            let top = self.root.join(folder.as_str());
            let mut stack = vec![(top.clone(), folder.as_str().to_string(), 0usize)];
            while let Some((dir, rel_dir, depth)) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) if depth == 0 => return Err(Error::io(&dir, e)),
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), cause = %e, "skipping folder");
                        continue;
                    }
                };
                for entry in entries {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), cause = %e, "skipping entry");
                            continue;
                        }
                    };
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    if name.starts_with('.') {
                        continue;
                    }
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    let abs = entry.path();
                    let rel = format!("{rel_dir}/{name}");
                    if kind.is_dir() {
                        if depth < MAX_DEPTH {
                            stack.push((abs, rel, depth + 1));
                        }
                        continue;
                    }
                    // Symlinks are skipped: a listing never leaves the vault.
                    if !kind.is_file() || !has_md_extension(&name) {
                        continue;
                    }
                    match self.header(&abs, &entry) {
                        Ok((modified, header)) => {
                            seen.insert(abs);
                            found.push(Found {
                                rel,
                                modified,
                                header,
                            });
                        }
                        Err(e) => tracing::warn!(note = %rel, cause = %e, "skipping note"),
                    }
                }
            }
            scanned.push(top);
        }
        lock(&self.shared.headers)
            .retain(|p, _| seen.contains(p) || !scanned.iter().any(|top| p.starts_with(top)));
        Ok(found)
    }

    /// The header of one note, from the cache when its mtime and length are unchanged.
    fn header(&self, abs: &Path, entry: &fs::DirEntry) -> io::Result<(SystemTime, Arc<Header>)> {
        let meta = entry.metadata()?;
        let modified = meta.modified()?;
        let len = meta.len();
        if let Some(c) = lock(&self.shared.headers).get(abs)
            && c.modified == modified
            && c.len == len
        {
            return Ok((modified, Arc::clone(&c.header)));
        }
        let mut bytes = Vec::new();
        File::open(abs)?.take(HEADER_CAP).read_to_end(&mut bytes)?;
        self.shared.header_reads.fetch_add(1, Ordering::Relaxed);
        let complete = (bytes.len() as u64) < HEADER_CAP;
        let header = Arc::new(parse_header(&bytes, complete));
        lock(&self.shared.headers).insert(
            abs.to_path_buf(),
            Cached {
                modified,
                len,
                header: Arc::clone(&header),
            },
        );
        Ok((modified, header))
    }
}

/// Reserves `<stem>.md`, else `<stem>-1.md`, `<stem>-2.md`, … with an exclusive create.
/// Writes `bytes` as a new note `<stem>.md` in `dir` (`<stem>-<n>.md` when the name is
/// taken) and returns its file name. The whole note is written and flushed under a hidden
/// temporary name, then hard-linked to its name — a link fails rather than replace a note —
/// so a crash at any moment leaves no note or the whole note (and at most a hidden
/// temporary file), never an empty one. Where hard links are not supported (some external
/// drives) the name is reserved with an exclusive create and the note renamed over it.
fn create_note(dir: &Path, stem: &str, bytes: &[u8]) -> Result<String, Error> {
    use std::io::Write as _;
    let n = PROBE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{stem}.{}-{n}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    let named = link_to_free_name(dir, stem, &tmp);
    // After a link the temporary name is a second name of the note; after the fallback's
    // rename, or a failure, it is gone or unwanted.
    let _ = fs::remove_file(&tmp);
    let name = named?;
    crate::persist::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(name)
}

/// Gives the written file `tmp` the first free name `<stem>.md`, `<stem>-1.md`, ….
fn link_to_free_name(dir: &Path, stem: &str, tmp: &Path) -> Result<String, Error> {
    for n in 0..MAX_NAME_ATTEMPTS {
        let name = if n == 0 {
            format!("{stem}.md")
        } else {
            format!("{stem}-{n}.md")
        };
        match fs::hard_link(tmp, dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                let (name, path) = reserve_name(dir, stem)?;
                if let Err(e) = fs::rename(tmp, &path) {
                    // Give the reserved name back rather than leave an empty note behind.
                    let _ = fs::remove_file(&path);
                    return Err(Error::io(&path, e));
                }
                return Ok(name);
            }
        }
    }
    Err(Error::invalid(
        "title",
        "too many notes with this name today",
    ))
}

fn reserve_name(dir: &Path, stem: &str) -> Result<(String, PathBuf), Error> {
    for n in 0..MAX_NAME_ATTEMPTS {
        let name = if n == 0 {
            format!("{stem}.md")
        } else {
            format!("{stem}-{n}.md")
        };
        let path = dir.join(&name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(_) => return Ok((name, path)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
    Err(Error::invalid(
        "title",
        "too many notes with this name today",
    ))
}

/// The file-name slug of a title: lower-case `a-z0-9` words joined by `-`, at most 50
/// characters, `note` when nothing is left.
fn slugify(title: &str) -> String {
    let mut slug = String::new();
    let mut gap = false;
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if gap && !slug.is_empty() {
                slug.push('-');
            }
            gap = false;
            slug.push(c);
        } else if c.is_whitespace() || c == '-' {
            gap = true;
        }
    }
    slug.truncate(MAX_SLUG_CHARS);
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() {
        "note".to_string()
    } else {
        slug.to_string()
    }
}

/// The title as it appears in the `# ` heading: line breaks, control characters and runs
/// of whitespace become one space.
fn heading_text(title: &str) -> Result<String, Error> {
    check_text("title", title, MAX_TITLE_BYTES)?;
    let text = title
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        return Err(Error::invalid("title", "empty"));
    }
    Ok(text)
}

/// Refuses NUL bytes and texts over `max` bytes.
fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), Error> {
    if text.len() > max {
        return Err(Error::invalid(field, format!("longer than {max} bytes")));
    }
    if text.contains('\0') {
        return Err(Error::invalid(field, "contains a NUL byte"));
    }
    Ok(())
}

fn check_confidence(c: u8) -> Result<(), Error> {
    if c > 100 {
        return Err(Error::invalid("confidence", "must be from 0 to 100"));
    }
    Ok(())
}

/// Validates tags and drops one leading `#` from each.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>, Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid("tags", format!("more than {MAX_TAGS} tags")));
    }
    tags.iter().map(|t| normalize_tag(t)).collect()
}

/// Validates one tag and drops its leading `#`: non-empty, at most 200 bytes, no whitespace
/// or control characters.
pub fn normalize_tag(tag: &str) -> Result<String, Error> {
    let tag = tag.trim_start_matches('#');
    if tag.is_empty() {
        return Err(Error::invalid("tags", "empty tag"));
    }
    if tag.len() > MAX_TAG_BYTES {
        return Err(Error::invalid(
            "tags",
            format!("tag longer than {MAX_TAG_BYTES} bytes"),
        ));
    }
    if tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid(
            "tags",
            format!(
                "tag {:?} contains whitespace or control characters",
                preview(tag)
            ),
        ));
    }
    Ok(tag.to_string())
}

/// A log value on one list line: every line break is continued as an indented line, so a
/// value can never start a heading or an entry of its own.
fn log_value(value: &str) -> String {
    let unified = value.replace("\r\n", "\n");
    let lines: Vec<&str> = unified
        .split(['\n', '\r', '\u{2028}', '\u{2029}', '\u{85}'])
        .collect();
    lines.join("\n  ")
}

/// Reads what a listing needs from the start of a note. Never fails: whatever cannot be
/// parsed is left out.
fn parse_header(bytes: &[u8], complete: bool) -> Header {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    // A last line cut off by the byte cap is not trusted.
    if !complete && lines.last().is_some_and(|l| !l.ends_with('\n')) {
        lines.pop();
    }
    let bare = |l: &str| l.trim_end_matches(['\n', '\r']).to_string();
    let mut header = Header::default();
    let mut body_start = 0;
    if lines.first().is_some_and(|l| bare(l).trim_end() == "---") {
        let close = lines
            .iter()
            .skip(1)
            .position(|l| matches!(bare(l).trim_end(), "---" | "..."));
        let Some(close) = close.map(|i| i + 1) else {
            // Unterminated frontmatter (or longer than the cap): nothing more is reliable.
            return header;
        };
        let yaml: String = lines[1..close].concat();
        match serde_yaml_ng::from_str::<Yaml>(&yaml) {
            Ok(value) => {
                header.tags = yaml_tags(value.get("tags"));
                header.created = value.get("created").and_then(yaml_scalar);
                header.source = value.get("source").and_then(yaml_scalar);
            }
            Err(e) => tracing::debug!(cause = %e, "unreadable frontmatter"),
        }
        body_start = close + 1;
    }
    let mut fenced = false;
    for line in &lines[body_start.min(lines.len())..] {
        let line = bare(line);
        if line.starts_with("```") || line.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced && let Some(title) = line.strip_prefix("# ") {
            let title = title.trim();
            if !title.is_empty() {
                header.title = Some(title.to_string());
                break;
            }
        }
    }
    header
}

fn yaml_scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Frontmatter tags as a list, or as one string of comma- or space-separated tags.
fn yaml_tags(value: Option<&Yaml>) -> Vec<String> {
    let raw: Vec<String> = match value {
        Some(Yaml::Sequence(seq)) => seq.iter().filter_map(yaml_scalar).collect(),
        Some(Yaml::String(s)) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    };
    raw.iter()
        .map(|t| t.trim().trim_start_matches('#').to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `created` as an instant: RFC 3339, or a bare date (midnight UTC).
fn parse_created(created: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(created.trim()) {
        return Some(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(created.trim(), "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

fn has_md_extension(name: &str) -> bool {
    Path::new(name)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("md"))
}

fn file_stem(rel: &str) -> String {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(name)
        .to_string()
}

/// At most 60 characters of `s`, for error messages.
fn preview(s: &str) -> String {
    const MAX: usize = 60;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .earliest()
            .expect("valid local time")
    }

    fn now() -> DateTime<Local> {
        at(2024, 5, 1, 14, 3, 22)
    }

    fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("vault"));
        fs::create_dir(vault.root()).unwrap();
        (dir, vault)
    }

    fn note<'a>(title: &'a str) -> NewNote<'a> {
        NewNote {
            folder: Folder::Tasks,
            title,
            content: "body",
            tags: &[],
            confidence: None,
            source: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn slugs() {
        let hundred = "abcdefghij ".repeat(10);
        let cases: &[(&str, &str)] = &[
            ("Buy milk", "buy-milk"),
            ("  Hello,   World!  ", "hello-world"),
            ("2024 plan: Q3", "2024-plan-q3"),
            ("pre-existing -- dashes", "pre-existing-dashes"),
            ("Déjà vu", "dj-vu"),
            ("🎉 Party time 🎉", "party-time"),
            ("שלום world", "world"),
            ("مرحبا بالعالم", "note"),
            ("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝟙𝟚", "math"),
            ("line one\r\nline two", "line-one-line-two"),
            ("a\u{2028}b\u{2029}c", "a-b-c"),
            ("tab\tseparated", "tab-separated"),
            ("!!!@@@###", "note"),
            ("", "note"),
            ("   ", "note"),
            (
                &hundred,
                "abcdefghij-abcdefghij-abcdefghij-abcdefghij-abcdef",
            ),
        ];
        for (title, want) in cases {
            assert_eq!(slugify(title), *want, "title {title:?}");
        }
        // A cut that lands on a separator does not leave a trailing dash.
        let cut = format!("{} tail", "a".repeat(49));
        assert_eq!(slugify(&cut), "a".repeat(49));
        assert!(slugify(&"x".repeat(100)).len() == 50);
    }

    #[test]
    fn folder_names_are_exact() {
        for f in Folder::ALL {
            assert_eq!(f.as_str().parse::<Folder>().unwrap(), f);
        }
        let err = "tasks".parse::<Folder>().unwrap_err().to_string();
        assert!(
            err.contains("Tasks, Ideas, Reference, Projects, Inbox, Archive"),
            "error lists the valid folders: {err}"
        );
        assert!(" Tasks".parse::<Folder>().is_err());
    }

    #[test]
    fn check_writable_creates_the_layout_and_leaves_no_probe() {
        let (_dir, vault) = vault();
        vault.check_writable().unwrap();
        for f in Folder::ALL {
            assert!(vault.root().join(f.as_str()).is_dir(), "{f}");
        }
        assert!(names(&vault.root().join("_system/logs")).is_empty());
        vault.check_writable().unwrap();

        let missing = Vault::new(vault.root().join("not-there"));
        assert!(matches!(
            missing.check_writable(),
            Err(Error::NotFound { .. })
        ));
        assert!(!missing.root().exists(), "a missing vault is not created");
    }

    #[test]
    fn note_bytes_are_exact_and_frontmatter_parses_back() {
        let (_dir, vault) = vault();
        let tags = vec!["#person/sarah".to_string(), "topic/a:b".to_string()];
        let new = NewNote {
            folder: Folder::Reference,
            title: "Re: \"quoted\" – yes",
            content: "First line\r\n- item\n\n",
            tags: &tags,
            confidence: Some(85),
            source: Some("imessage:ABC-123"),
        };
        let rel = vault.write_note(&new, now()).unwrap();
        assert_eq!(rel, "Reference/2024-05-01_re-quoted-yes.md");
        let bytes = fs::read_to_string(vault.root().join(&rel)).unwrap();
        let created = format!("2024-05-01T14:03:22{}", now().format("%:z"));
        let want = format!(
            "---\ncreated: {created}\ntags:\n- person/sarah\n- topic/a:b\nconfidence: 85\n\
             source: imessage:ABC-123\n---\n# Re: \"quoted\" – yes\n\nFirst line\r\n- item\n"
        );
        assert_eq!(bytes, want);

        let yaml = bytes
            .strip_prefix("---\n")
            .unwrap()
            .split("---\n")
            .next()
            .unwrap();
        let value: Yaml = serde_yaml_ng::from_str(yaml).unwrap();
        assert_eq!(
            value.get("created").and_then(Yaml::as_str),
            Some(created.as_str())
        );
        assert_eq!(value.get("confidence").and_then(Yaml::as_u64), Some(85));
        assert_eq!(
            value.get("source").and_then(Yaml::as_str),
            Some("imessage:ABC-123")
        );
        assert_eq!(yaml_tags(value.get("tags")), ["person/sarah", "topic/a:b"]);
    }

    #[test]
    fn frontmatter_stays_valid_yaml_for_awkward_values() {
        let (_dir, vault) = vault();
        let tags: Vec<String> = [
            "yes", "null", "1.5", "a:b", "'q'", "\"dq\"", "[x]", "{y}", "-z", "ü/ß", "🎉",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let source = "imessage:x: \"y\" #z";
        let new = NewNote {
            tags: &tags,
            source: Some(source),
            ..note("Awkward")
        };
        let rel = vault.write_note(&new, now()).unwrap();
        let text = fs::read_to_string(vault.root().join(&rel)).unwrap();
        let header = parse_header(text.as_bytes(), true);
        assert_eq!(header.tags, tags);
        assert_eq!(header.source.as_deref(), Some(source));
        assert_eq!(header.title.as_deref(), Some("Awkward"));
    }

    #[test]
    fn title_whitespace_and_line_breaks_become_single_spaces() {
        let (_dir, vault) = vault();
        let rel = vault
            .write_note(
                &NewNote {
                    content: "",
                    ..note(" Two\r\nlines\u{2028}here\t ")
                },
                now(),
            )
            .unwrap();
        assert_eq!(rel, "Tasks/2024-05-01_two-lines-here.md");
        let text = fs::read_to_string(vault.root().join(&rel)).unwrap();
        assert!(text.ends_with("---\n# Two lines here\n"), "{text:?}");
    }

    #[test]
    fn taken_names_get_numbered_suffixes() {
        let (_dir, vault) = vault();
        let contents = ["one", "two", "three"];
        let mut paths = Vec::new();
        for content in contents {
            paths.push(
                vault
                    .write_note(
                        &NewNote {
                            content,
                            ..note("Buy milk")
                        },
                        now(),
                    )
                    .unwrap(),
            );
        }
        assert_eq!(
            paths,
            [
                "Tasks/2024-05-01_buy-milk.md",
                "Tasks/2024-05-01_buy-milk-1.md",
                "Tasks/2024-05-01_buy-milk-2.md"
            ]
        );
        for (path, content) in paths.iter().zip(contents) {
            let text = fs::read_to_string(vault.root().join(path)).unwrap();
            assert!(
                text.ends_with(&format!("# Buy milk\n\n{content}\n")),
                "{text}"
            );
        }
        // A title that slugs to nothing is still a note.
        let rel = vault.write_note(&note("🎉🎉"), now()).unwrap();
        assert_eq!(rel, "Tasks/2024-05-01_note.md");
        assert_eq!(
            names(&vault.root().join("Tasks")).len(),
            4,
            "no temporary file left"
        );
    }

    #[test]
    fn concurrent_writers_never_share_a_name() {
        let (_dir, vault) = vault();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let vault = vault.clone();
                std::thread::spawn(move || {
                    let content = format!("writer {i}");
                    vault
                        .write_note(
                            &NewNote {
                                content: &content,
                                ..note("Same")
                            },
                            now(),
                        )
                        .unwrap()
                })
            })
            .collect();
        let mut paths: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 4);
        let mut bodies: Vec<String> = paths
            .iter()
            .map(|p| fs::read_to_string(vault.root().join(p)).unwrap())
            .map(|t| t.lines().last().unwrap().to_string())
            .collect();
        bodies.sort();
        assert_eq!(bodies, ["writer 0", "writer 1", "writer 2", "writer 3"]);
    }

    /// Issue 4 (found by the crash test): a kill between taking a note's name and writing
    /// it left an empty note, and the re-run wrote a second one. Now only whole notes get
    /// a name; what a kill can leave is a hidden temporary file, which is not a note and
    /// does not take the name.
    #[test]
    fn a_crash_leaves_no_empty_note_and_its_leftovers_do_not_take_the_name() {
        let (_dir, vault) = vault();
        let first = NewNote {
            source: Some("imessage:G1"),
            ..note("Call mom")
        };
        let tasks = vault.root().join("Tasks");
        fs::create_dir_all(&tasks).unwrap();
        // What a kill during an earlier attempt leaves behind.
        fs::write(
            tasks.join(".2024-05-01_call-mom.md.999-0.tmp"),
            b"---\npartial",
        )
        .unwrap();
        let path = vault.write_note(&first, now()).unwrap();
        assert_eq!(path, "Tasks/2024-05-01_call-mom.md");
        let text = fs::read_to_string(vault.root().join(&path)).unwrap();
        assert!(
            text.starts_with("---\n") && text.ends_with("# Call mom\n\nbody\n"),
            "{text}"
        );
        assert_eq!(vault.write_note(&first, now()).unwrap(), path);
        assert_eq!(
            names(&tasks),
            [
                ".2024-05-01_call-mom.md.999-0.tmp",
                "2024-05-01_call-mom.md"
            ],
            "no temporary file of ours is left"
        );
        let listed = vault
            .list(&ListQuery {
                folder: Some(Folder::Tasks),
                tags: &[],
                limit: 10,
            })
            .unwrap();
        assert_eq!(listed.len(), 1);
    }

    #[test]
    fn write_with_the_same_source_and_title_is_idempotent() {
        let (_dir, vault) = vault();
        let first = NewNote {
            source: Some("imessage:G1"),
            ..note("Call mom")
        };
        let path = vault.write_note(&first, now()).unwrap();
        let bytes = fs::read(vault.root().join(&path)).unwrap();
        // A re-run after a crash, later the same day or on the next one.
        let again = NewNote {
            content: "other body",
            ..first
        };
        assert_eq!(vault.write_note(&again, now()).unwrap(), path);
        assert_eq!(
            vault.write_note(&again, at(2024, 5, 2, 9, 0, 0)).unwrap(),
            path
        );
        assert_eq!(
            fs::read(vault.root().join(&path)).unwrap(),
            bytes,
            "not rewritten"
        );
        assert_eq!(names(&vault.root().join("Tasks")).len(), 1);

        // A different title, source, or folder is a different note.
        let other_title = vault.write_note(
            &NewNote {
                title: "Call dad",
                ..first
            },
            now(),
        );
        let other_source = vault.write_note(
            &NewNote {
                source: Some("imessage:G2"),
                ..first
            },
            now(),
        );
        let no_source = vault.write_note(
            &NewNote {
                source: None,
                ..first
            },
            now(),
        );
        let other_folder = vault.write_note(
            &NewNote {
                folder: Folder::Inbox,
                ..first
            },
            now(),
        );
        assert_eq!(other_title.unwrap(), "Tasks/2024-05-01_call-dad.md");
        assert_eq!(other_source.unwrap(), "Tasks/2024-05-01_call-mom-1.md");
        assert_eq!(no_source.unwrap(), "Tasks/2024-05-01_call-mom-2.md");
        assert_eq!(other_folder.unwrap(), "Inbox/2024-05-01_call-mom.md");
    }

    #[test]
    fn invalid_notes_are_refused_before_touching_the_disk() {
        let (_dir, vault) = vault();
        let big_title = "t".repeat(MAX_TITLE_BYTES + 1);
        let big_content = "c".repeat(MAX_CONTENT_BYTES + 1);
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let spaced = vec!["two words".to_string()];
        let control = vec!["a\u{7}b".to_string()];
        let empty = vec!["#".to_string()];
        let cases: Vec<(NewNote, &str)> = vec![
            (note(""), "title"),
            (note(" \r\n\u{2028} "), "title"),
            (note("a\0b"), "title"),
            (note(&big_title), "title"),
            (
                NewNote {
                    content: &big_content,
                    ..note("x")
                },
                "content",
            ),
            (
                NewNote {
                    content: "a\0",
                    ..note("x")
                },
                "content",
            ),
            (
                NewNote {
                    tags: &many,
                    ..note("x")
                },
                "tags",
            ),
            (
                NewNote {
                    tags: &spaced,
                    ..note("x")
                },
                "tags",
            ),
            (
                NewNote {
                    tags: &control,
                    ..note("x")
                },
                "tags",
            ),
            (
                NewNote {
                    tags: &empty,
                    ..note("x")
                },
                "tags",
            ),
            (
                NewNote {
                    confidence: Some(101),
                    ..note("x")
                },
                "confidence",
            ),
        ];
        for (new, field) in cases {
            match vault.write_note(&new, now()) {
                Err(Error::Invalid { field: got, .. }) => assert_eq!(got, field),
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
        assert!(names(vault.root()).is_empty(), "nothing created");
    }

    #[test]
    fn read_returns_the_note() {
        let (_dir, vault) = vault();
        let rel = vault.write_note(
            &NewNote {
                content: "héllo 🎉",
                ..note("Read me")
            },
            now(),
        );
        let rel = rel.unwrap();
        let text = vault.read_note(&rel).unwrap();
        assert_eq!(text.as_bytes(), fs::read(vault.root().join(&rel)).unwrap());
        assert_eq!(vault.read_note(&format!("./{rel}")).unwrap(), text);
    }

    #[cfg(unix)]
    #[test]
    fn read_refuses_what_is_not_a_note_inside_the_vault() {
        let (dir, vault) = vault();
        fs::write(dir.path().join("secret.md"), "SECRET").unwrap();
        fs::create_dir_all(vault.root().join("Tasks/dir.md")).unwrap();
        fs::write(vault.root().join("Tasks/plain.txt"), "text").unwrap();
        fs::write(vault.root().join("Tasks/ok.md"), "ok").unwrap();
        fs::write(
            vault.root().join("Tasks/big.md"),
            vec![b'a'; MAX_READ_BYTES as usize + 1],
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.md"), vault.root().join("out.md"))
            .unwrap();
        std::os::unix::fs::symlink(dir.path(), vault.root().join("Escape")).unwrap();
        std::os::unix::fs::symlink(vault.root().join("Tasks/ok.md"), vault.root().join("in.md"))
            .unwrap();
        let abs_ok = vault.root().join("Tasks/ok.md").display().to_string();

        let cases: Vec<(&str, &str)> = vec![
            ("../secret.md", "outside"),
            ("Tasks/../../secret.md", "outside"),
            ("Tasks/../Tasks/ok.md", "outside"),
            ("/etc/hosts.md", "outside"),
            (&abs_ok, "outside"),
            ("out.md", "outside"),
            ("Escape/secret.md", "outside"),
            ("Tasks/ok\0.md", "invalid"),
            ("Tasks/plain.txt", "invalid"),
            ("Tasks/ok", "invalid"),
            ("", "invalid"),
            ("Tasks/dir.md", "invalid"),
            ("Tasks/big.md", "invalid"),
            ("Tasks/missing.md", "not found"),
        ];
        for (path, want) in cases {
            let got = match vault.read_note(path) {
                Err(Error::Outside { .. }) => "outside",
                Err(Error::Invalid { .. }) => "invalid",
                Err(Error::NotFound { .. }) => "not found",
                other => panic!("{path:?}: unexpected {other:?}"),
            };
            assert_eq!(got, want, "{path:?}");
        }
        // A symlink that stays inside the vault is fine.
        assert_eq!(vault.read_note("in.md").unwrap(), "ok");
    }

    /// Writes a note file directly, with a chosen modification time.
    fn put(vault: &Vault, rel: &str, text: &str, mtime_secs: u64) {
        let path = vault.root().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        let file = File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime_secs))
            .unwrap();
    }

    fn paths(list: &[NoteSummary]) -> Vec<&str> {
        list.iter().map(|n| n.path.as_str()).collect()
    }

    #[test]
    fn list_orders_filters_and_limits() {
        let (_dir, vault) = vault();
        let fm =
            |created: &str, tags: &str| format!("---\ncreated: {created}\ntags: {tags}\n---\n");
        put(
            &vault,
            "Tasks/a.md",
            &(fm("2024-05-01T10:00:00+02:00", "[work, '#urgent']") + "# A\n"),
            1,
        );
        put(
            &vault,
            "Tasks/b.md",
            &(fm("2024-05-01T09:00:00Z", "[work]") + "# B\n"),
            1,
        );
        put(
            &vault,
            "Ideas/c.md",
            &(fm("2024-04-30", "home, work") + "# C\n"),
            1,
        );
        // No frontmatter: ordered by modification time (2024-05-02 here), title from stem.
        put(&vault, "Ideas/plain.md", "just text\n", 1_714_608_000);
        // Broken YAML: listed anyway, with its heading.
        put(
            &vault,
            "Inbox/broken.md",
            "---\ntags: [unclosed\n---\n# Broken\n",
            0,
        );
        put(&vault, "Projects/sub/deep.md", "# Deep\n", 2);
        put(&vault, "Tasks/.hidden.md", "# Hidden\n", 3);
        put(&vault, "Tasks/not-a-note.txt", "# Text\n", 3);
        put(
            &vault,
            "_system/logs/2024-05-01.md",
            "# Interaction Log\n",
            3,
        );
        put(&vault, "root.md", "# Root\n", 3);

        let all = vault
            .list(&ListQuery {
                limit: 100,
                ..ListQuery::default()
            })
            .unwrap();
        assert_eq!(
            paths(&all),
            [
                "Ideas/plain.md",
                "Tasks/b.md",
                "Tasks/a.md",
                "Ideas/c.md",
                "Projects/sub/deep.md",
                "Inbox/broken.md"
            ]
        );
        assert_eq!(
            all[2],
            NoteSummary {
                path: "Tasks/a.md".into(),
                title: "A".into(),
                tags: vec!["work".into(), "urgent".into()],
                created: Some("2024-05-01T10:00:00+02:00".into()),
            }
        );
        assert_eq!(all[0].title, "plain");
        assert_eq!(all[0].created, None);
        assert_eq!(all[3].tags, ["home", "work"]);
        assert_eq!(all[5].title, "Broken");
        assert!(all[5].tags.is_empty());

        let tasks = vault
            .list(&ListQuery {
                folder: Some(Folder::Tasks),
                ..ListQuery::default()
            })
            .unwrap();
        assert_eq!(paths(&tasks), ["Tasks/b.md", "Tasks/a.md"]);

        let work = vec!["Work".to_string()];
        let tagged = vault
            .list(&ListQuery {
                tags: &work,
                ..ListQuery::default()
            })
            .unwrap();
        assert_eq!(paths(&tagged), ["Tasks/b.md", "Tasks/a.md", "Ideas/c.md"]);
        let both = vec!["work".to_string(), "#urgent".to_string()];
        let tagged = vault
            .list(&ListQuery {
                tags: &both,
                ..ListQuery::default()
            })
            .unwrap();
        assert_eq!(paths(&tagged), ["Tasks/a.md"]);

        let two = vault
            .list(&ListQuery {
                limit: 2,
                ..ListQuery::default()
            })
            .unwrap();
        assert_eq!(paths(&two), ["Ideas/plain.md", "Tasks/b.md"]);
        assert_eq!(ListQuery::default().limit, 20);

        let empty = vault
            .list(&ListQuery {
                folder: Some(Folder::Archive),
                ..ListQuery::default()
            })
            .unwrap();
        assert!(empty.is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn list_does_not_follow_symlinks_out_of_the_vault() {
        let (dir, vault) = vault();
        fs::create_dir(dir.path().join("outside")).unwrap();
        fs::write(dir.path().join("outside/x.md"), "# Outside\n").unwrap();
        fs::create_dir(vault.root().join("Ideas")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), vault.root().join("Ideas/link"))
            .unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("outside/x.md"),
            vault.root().join("Ideas/x.md"),
        )
        .unwrap();
        assert!(vault.list(&ListQuery::default()).unwrap().is_empty());
    }

    #[test]
    fn warm_listing_reads_nothing_and_a_changed_note_is_read_again() {
        let (_dir, vault) = vault();
        for i in 0..10_000 {
            let folder = Folder::ALL[i % 6];
            let text =
                format!("---\ncreated: 2024-01-01T00:00:00Z\ntags: [n{i}]\n---\n# Note {i}\n");
            put(&vault, &format!("{folder}/{i:05}.md"), &text, 1);
        }
        let q = ListQuery {
            limit: 10_000,
            ..ListQuery::default()
        };
        let reads = || vault.shared.header_reads.load(Ordering::Relaxed);
        let cold = vault.list(&q).unwrap();
        assert_eq!(cold.len(), 10_000);
        assert_eq!(reads(), 10_000);

        let warm = vault.clone().list(&q).unwrap();
        assert_eq!(warm, cold);
        assert_eq!(reads(), 10_000, "a warm listing reads no note");

        put(
            &vault,
            "Tasks/00000.md",
            "---\ntags: [changed]\n---\n# Changed title\n",
            5,
        );
        fs::remove_file(vault.root().join("Ideas/00001.md")).unwrap();
        let changed = vault.list(&q).unwrap();
        assert_eq!(reads(), 10_001, "only the changed note is read again");
        assert_eq!(changed.len(), 9_999);
        let first = changed.iter().find(|n| n.path == "Tasks/00000.md").unwrap();
        assert_eq!(first.title, "Changed title");
        assert_eq!(first.tags, ["changed"]);
        assert_eq!(
            lock(&vault.shared.headers).len(),
            9_999,
            "deleted notes leave the cache"
        );
    }

    #[test]
    fn header_reading_is_lenient() {
        let cases: &[(&str, Option<&str>, &[&str])] = &[
            ("# Title\n", Some("Title"), &[]),
            (
                "\u{feff}---\r\ntags: [a]\r\n---\r\n# CRLF\r\n",
                Some("CRLF"),
                &["a"],
            ),
            ("---\ntags: a\n...\n# Dots\n", Some("Dots"), &["a"]),
            (
                "---\ntags: [a\n---\n# After broken\n",
                Some("After broken"),
                &[],
            ),
            ("---\ntags: [a]\n# never closed\n", None, &[]),
            ("```\n# in code\n```\n# Real\n", Some("Real"), &[]),
            ("#NotHeading\n## Sub\n#  Spaced  \n", Some("Spaced"), &[]),
            ("---\ntags: 5\n---\n", None, &[]),
            ("", None, &[]),
        ];
        for (text, title, tags) in cases {
            let header = parse_header(text.as_bytes(), true);
            assert_eq!(header.title.as_deref(), *title, "{text:?}");
            assert_eq!(header.tags, *tags, "{text:?}");
        }
        // A heading cut off by the byte cap is not trusted.
        assert_eq!(parse_header(b"# Cut", false).title, None);
    }

    fn log_text(vault: &Vault, date: &str) -> String {
        fs::read_to_string(vault.root().join(format!("_system/logs/{date}.md"))).unwrap()
    }

    #[test]
    fn log_is_created_with_a_header_and_appended_to() {
        let (_dir, vault) = vault();
        let tags = vec!["#person/sarah".to_string(), "priority/high".to_string()];
        let full = LogEntry {
            input: "Call Sarah\nabout ## the deck",
            category: Some("Tasks"),
            confidence: Some(92),
            reasoning: Some("clear action\r\nverb"),
            tags: Some(&tags),
            stored_path: Some("Tasks/2024-05-01_call-sarah.md"),
            clarification: Some("Which Sarah?"),
            user_response: Some("Work\u{2028}Sarah"),
        };
        let rel = vault.log_interaction(&full, now()).unwrap();
        assert_eq!(rel, "_system/logs/2024-05-01.md");
        let minimal = LogEntry {
            input: "hi 👋",
            ..LogEntry::default()
        };
        vault
            .log_interaction(&minimal, at(2024, 5, 1, 23, 59, 59))
            .unwrap();
        assert_eq!(
            log_text(&vault, "2024-05-01"),
            "# Interaction Log: 2024-05-01\n\
             \n## 14:03:22\n\
             - **Input:** Call Sarah\n  about ## the deck\n\
             - **Category:** Tasks\n\
             - **Confidence:** 92\n\
             - **Reasoning:** clear action\n  verb\n\
             - **Tags:** person/sarah, priority/high\n\
             - **Stored path:** Tasks/2024-05-01_call-sarah.md\n\
             - **Clarification:** Which Sarah?\n\
             - **User response:** Work\n  Sarah\n\
             \n## 23:59:59\n\
             - **Input:** hi 👋\n"
        );
        // The next day starts a new file.
        let next = vault
            .log_interaction(&minimal, at(2024, 5, 2, 0, 0, 1))
            .unwrap();
        assert_eq!(next, "_system/logs/2024-05-02.md");
        assert_eq!(
            log_text(&vault, "2024-05-02"),
            "# Interaction Log: 2024-05-02\n\n## 00:00:01\n- **Input:** hi 👋\n"
        );
        let bad = LogEntry {
            input: "a\0b",
            ..LogEntry::default()
        };
        assert!(matches!(
            vault.log_interaction(&bad, now()),
            Err(Error::Invalid { field: "input", .. })
        ));
        let bad = LogEntry {
            input: "x",
            confidence: Some(200),
            ..LogEntry::default()
        };
        assert!(vault.log_interaction(&bad, now()).is_err());
    }

    #[test]
    fn concurrent_log_appends_are_all_kept() {
        let (_dir, vault) = vault();
        let threads: Vec<_> = (0..2)
            .map(|t| {
                let vault = vault.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        let input = format!("thread {t} entry {i}");
                        let entry = LogEntry {
                            input: &input,
                            ..LogEntry::default()
                        };
                        vault.log_interaction(&entry, now()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = log_text(&vault, "2024-05-01");
        assert_eq!(text.matches("\n## 14:03:22\n").count(), 100);
        for t in 0..2 {
            for i in 0..50 {
                assert!(text.contains(&format!("- **Input:** thread {t} entry {i}\n")));
            }
        }
        assert_eq!(names(&vault.root().join("_system/logs")), ["2024-05-01.md"]);
    }
}
