//! Changing one top-level field of a note's YAML frontmatter (`reminder:`, `tags:`, the
//! archive stamps) and the Obsidian Tasks line of a task, leaving every other byte as it was.
//!
//! Invariants: the text functions are pure and change only the field's own lines (its key
//! line and the indented or `- ` lines under it); a note without frontmatter gets one; the
//! note's line ends (LF or CRLF) and byte-order mark are kept. [`update`] is a conditional
//! read-modify-write: the note is read, edited, read again, and written (atomically, keeping
//! its permissions) only when the second read has the same bytes as the first — a note that
//! Obsidian or iCloud changed in between is edited again from its new text, never
//! overwritten blindly. What remains is the moment between the second read and the rename,
//! which a file system offers no way to close.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, NaiveDate, SecondsFormat};

use super::{Due, format_due};

/// How many times [`update`] edits a note that keeps changing under it before giving up.
const ATTEMPTS: usize = 5;

/// Where a note's frontmatter is.
struct Layout {
    /// The line end the frontmatter uses.
    eol: &'static str,
    /// Byte offset of the first line inside the frontmatter.
    start: usize,
    /// Byte offset of the closing `---` line.
    end: usize,
}

fn layout(text: &str) -> Option<Layout> {
    let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let rest = &text[bom..];
    let (eol, open) = if rest.starts_with("---\r\n") {
        ("\r\n", 5)
    } else if rest.starts_with("---\n") {
        ("\n", 4)
    } else {
        return None;
    };
    let start = bom + open;
    let mut at = start;
    for line in text[start..].split_inclusive('\n') {
        if matches!(line.trim_end(), "---" | "...") {
            return Some(Layout {
                eol,
                start,
                end: at,
            });
        }
        at += line.len();
    }
    None
}

/// The byte range of top-level `key`'s lines within the frontmatter, if it is there.
fn field(text: &str, layout: &Layout, key: &str) -> Option<(usize, usize)> {
    let mut at = layout.start;
    let mut found: Option<usize> = None;
    for line in text[layout.start..layout.end].split_inclusive('\n') {
        let continues = line.starts_with([' ', '\t']) || line.starts_with('-');
        match found {
            Some(begin) if !continues => return Some((begin, at)),
            None if is_key_line(line, key) => found = Some(at),
            _ => {}
        }
        at += line.len();
    }
    found.map(|begin| (begin, layout.end))
}

fn is_key_line(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// `text` with top-level `key` set to `lines` (YAML, LF line ends, starting with `key:`), or
/// removed when `lines` is `None`. Everything else is kept byte for byte.
pub fn set_field(text: &str, key: &str, lines: Option<&str>) -> String {
    let Some(layout) = layout(text) else {
        let Some(lines) = lines else {
            return text.to_string();
        };
        let bom = if text.starts_with('\u{feff}') { 3 } else { 0 };
        return format!("{}---\n{lines}---\n{}", &text[..bom], &text[bom..]);
    };
    let new = lines
        .map(|l| l.replace('\n', layout.eol))
        .unwrap_or_default();
    match field(text, &layout, key) {
        Some((begin, end)) => format!("{}{new}{}", &text[..begin], &text[end..]),
        None if lines.is_none() => text.to_string(),
        None => format!("{}{new}{}", &text[..layout.end], &text[layout.end..]),
    }
}

/// The `reminder:` field: due, whether it was sent, and when.
pub fn reminder_lines(due: &Due, sent_at: Option<DateTime<Local>>) -> String {
    let mut lines = format!("reminder:\n  due: {}\n", format_due(due));
    match sent_at {
        None => lines.push_str("  sent: false\n"),
        Some(at) => lines.push_str(&format!(
            "  sent: true\n  sent_at: {}\n",
            at.to_rfc3339_opts(SecondsFormat::Secs, false)
        )),
    }
    lines
}

/// The `tags:` field as the vault writes it (a YAML block list).
pub fn tags_lines(tags: &[String]) -> String {
    let mut map = std::collections::BTreeMap::new();
    map.insert("tags", tags);
    serde_yaml_ng::to_string(&map).unwrap_or_else(|_| "tags: []\n".into())
}

/// `text` with its Obsidian Tasks line `- [ ] <title> 📅 YYYY-MM-DD` set to `date`: the first
/// open task line that already has a 📅 date, or that is the title itself, is replaced;
/// otherwise the line is added at the end. The format is the Tasks plugin's emoji format for
/// a due date ("- [ ] #task Has a due date 📅 2023-04-16":
/// <https://publish.obsidian.md/tasks/Reference/Task+Formats/Tasks+Emoji+Format>).
pub fn set_tasks_line(text: &str, title: &str, date: NaiveDate) -> String {
    let title = title.trim();
    let line = format!("- [ ] {title} 📅 {}", date.format("%Y-%m-%d"));
    let body_start = layout(text).map_or(0, |l| {
        let close = &text[l.end..];
        l.end + close.find('\n').map_or(close.len(), |i| i + 1)
    });
    let mut at = body_start;
    for old in text[body_start..].split_inclusive('\n') {
        let content = old.trim_end_matches(['\r', '\n']);
        if let Some(task) = content.strip_prefix("- [ ] ")
            && (task.contains('📅') || task.trim() == title)
        {
            let end = at + content.len();
            return format!("{}{line}{}", &text[..at], &text[end..]);
        }
        at += old.len();
    }
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        eol
    };
    format!("{text}{sep}{line}{eol}")
}

/// Why a note could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// The note is gone.
    #[error("{} does not exist", path.display())]
    Missing {
        /// The note.
        path: PathBuf,
    },
    /// The note is not UTF-8 text.
    #[error("{} is not UTF-8 text", path.display())]
    NotText {
        /// The note.
        path: PathBuf,
    },
    /// The note kept changing while it was being updated.
    #[error("{} kept changing while it was being updated; try again", path.display())]
    Busy {
        /// The note.
        path: PathBuf,
    },
    /// The file system failed.
    #[error("file error on {}: {source}", path.display())]
    Io {
        /// The note.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// What [`update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Updated {
    /// The note was rewritten.
    Written,
    /// The edit had nothing to change.
    Unchanged,
}

/// Edits the note at `path` with `edit` (its text in, the new text out, or `None` for no
/// change), conditionally: see the module's invariants (blocking).
pub fn update(
    path: &Path,
    edit: impl FnMut(&str) -> Option<String>,
) -> Result<Updated, UpdateError> {
    update_between(path, edit, || {})
}

/// [`update`], calling `between` after each edit and before the second read (tests change
/// the note there).
fn update_between(
    path: &Path,
    mut edit: impl FnMut(&str) -> Option<String>,
    mut between: impl FnMut(),
) -> Result<Updated, UpdateError> {
    let io_err = |source: io::Error| match source.kind() {
        io::ErrorKind::NotFound => UpdateError::Missing {
            path: path.to_path_buf(),
        },
        _ => UpdateError::Io {
            path: path.to_path_buf(),
            source,
        },
    };
    for _ in 0..ATTEMPTS {
        let before = fs::read(path).map_err(io_err)?;
        let text = std::str::from_utf8(&before).map_err(|_| UpdateError::NotText {
            path: path.to_path_buf(),
        })?;
        let Some(new) = edit(text).filter(|new| new != text) else {
            return Ok(Updated::Unchanged);
        };
        between();
        let permissions = fs::metadata(path).map_err(io_err)?.permissions();
        if fs::read(path).map_err(io_err)? != before {
            tracing::debug!(path = ?path, "note changed while being updated; editing it again");
            continue;
        }
        crate::persist::write_atomic(path, new.as_bytes()).map_err(io_err)?;
        fs::set_permissions(path, permissions).map_err(io_err)?;
        return Ok(Updated::Written);
    }
    Err(UpdateError::Busy {
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn due() -> Due {
        chrono::FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2026, 12, 3, 17, 0, 0)
            .unwrap()
    }

    const NOTE: &str = "---\ncreated: 2026-12-02T09:00:00+01:00\ntags:\n- priority/normal\n- status/active\nconfidence: 90\n---\n# Call the dentist\n\n- [ ] Call the dentist\n";

    #[test]
    fn setting_the_reminder_changes_only_its_lines() {
        let lines = reminder_lines(&due(), None);
        assert_eq!(
            lines,
            "reminder:\n  due: 2026-12-03T17:00:00+01:00\n  sent: false\n"
        );
        let set = set_field(NOTE, "reminder", Some(&lines));
        assert_eq!(
            set,
            NOTE.replace("confidence: 90\n", &format!("confidence: 90\n{lines}"))
        );
        // Set again (sent now): replaced in place, nothing else moves.
        let at = Local.with_ymd_and_hms(2026, 12, 3, 17, 0, 1).unwrap();
        let sent = set_field(&set, "reminder", Some(&reminder_lines(&due(), Some(at))));
        assert!(
            sent.contains("  sent: true\n  sent_at: 2026-12-03T17:00:01"),
            "{sent}"
        );
        assert_eq!(sent.matches("reminder:").count(), 1);
        assert_eq!(set_field(&sent, "reminder", None), NOTE);
        assert_eq!(set_field(NOTE, "reminder", None), NOTE, "nothing to remove");
    }

    #[test]
    fn hostile_notes_keep_every_other_byte() {
        let lines = reminder_lines(&due(), None);
        let cases: &[(&str, &str)] = &[
            // CRLF throughout: the new lines use CRLF too.
            (
                "---\r\ntags: [a]\r\n---\r\nbody 🦀\r\n",
                "---\r\ntags: [a]\r\nreminder:\r\n  due: 2026-12-03T17:00:00+01:00\r\n  sent: false\r\n---\r\nbody 🦀\r\n",
            ),
            // No frontmatter, with a byte-order mark: one is added after it.
            (
                "\u{feff}# مرحبا\n\nx\u{2028}y",
                "\u{feff}---\nreminder:\n  due: 2026-12-03T17:00:00+01:00\n  sent: false\n---\n# مرحبا\n\nx\u{2028}y",
            ),
            // An old reminder in flow style, a key that merely starts like it, comments.
            (
                "---\nreminder: {due: 2020-01-01T00:00:00Z, sent: true}\nreminders_seen: 3\n# reminder: not this\n---\n",
                "---\nreminder:\n  due: 2026-12-03T17:00:00+01:00\n  sent: false\nreminders_seen: 3\n# reminder: not this\n---\n",
            ),
            // Empty note.
            (
                "",
                "---\nreminder:\n  due: 2026-12-03T17:00:00+01:00\n  sent: false\n---\n",
            ),
        ];
        for (before, after) in cases {
            assert_eq!(
                set_field(before, "reminder", Some(&lines)),
                *after,
                "{before:?}"
            );
        }
    }

    #[test]
    fn the_tasks_line_is_updated_or_added() {
        let date = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        assert_eq!(
            set_tasks_line(NOTE, "Call the dentist", date),
            NOTE.replace(
                "- [ ] Call the dentist\n",
                "- [ ] Call the dentist 📅 2026-12-03\n"
            )
        );
        let moved = set_tasks_line(
            &NOTE.replace(
                "- [ ] Call the dentist",
                "- [ ] Call the dentist 📅 2026-11-30",
            ),
            "Call the dentist",
            date,
        );
        assert!(
            moved.ends_with("\n- [ ] Call the dentist 📅 2026-12-03\n"),
            "{moved}"
        );
        let plain = "---\ntags: []\n---\n# Call\n\nNo task line";
        assert_eq!(
            set_tasks_line(plain, "Call", date),
            format!("{plain}\n- [ ] Call 📅 2026-12-03\n")
        );
    }

    #[test]
    fn a_note_changed_during_the_update_is_edited_again_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.md");
        fs::write(&path, NOTE).unwrap();
        let lines = reminder_lines(&due(), None);
        let mut edits = 0;
        let mut first = true;
        let updated = update_between(
            &path,
            |text| {
                edits += 1;
                Some(set_field(text, "reminder", Some(&lines)))
            },
            || {
                if std::mem::take(&mut first) {
                    // Obsidian saves the user's edit at this very moment.
                    fs::write(&path, format!("{NOTE}Typed in Obsidian.\n")).unwrap();
                }
            },
        )
        .unwrap();
        assert_eq!(updated, Updated::Written);
        assert_eq!(edits, 2);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("Typed in Obsidian.\n"), "{text}");
        assert!(text.contains(&lines), "{text}");
        // Nothing to change: the file is not rewritten.
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(
            update(&path, |t| Some(t.to_string())).unwrap(),
            Updated::Unchanged
        );
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert!(matches!(
            update(&dir.path().join("gone.md"), |t| Some(t.into())),
            Err(UpdateError::Missing { .. })
        ));
    }

    #[test]
    fn a_note_that_never_settles_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.md");
        fs::write(&path, NOTE).unwrap();
        let mut n = 0;
        let result = update_between(
            &path,
            |text| Some(format!("{text}x")),
            || {
                n += 1;
                fs::write(&path, format!("{NOTE}{n}")).unwrap();
            },
        );
        assert!(
            matches!(result, Err(UpdateError::Busy { .. })),
            "{result:?}"
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{NOTE}{ATTEMPTS}")
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_note_keeps_its_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.md");
        fs::write(&path, NOTE).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        update(&path, |t| Some(format!("{t}more\n"))).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }
}
