//! Writing notes: frontmatter, title heading and body, under a file name that never
//! replaces another note.
//!
//! Invariants: a note is written whole under a hidden temporary name and then hard-linked
//! to its name, which fails rather than replace a note, so two writers never share a name,
//! a reader never sees half a note, and a crash never leaves an empty one; a note with a
//! given `source` and title is written at most once per folder.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use chrono::{DateTime, Local, SecondsFormat};
use serde::Serialize;

use super::tags::normalize_tags;
use super::{
    Error, Folder, MAX_CONTENT_BYTES, MAX_TITLE_BYTES, PROBE_COUNTER, Vault, check_confidence,
    check_text, confine, lock,
};

/// Longest slug in a note's file name, in characters.
const MAX_SLUG_CHARS: usize = 50;
/// How many suffixed names (`-1`, `-2`, …) are tried before giving up.
const MAX_NAME_ATTEMPTS: u32 = 100_000;

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
    /// The agent's confidence in the filing, 0–100; 0 for a text the bridge filed itself.
    pub confidence: u8,
    /// Where the note came from, e.g. `imessage:<message guid>`; makes the write idempotent.
    pub source: Option<&'a str>,
}

#[derive(Serialize)]
struct FrontMatter<'a> {
    created: String,
    tags: &'a [String],
    confidence: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

impl Vault {
    /// Creates a note and returns its vault-relative path, `<folder>/<YYYY-MM-DD>_<slug>.md`
    /// (`-1`, `-2`, … appended when the name is taken). When `source` is given and a note in
    /// the folder already has that source and title, returns that note's path instead.
    pub fn write_note(&self, note: &NewNote, now: DateTime<Local>) -> Result<String, Error> {
        self.write_note_with_url(note, None, now)
    }

    /// [`Vault::write_note`] with `url: <url>` in the frontmatter (a note about a link).
    pub fn write_note_with_url(
        &self,
        note: &NewNote,
        url: Option<&str>,
        now: DateTime<Local>,
    ) -> Result<String, Error> {
        if let Some(url) = url {
            check_text("url", url, MAX_TITLE_BYTES)?;
        }
        let title = heading_text(note.title)?;
        check_text("content", note.content, MAX_CONTENT_BYTES)?;
        let tags = normalize_tags(note.tags)?;
        check_confidence(note.confidence)?;
        if let Some(source) = note.source {
            check_text("source", source, MAX_TITLE_BYTES)?;
        }

        let front = FrontMatter {
            created: now.to_rfc3339_opts(SecondsFormat::Secs, false),
            tags: &tags,
            confidence: note.confidence,
            source: note.source,
            url,
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

        let root = confine::real_root(&self.root)?;
        let _guard = lock(&self.shared.write_lock);
        let dir = confine::folder(&root, note.folder.as_str(), true)?;
        if let Some(source) = note.source
            && let Some(existing) = self.find_by_source(note.folder, source, &title)?
        {
            tracing::debug!(path = ?existing, "note for this source already written");
            return Ok(existing);
        }
        let stem = format!("{}_{}", now.format("%Y-%m-%d"), slugify(&title));
        let name = create_file(&dir, &stem, "md", text.as_bytes())?;
        Ok(format!("{}/{name}", note.folder.as_str()))
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
}

/// Writes `bytes` as a new file `<stem>.<ext>` in `dir` (`<stem>-<n>.<ext>` when the name
/// is taken) and returns its file name. The whole note is written and flushed under a hidden
/// temporary name, then hard-linked to its name — a link fails rather than replace a note —
/// so a crash at any moment leaves no note or the whole note (and at most a hidden
/// temporary file), never an empty one. Where hard links are not supported (some external
/// drives) the name is reserved with an exclusive create and the note renamed over it.
pub(super) fn create_file(
    dir: &Path,
    stem: &str,
    ext: &str,
    bytes: &[u8],
) -> Result<String, Error> {
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
    let named = link_to_free_name(dir, stem, ext, &tmp);
    // After a link the temporary name is a second name of the note; after the fallback's
    // rename, or a failure, it is gone or unwanted.
    let _ = fs::remove_file(&tmp);
    let name = named?;
    crate::persist::sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(name)
}

/// Gives the written file `tmp` the first free name `<stem>.md`, `<stem>-1.md`, ….
fn link_to_free_name(dir: &Path, stem: &str, ext: &str, tmp: &Path) -> Result<String, Error> {
    for n in 0..MAX_NAME_ATTEMPTS {
        let name = if n == 0 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{n}.{ext}")
        };
        match fs::hard_link(tmp, dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(_) => {
                let (name, path) = reserve_name(dir, stem, ext)?;
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

fn reserve_name(dir: &Path, stem: &str, ext: &str) -> Result<(String, PathBuf), Error> {
    for n in 0..MAX_NAME_ATTEMPTS {
        let name = if n == 0 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{n}.{ext}")
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
pub(crate) fn slugify(title: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::super::list::{parse_header, yaml_tags};
    use super::super::testing::*;
    use super::super::{ListQuery, MAX_TAGS};
    use super::*;
    use serde_yaml_ng::Value as Yaml;

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
    fn note_bytes_are_exact_and_frontmatter_parses_back() {
        let (_dir, vault) = vault();
        // Issue 9: `topic/a:b` is no tag to Obsidian; a leading `#` and spaces are repaired.
        let tags = vec!["#person/sarah".to_string(), "topic/a b".to_string()];
        let new = NewNote {
            folder: Folder::Reference,
            title: "Re: \"quoted\" – yes",
            content: "First line\r\n- item\n\n",
            tags: &tags,
            confidence: 85,
            source: Some("imessage:ABC-123"),
        };
        let rel = vault.write_note(&new, now()).unwrap();
        assert_eq!(rel, "Reference/2024-05-01_re-quoted-yes.md");
        let bytes = fs::read_to_string(vault.root().join(&rel)).unwrap();
        let created = format!("2024-05-01T14:03:22{}", now().format("%:z"));
        let want = format!(
            "---\ncreated: {created}\ntags:\n- person/sarah\n- topic/a-b\nconfidence: 85\n\
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
        assert_eq!(yaml_tags(value.get("tags")), ["person/sarah", "topic/a-b"]);
    }

    #[test]
    fn frontmatter_stays_valid_yaml_for_awkward_values() {
        let (_dir, vault) = vault();
        let tags: Vec<String> = [
            "yes",
            "null",
            "true",
            "1e3",
            "0x1F",
            "-z",
            "_",
            "ü/ß",
            "日本語",
            "नमस्ते",
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
        let spaced = vec!["a:b".to_string()];
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
                    confidence: 101,
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

    /// Issue 9: with `Tasks -> /elsewhere`, `vault_write` put the note in `/elsewhere`.
    #[cfg(unix)]
    #[test]
    fn a_content_folder_linked_outside_the_vault_is_refused_for_writes() {
        let (dir, vault) = vault();
        let elsewhere = dir.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, vault.root().join("Tasks")).unwrap();
        let err = vault.write_note(&note("Escape"), now()).unwrap_err();
        assert!(
            matches!(&err, Error::FolderOutside { folder } if folder == "Tasks"),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("Tasks points outside the vault"),
            "{err}"
        );
        assert!(names(&elsewhere).is_empty(), "nothing written outside");
        // A folder linked inside the vault is used like any other.
        fs::create_dir_all(vault.root().join("Real")).unwrap();
        std::os::unix::fs::symlink(vault.root().join("Real"), vault.root().join("Ideas")).unwrap();
        let rel = vault
            .write_note(
                &NewNote {
                    folder: Folder::Ideas,
                    ..note("Inside")
                },
                now(),
            )
            .unwrap();
        assert_eq!(rel, "Ideas/2024-05-01_inside.md");
        assert_eq!(names(&vault.root().join("Real")), ["2024-05-01_inside.md"]);
    }

    /// Issue 9: notes were written without `confidence`. Every note has `created`, `tags`
    /// and `confidence` (0 for what the bridge files itself), even with no tags.
    #[test]
    fn every_note_has_created_tags_and_confidence() {
        let (_dir, vault) = vault();
        let inbox = NewNote {
            folder: Folder::Inbox,
            confidence: 0,
            ..note("Unfiled")
        };
        let rel = vault.write_note(&inbox, now()).unwrap();
        let text = fs::read_to_string(vault.root().join(rel)).unwrap();
        let yaml = text
            .strip_prefix("---\n")
            .unwrap()
            .split("---\n")
            .next()
            .unwrap();
        let value: Yaml = serde_yaml_ng::from_str(yaml).unwrap();
        assert!(
            value.get("created").and_then(Yaml::as_str).is_some(),
            "{text}"
        );
        assert_eq!(
            value.get("tags"),
            Some(&Yaml::Sequence(Vec::new())),
            "{text}"
        );
        assert_eq!(
            value.get("confidence").and_then(Yaml::as_u64),
            Some(0),
            "{text}"
        );
    }

    /// Issue 9: notes keep the user's umask (only state files are made private).
    #[cfg(unix)]
    #[test]
    fn notes_keep_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let (dir, vault) = vault();
        let rel = vault.write_note(&note("Mode"), now()).unwrap();
        let probe = dir.path().join("probe");
        fs::File::create(&probe).unwrap(); // 0666 less the umask, as any new file
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&vault.root().join(rel)), mode(&probe));
    }
}
