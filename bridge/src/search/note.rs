//! What the index keeps of one note: title, tags, created and body, read from its Markdown.
//!
//! Invariants: never fails (whatever cannot be parsed is left out, like a listing does);
//! CRLF and a byte-order mark read like LF; the title is the first `# ` heading outside a code
//! fence, else the file name; the body is the text after the frontmatter.

use serde_yaml_ng::Value as Yaml;

/// One note as the index sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The first `# ` heading, else the file name without `.md`.
    pub title: String,
    /// The frontmatter `tags`, without `#`.
    pub tags: Vec<String>,
    /// The frontmatter `created`, as written.
    pub created: Option<String>,
    /// The frontmatter `reminder: {due, sent}` (set by `vault_set_reminder`), when it has a due.
    pub reminder: Option<Reminder>,
    /// Everything after the frontmatter but the title's heading line, line ends as LF.
    pub body: String,
}

/// A note's reminder, as its frontmatter has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reminder {
    /// When, as written (ISO 8601).
    pub due: String,
    /// Whether it was texted already.
    pub sent: bool,
}

/// Parses `text`, the note at vault-relative `rel`.
pub fn parse(rel: &str, text: &str) -> Parsed {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n");
    let (yaml, body) = split_frontmatter(&text);
    let mut parsed = Parsed::default();
    if let Some(value) = yaml.and_then(|y| serde_yaml_ng::from_str::<Yaml>(y).ok()) {
        parsed.tags = crate::vault::frontmatter_tags(value.get("tags"));
        parsed.created = value
            .get("created")
            .and_then(crate::vault::frontmatter_scalar);
        parsed.reminder = value.get("reminder").and_then(|r| {
            Some(Reminder {
                due: r.get("due").and_then(crate::vault::frontmatter_scalar)?,
                sent: r.get("sent").and_then(Yaml::as_bool).unwrap_or(false),
            })
        });
    }
    match heading(body) {
        Some((line, title)) => {
            parsed.title = title;
            parsed.body = body
                .split_inclusive('\n')
                .enumerate()
                .filter(|(i, _)| *i != line)
                .map(|(_, l)| l)
                .collect();
        }
        None => {
            parsed.title = stem(rel);
            parsed.body = body.to_string();
        }
    }
    parsed
}

/// `(frontmatter, body)`; no frontmatter (or one never closed) leaves all of it body.
fn split_frontmatter(text: &str) -> (Option<&str>, &str) {
    let Some(rest) = text.strip_prefix("---\n") else {
        return (None, text);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if matches!(line.trim_end(), "---" | "...") {
            return (Some(&rest[..offset]), &rest[offset + line.len()..]);
        }
        offset += line.len();
    }
    (None, text)
}

/// The first `# ` heading outside a code fence: its line number and its text.
fn heading(body: &str) -> Option<(usize, String)> {
    let mut fenced = false;
    for (i, line) in body.lines().enumerate() {
        if line.starts_with("```") || line.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced && let Some(title) = line.strip_prefix("# ") {
            let title = title.trim();
            if !title.is_empty() {
                return Some((i, title.to_string()));
            }
        }
    }
    None
}

fn stem(rel: &str) -> String {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.strip_suffix(".md")
        .or_else(|| name.strip_suffix(".MD"))
        .unwrap_or(name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_as_obsidian_writes_them() {
        let cases: &[(&str, &str, Parsed)] = &[
            (
                "Tasks/a.md",
                "---\ncreated: 2026-01-02T09:00:00+01:00\ntags:\n  - person/sarah\n  - \"#Work\"\nreminder:\n  due: 2026-01-03T09:00:00+01:00\n  sent: false\n---\n# Call Sarah\n\nAbout the offsite.\n",
                Parsed {
                    reminder: Some(Reminder {
                        due: "2026-01-03T09:00:00+01:00".into(),
                        sent: false,
                    }),
                    title: "Call Sarah".into(),
                    tags: vec!["person/sarah".into(), "Work".into()],
                    created: Some("2026-01-02T09:00:00+01:00".into()),
                    body: "\nAbout the offsite.\n".into(),
                },
            ),
            (
                "Ideas/deep/Nested idea.md",
                "No heading, no frontmatter.\r\nSecond line.\r\n",
                Parsed {
                    title: "Nested idea".into(),
                    body: "No heading, no frontmatter.\nSecond line.\n".into(),
                    ..Parsed::default()
                },
            ),
            (
                "Reference/r.md",
                "\u{feff}---\r\ntags: books, topic/reading\r\n---\r\n```\n# not a title\n```\n# 東京の本\n",
                Parsed {
                    title: "東京の本".into(),
                    tags: vec!["books".into(), "topic/reading".into()],
                    body: "```\n# not a title\n```\n".into(),
                    ..Parsed::default()
                },
            ),
            (
                "Inbox/u.md",
                "---\ntags: [unclosed\n# Title\n",
                Parsed {
                    title: "Title".into(),
                    body: "---\ntags: [unclosed\n".into(),
                    ..Parsed::default()
                },
            ),
            (
                "Inbox/bad.md",
                "---\ntags: [a, b\n---\nbody\n",
                Parsed {
                    title: "bad".into(),
                    body: "body\n".into(),
                    ..Parsed::default()
                },
            ),
            (
                "Inbox/empty.md",
                "",
                Parsed {
                    title: "empty".into(),
                    ..Parsed::default()
                },
            ),
        ];
        for (rel, text, want) in cases {
            assert_eq!(&parse(rel, text), want, "{rel}");
        }
    }
}
