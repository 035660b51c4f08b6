//! Moving a note to another content folder under the same file name (so Obsidian's
//! `[[links]]` by name still resolve), and archiving: the note moved to `Archive/` is
//! stamped `archived_at` and `original_folder`, a task gets `status/done`, and its reminder
//! is removed.
//!
//! Invariants: the note is never lost or replaced: its new text is written whole under a
//! free name in the target folder (`<name>-1.md`, `-2`, … when taken; never over another
//! note) before the old one is removed, and the old one is removed only if it still holds
//! the bytes that were read (a note edited meanwhile is moved again from its new text); a
//! crash in between leaves both copies, never none. Both paths are confined like a read.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, SecondsFormat};

use super::{Error, Folder, Vault, confine, write::create_file};
use crate::reminders::frontmatter::{set_field, tags_lines};

/// How many times a note that changes while it is being moved is read again.
const ATTEMPTS: usize = 5;

/// Where a note went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Its old vault path.
    pub from: String,
    /// Its new vault path.
    pub to: String,
}

impl Vault {
    /// The real path of the existing note at `rel`, checked as [`Vault::read_note`] checks it.
    pub fn note_file(&self, rel: &str) -> Result<PathBuf, Error> {
        self.read_note(rel)?;
        let root = confine::real_root(&self.root)?;
        let path = Path::new(rel);
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid("filepath", "no file name"))?;
        let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => root,
            Some(parent) => {
                fs::canonicalize(root.join(parent)).map_err(|e| Error::io(&root.join(parent), e))?
            }
        };
        Ok(dir.join(name))
    }

    /// Moves the note at `rel` into `folder`, keeping its file name; into `Archive` it is
    /// stamped as archived at `now` (see the module doc).
    pub fn move_note(
        &self,
        rel: &str,
        folder: Folder,
        now: DateTime<Local>,
    ) -> Result<Moved, Error> {
        let from = self.note_file(rel)?;
        let root = confine::real_root(&self.root)?;
        let original = rel.split('/').next().unwrap_or_default().to_string();
        let dir = confine::folder(&root, folder.as_str(), true)?;
        if from.parent() == Some(dir.as_path()) {
            return Err(Error::invalid(
                "folder",
                format!("the note is already in {folder}"),
            ));
        }
        let name = from
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid("filepath", "the file name is not UTF-8"))?;
        let stem = name.strip_suffix(".md").unwrap_or(name);
        for _ in 0..ATTEMPTS {
            let before = fs::read(&from).map_err(|e| Error::io(&from, e))?;
            let text = String::from_utf8(before.clone())
                .map_err(|_| Error::invalid("filepath", "the note is not UTF-8 text"))?;
            let text = match folder {
                Folder::Archive => archived(rel, &text, &original, now),
                _ => text,
            };
            let new_name = create_file(&dir, stem, "md", text.as_bytes())?;
            let to = dir.join(&new_name);
            if fs::read(&from).map_err(|e| Error::io(&from, e))? != before {
                let _ = fs::remove_file(&to);
                continue;
            }
            fs::remove_file(&from).map_err(|e| Error::io(&from, e))?;
            if let Some(parent) = from.parent() {
                crate::persist::sync_dir(parent).map_err(|e| Error::io(parent, e))?;
            }
            return Ok(Moved {
                from: rel.to_string(),
                to: format!("{}/{new_name}", folder.as_str()),
            });
        }
        Err(Error::invalid(
            "filepath",
            "the note kept changing while it was being moved; try again",
        ))
    }
}

/// `text` (the note at `rel`, from `original_folder`) stamped as archived at `now`: its
/// reminder removed, `archived_at` and `original_folder` set, and a task's `status/…` tag
/// made `status/done` (tags written as [`super::write`] writes them).
pub fn archived(rel: &str, text: &str, original_folder: &str, now: DateTime<Local>) -> String {
    let mut text = set_field(text, "reminder", None);
    let at = now.to_rfc3339_opts(SecondsFormat::Secs, false);
    text = set_field(&text, "archived_at", Some(&format!("archived_at: {at}\n")));
    let folder = format!("original_folder: {original_folder}\n");
    text = set_field(&text, "original_folder", Some(&folder));
    if original_folder == Folder::Tasks.as_str() {
        let mut tags: Vec<String> = crate::search::note::parse(rel, &text)
            .tags
            .into_iter()
            .filter(|t| !t.to_ascii_lowercase().starts_with("status/"))
            .collect();
        tags.push("status/done".into());
        text = set_field(&text, "tags", Some(&tags_lines(&tags)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const TASK: &str = "---\ncreated: 2026-12-01T09:00:00+01:00\ntags:\n- priority/normal\n- status/active\nconfidence: 90\nreminder:\n  due: 2026-12-03T17:00:00+01:00\n  sent: false\n---\n# Call the dentist\n\n- [ ] Call the dentist 📅 2026-12-03\n";

    fn now() -> DateTime<Local> {
        Local.with_ymd_and_hms(2026, 12, 2, 18, 30, 0).unwrap()
    }

    #[test]
    fn archiving_stamps_the_note_and_keeps_everything_else() {
        let at = now().to_rfc3339_opts(SecondsFormat::Secs, false);
        assert_eq!(
            archived("Tasks/a.md", TASK, "Tasks", now()),
            format!(
                "---\ncreated: 2026-12-01T09:00:00+01:00\ntags:\n- priority/normal\n- status/done\nconfidence: 90\narchived_at: {at}\noriginal_folder: Tasks\n---\n# Call the dentist\n\n- [ ] Call the dentist 📅 2026-12-03\n"
            )
        );
        // Not a task: tags untouched; no frontmatter: one is made.
        let idea = "# Bird feeder camera\n";
        assert_eq!(
            archived("Ideas/b.md", idea, "Ideas", now()),
            format!("---\narchived_at: {at}\noriginal_folder: Ideas\n---\n# Bird feeder camera\n")
        );
    }

    #[test]
    fn a_move_keeps_the_name_and_takes_the_next_free_one() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path());
        vault.check_writable().unwrap();
        let put = |rel: &str, text: &str| fs::write(dir.path().join(rel), text).unwrap();
        put("Tasks/2026-12-01_call.md", TASK);
        put("Archive/2026-12-01_call.md", "an older note of that name\n");
        let moved = vault
            .move_note("Tasks/2026-12-01_call.md", Folder::Archive, now())
            .unwrap();
        assert_eq!(moved.to, "Archive/2026-12-01_call-1.md");
        assert!(!dir.path().join("Tasks/2026-12-01_call.md").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join("Archive/2026-12-01_call.md")).unwrap(),
            "an older note of that name\n"
        );
        let text = fs::read_to_string(dir.path().join(&moved.to)).unwrap();
        assert!(text.contains("original_folder: Tasks\n") && !text.contains("reminder:"));
        // Out again to Projects: the same name, the text as it is.
        let back = vault.move_note(&moved.to, Folder::Projects, now()).unwrap();
        assert_eq!(back.to, "Projects/2026-12-01_call-1.md");
        assert_eq!(fs::read_to_string(dir.path().join(&back.to)).unwrap(), text);
        assert!(matches!(
            vault.move_note(&back.to, Folder::Projects, now()),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            vault.move_note("../outside.md", Folder::Archive, now()),
            Err(Error::Outside { .. } | Error::Invalid { .. })
        ));
        assert!(matches!(
            vault.move_note("Tasks/none.md", Folder::Archive, now()),
            Err(Error::NotFound { .. })
        ));
    }
}
