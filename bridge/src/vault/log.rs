//! The daily interaction log, `_system/logs/<YYYY-MM-DD>.md`.
//!
//! Invariants: an entry is appended in place (`O_APPEND`, one write, then `fsync`), so an
//! append costs the entry's bytes whatever the file's size, and a crash leaves whole
//! entries, or a last one cut short that the next append closes; the log is never read
//! whole or rewritten; it is only ever a regular file inside the vault (a link, a FIFO or a
//! device at its name is refused, never followed or blocked on).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};

use chrono::{DateTime, Local};

use super::confine::{self, open_regular};
use super::tags::normalize_tags;
use super::{Error, LOG_DIR, Vault, check_confidence, lock};

/// Longest a log field is kept, in bytes; the rest is cut off and its length noted.
pub const MAX_LOG_FIELD_BYTES: usize = 4 * 1024;

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

impl Vault {
    /// Appends an entry to `_system/logs/<YYYY-MM-DD>.md` (created with its header first) and
    /// returns that file's vault-relative path. The entry is appended in place with one
    /// write and flushed (`fsync`); the file is never read back whole or rewritten. Each
    /// field is cut to [`MAX_LOG_FIELD_BYTES`]. An entry that a crash cut short is closed
    /// (marked as cut off) before the next one. Appends are serialised so that concurrent
    /// ones all land whole.
    pub fn log_interaction(&self, e: &LogEntry, now: DateTime<Local>) -> Result<String, Error> {
        let entry = render(e, now)?;
        let date = now.format("%Y-%m-%d").to_string();
        let rel = format!("{LOG_DIR}/{date}.md");
        let root = confine::real_root(&self.root)?;
        let dir = confine::folder(&root, LOG_DIR, true)?;
        let path = dir.join(format!("{date}.md"));
        let _guard = lock(&self.shared.log_lock);
        let mut file = open_regular(
            &path,
            OpenOptions::new().read(true).append(true).create(true),
        )
        .map_err(|refused| confine::refused(&rel, &path, refused))?;
        let io = |err| Error::io(&path, err);
        let len = file.metadata().map_err(io)?.len();
        let mut bytes = String::with_capacity(entry.len() + 64);
        if len == 0 {
            bytes.push_str(&format!("# Interaction Log: {date}\n"));
        } else if !ends_with_newline(&mut file, len).map_err(io)? {
            bytes.push_str(CUT_MARK);
        }
        bytes.push('\n');
        bytes.push_str(&entry);
        // O_APPEND: the write lands at the end whatever the file offset is.
        file.write_all(bytes.as_bytes()).map_err(io)?;
        file.sync_data().map_err(io)?;
        if len == 0 {
            crate::persist::sync_dir(&dir).map_err(|err| Error::io(&dir, err))?;
        }
        Ok(rel)
    }
}

/// Closes an entry a crash cut off mid-line, so that the next one starts on its own line.
const CUT_MARK: &str = " … *(cut off)*\n";

/// Whether the file's last byte is a line break.
fn ends_with_newline(file: &mut File, len: u64) -> io::Result<bool> {
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// The entry's text: its time heading and one list line per field given.
fn render(e: &LogEntry, now: DateTime<Local>) -> Result<String, Error> {
    if let Some(c) = e.confidence {
        check_confidence(c)?;
    }
    let tags = e
        .tags
        .map(normalize_tags)
        .transpose()?
        .map(|t| t.join(", "));
    let confidence = e.confidence.map(|c| c.to_string());
    let fields = [
        ("input", "Input", Some(e.input)),
        ("category", "Category", e.category),
        ("confidence", "Confidence", confidence.as_deref()),
        ("reasoning", "Reasoning", e.reasoning),
        ("tags", "Tags", tags.as_deref()),
        ("stored_path", "Stored path", e.stored_path),
        ("clarification", "Clarification", e.clarification),
        ("user_response", "User response", e.user_response),
    ];
    let mut entry = format!("## {}\n", now.format("%H:%M:%S"));
    for (field, label, value) in fields {
        let Some(value) = value else { continue };
        if value.contains('\0') {
            return Err(Error::invalid(field, "contains a NUL byte"));
        }
        entry.push_str(&format!("- **{label}:** {}\n", log_value(&capped(value))));
    }
    Ok(entry)
}

/// At most [`MAX_LOG_FIELD_BYTES`] of `value`, cut at a character boundary and marked.
fn capped(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= MAX_LOG_FIELD_BYTES {
        return value.into();
    }
    let mut end = MAX_LOG_FIELD_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … ({} bytes more)", &value[..end], value.len() - end).into()
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::fs;

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

    fn entry(input: &str) -> LogEntry<'_> {
        LogEntry {
            input,
            ..LogEntry::default()
        }
    }

    /// Issue 9: every append read and rewrote the whole log (30 MB written in 5 s). 1,000
    /// appends now write each entry once, in place: the file keeps its inode, and the bytes
    /// this thread wrote (Linux's per-thread `wchar`, proc(5) `/proc/[pid]/io`) are the
    /// log's own size.
    #[cfg(unix)]
    #[test]
    fn a_thousand_appends_write_each_entry_once_in_place() {
        use std::os::unix::fs::MetadataExt as _;
        let (_dir, vault) = vault();
        let path = vault.root().join("_system/logs/2024-05-01.md");
        vault.log_interaction(&entry("first"), now()).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let written_before = thread_wchar();
        let input = "an entry of a typical size, with a category and tags to come".repeat(4);
        for _ in 0..1_000 {
            vault.log_interaction(&entry(&input), now()).unwrap();
        }
        let written = thread_wchar().zip(written_before).map(|(a, b)| a - b);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.ino(), inode, "appended in place, never replaced");
        let one = format!("\n## 14:03:22\n- **Input:** {input}\n").len() as u64;
        let first =
            "# Interaction Log: 2024-05-01\n\n## 14:03:22\n- **Input:** first\n".to_string();
        assert_eq!(meta.len(), first.len() as u64 + 1_000 * one);
        if let Some(written) = written {
            assert_eq!(written, 1_000 * one, "bytes written by 1,000 appends");
        }
    }

    /// The bytes this thread has passed to `write` so far (Linux only).
    fn thread_wchar() -> Option<u64> {
        let io = fs::read_to_string("/proc/thread-self/io").ok()?;
        io.lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Issue 9: a FIFO at today's log path made `log_interaction` block for good, and a
    /// link to `/dev/zero` there was read until memory ran out. Neither is followed,
    /// opened for long or written.
    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_link_at_todays_log_is_refused() {
        let (dir, vault) = vault();
        let logs = vault.root().join("_system/logs");
        fs::create_dir_all(&logs).unwrap();
        mkfifo(&logs.join("2024-05-01.md"));
        let err = vault.log_interaction(&entry("x"), now()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRegular {
                    kind: "a FIFO (named pipe)",
                    ..
                }
            ),
            "{err:?}"
        );

        fs::remove_file(logs.join("2024-05-01.md")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", logs.join("2024-05-01.md")).unwrap();
        let err = vault.log_interaction(&entry("x"), now()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRegular {
                    kind: "a symbolic link",
                    ..
                }
            ),
            "{err:?}"
        );

        let outside = dir.path().join("outside.md");
        fs::write(&outside, "keep").unwrap();
        fs::remove_file(logs.join("2024-05-01.md")).unwrap();
        std::os::unix::fs::symlink(&outside, logs.join("2024-05-01.md")).unwrap();
        assert!(vault.log_interaction(&entry("x"), now()).is_err());
        assert_eq!(fs::read_to_string(&outside).unwrap(), "keep");
    }

    /// Issue 9: `_system/logs` is resolved per append and must stay inside the vault.
    #[cfg(unix)]
    #[test]
    fn a_logs_folder_linked_outside_the_vault_is_refused() {
        let (dir, vault) = vault();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, vault.root().join("_system")).unwrap();
        let err = vault.log_interaction(&entry("x"), now()).unwrap_err();
        assert!(
            matches!(&err, Error::FolderOutside { folder } if folder == "_system/logs"),
            "{err:?}"
        );
        assert!(names(&elsewhere).is_empty());
    }

    /// Issue 9: a crash leaves whole entries, or a last one cut short, which the next
    /// append closes so that its own heading starts a line.
    #[test]
    fn an_entry_cut_by_a_crash_is_closed_by_the_next_append() {
        let (_dir, vault) = vault();
        let logs = vault.root().join("_system/logs");
        fs::create_dir_all(&logs).unwrap();
        let cut = "# Interaction Log: 2024-05-01\n\n## 09:00:00\n- **Input:** Call Sa";
        fs::write(logs.join("2024-05-01.md"), cut).unwrap();
        vault.log_interaction(&entry("next"), now()).unwrap();
        assert_eq!(
            log_text(&vault, "2024-05-01"),
            format!("{cut} … *(cut off)*\n\n## 14:03:22\n- **Input:** next\n")
        );
        // An empty file (created, never written) gets its header.
        fs::write(logs.join("2024-05-02.md"), "").unwrap();
        vault
            .log_interaction(&entry("x"), at(2024, 5, 2, 8, 0, 0))
            .unwrap();
        assert!(
            log_text(&vault, "2024-05-02")
                .starts_with("# Interaction Log: 2024-05-02\n\n## 08:00:00\n")
        );
    }

    /// Issue 9: field sizes are capped, so one entry cannot grow the log without bound.
    #[test]
    fn long_fields_are_capped() {
        let (_dir, vault) = vault();
        let long = "é".repeat(MAX_LOG_FIELD_BYTES); // twice the cap in bytes
        let e = LogEntry {
            input: &long,
            reasoning: Some(&long),
            ..LogEntry::default()
        };
        vault.log_interaction(&e, now()).unwrap();
        let text = log_text(&vault, "2024-05-01");
        assert!(text.len() < 3 * MAX_LOG_FIELD_BYTES, "{}", text.len());
        assert_eq!(
            text.matches(&format!("… ({MAX_LOG_FIELD_BYTES} bytes more)"))
                .count(),
            2
        );
    }
}
