//! Listing notes, newest first, from each note's frontmatter and first heading.
//!
//! Invariants: symlinks and hidden entries are never followed or listed; only a note's
//! beginning is read, and only when its modification time or length changed since the last
//! listing (the header cache shared by the [`Vault`]'s clones).

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde_yaml_ng::Value as Yaml;

use super::{DEFAULT_LIST_LIMIT, Error, Folder, Vault, confine, lock};

/// How much of a note a listing reads: enough for the frontmatter and the first heading.
const HEADER_CAP: u64 = 8 * 1024;
/// How deep a listing descends into a folder's subfolders.
const MAX_DEPTH: usize = 8;

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

#[derive(Debug)]
pub(super) struct Cached {
    pub(super) modified: SystemTime,
    len: u64,
    pub(super) header: Arc<Header>,
}

/// The parts of a note a listing needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) title: Option<String>,
    pub(super) tags: Vec<String>,
    pub(super) created: Option<String>,
    pub(super) source: Option<String>,
}

/// A note found by a scan.
pub(super) struct Found {
    pub(super) rel: String,
    pub(super) modified: SystemTime,
    pub(super) header: Arc<Header>,
}

impl Vault {
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

    /// Finds every note under `folders`, reading headers only for notes that changed.
    pub(super) fn scan(&self, folders: &[Folder]) -> Result<Vec<Found>, Error> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut scanned = Vec::new();
        let root = confine::real_root(&self.root)?;
        for &folder in folders {
            // Resolved for this scan: a folder that is a link leaving the vault is skipped.
            let top = match confine::folder(&root, folder.as_str(), false) {
                Ok(top) => top,
                Err(Error::NotFound { .. }) => continue,
                Err(Error::FolderOutside { folder }) => {
                    tracing::warn!(
                        ?folder,
                        "not listing a folder that points outside the vault"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut stack = vec![(top.clone(), folder.as_str().to_string(), 0usize)];
            while let Some((dir, rel_dir, depth)) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) if depth == 0 => return Err(Error::io(&dir, e)),
                    Err(e) => {
                        tracing::warn!(dir = ?dir, cause = %e, "skipping folder");
                        continue;
                    }
                };
                for entry in entries {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => {
                            tracing::warn!(dir = ?dir, cause = %e, "skipping entry");
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
                        Err(e) => tracing::warn!(note = ?rel, cause = %e, "skipping note"),
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
        let file =
            confine::open_regular(abs, OpenOptions::new().read(true)).map_err(|r| match r {
                confine::Refused::Io(e) => e,
                other => io::Error::other(format!("{other:?}")),
            })?;
        file.take(HEADER_CAP).read_to_end(&mut bytes)?;
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

/// Reads what a listing needs from the start of a note. Never fails: whatever cannot be
/// parsed is left out.
pub(super) fn parse_header(bytes: &[u8], complete: bool) -> Header {
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

pub(crate) fn yaml_scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Frontmatter tags as a list, or as one string of comma- or space-separated tags.
pub(crate) fn yaml_tags(value: Option<&Yaml>) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::fs::File;
    use std::time::Duration;

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

    /// Issue 9: with `Projects -> /elsewhere`, a listing returned the titles and tags of the
    /// notes there. A content folder that is a link leaving the vault is skipped, and
    /// `check_writable` names it instead of creating through it.
    #[cfg(unix)]
    #[test]
    fn content_folders_linked_outside_are_skipped_and_named() {
        let (dir, vault) = vault();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        fs::write(
            elsewhere.join("secret.md"),
            "---\ntags: [private]\n---\n# Outside secret\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(&elsewhere, vault.root().join("Projects")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("missing"), vault.root().join("Tasks")).unwrap();
        // A link that stays inside the vault is a folder like any other.
        put(&vault, "Real/ideas/inside.md", "# Inside\n", 1);
        std::os::unix::fs::symlink(vault.root().join("Real/ideas"), vault.root().join("Ideas"))
            .unwrap();

        let layout = vault.check_writable().unwrap();
        assert_eq!(layout.outside, ["Tasks", "Projects"]);
        assert_eq!(layout.problems()[1], "Projects points outside the vault");
        assert!(
            !dir.path().join("missing").exists(),
            "nothing created outside"
        );
        let all = vault
            .list(&ListQuery {
                limit: 100,
                ..ListQuery::default()
            })
            .unwrap();
        assert_eq!(paths(&all), ["Ideas/inside.md"]);
        let projects = vault
            .list(&ListQuery {
                folder: Some(Folder::Projects),
                ..ListQuery::default()
            })
            .unwrap();
        assert!(projects.is_empty(), "{projects:?}");
        assert_eq!(names(&elsewhere), ["secret.md"]);
    }

    /// Issue 9: a FIFO named `*.md` hung the listing's read for good.
    #[cfg(unix)]
    #[test]
    fn a_fifo_among_the_notes_is_skipped_without_blocking() {
        let (_dir, vault) = vault();
        put(&vault, "Ideas/real.md", "# Real\n", 1);
        mkfifo(&vault.root().join("Ideas/pipe.md"));
        let all = vault.list(&ListQuery::default()).unwrap();
        assert_eq!(paths(&all), ["Ideas/real.md"]);
    }
}
