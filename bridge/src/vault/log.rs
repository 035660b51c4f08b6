//! The daily interaction log, `_system/logs/<YYYY-MM-DD>.md`.

use std::fs;
use std::io;

use chrono::{DateTime, Local};

use super::tags::normalize_tags;
use super::{Error, LOG_DIR, MAX_CONTENT_BYTES, Vault, check_confidence, check_text, lock};

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
}
