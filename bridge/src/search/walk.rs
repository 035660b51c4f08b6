//! Finds the notes the index covers: `.md` files under the content folders, with their
//! modification time and length.
//!
//! Invariants: nothing outside the vault is visited (symlinks are not followed, a content
//! folder that is a link is only entered when it resolves inside the vault); hidden entries
//! and `_system/` are never covered; the depth is bounded.

use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use crate::vault::Folder;

/// How deep the walk descends into a content folder.
const MAX_DEPTH: usize = 8;

/// A note on disk, as the freshness check compares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Length in bytes.
    pub size: i64,
}

/// Whether `rel` (vault-relative, `/` separators) is a path the index covers: inside a
/// content folder, no hidden component, ending in `.md`.
pub fn is_covered(rel: &str) -> bool {
    let mut parts = rel.split('/');
    let Some(top) = parts.next() else {
        return false;
    };
    Folder::ALL.iter().any(|f| f.as_str() == top)
        && rel.split('/').all(|p| !p.is_empty() && !p.starts_with('.'))
        && has_md_extension(rel)
}

fn has_md_extension(rel: &str) -> bool {
    Path::new(rel)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("md"))
}

/// The stamp of one file, `None` when it is not a regular file (gone, a link, a FIFO).
pub fn stamp(abs: &Path) -> Option<Stamp> {
    let meta = fs::symlink_metadata(abs).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    Some(Stamp {
        mtime_ns,
        size: i64::try_from(meta.len()).unwrap_or(i64::MAX),
    })
}

/// Every covered note under `rel` (a content folder, a folder inside one, or one note),
/// pushed onto `out` as `(vault-relative path, stamp)`. `rel` empty means the whole vault.
pub fn under(root: &Path, rel: &str, out: &mut Vec<(String, Stamp)>) {
    if rel.is_empty() {
        for folder in Folder::ALL {
            under(root, folder.as_str(), out);
        }
        return;
    }
    let abs = root.join(rel);
    let Ok(meta) = fs::symlink_metadata(&abs) else {
        return;
    };
    if meta.file_type().is_file() {
        if is_covered(rel)
            && let Some(stamp) = stamp(&abs)
        {
            out.push((rel.to_string(), stamp));
        }
        return;
    }
    let is_top = !rel.contains('/');
    if meta.file_type().is_symlink() && !(is_top && resolves_inside(root, &abs)) {
        return;
    }
    if fs::metadata(&abs).is_ok_and(|m| m.is_dir()) {
        walk_dir(&abs, rel, rel.matches('/').count(), out);
    }
}

fn resolves_inside(root: &Path, abs: &Path) -> bool {
    match (fs::canonicalize(root), fs::canonicalize(abs)) {
        (Ok(root), Ok(target)) => target.starts_with(root),
        _ => false,
    }
}

fn walk_dir(dir: &Path, rel_dir: &str, depth: usize, out: &mut Vec<(String, Stamp)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let rel = format!("{rel_dir}/{name}");
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                walk_dir(&entry.path(), &rel, depth + 1, out);
            }
        } else if kind.is_file()
            && has_md_extension(&name)
            && let Some(stamp) = stamp(&entry.path())
        {
            out.push((rel, stamp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_notes_in_content_folders_are_covered() {
        for rel in ["Tasks/a.md", "Ideas/x/y/Z.MD", "Archive/é.md"] {
            assert!(is_covered(rel), "{rel}");
        }
        for rel in [
            "_system/logs/2026-01-01.md",
            "Tasks/.hidden.md",
            "Tasks/.obsidian/x.md",
            "Notes/a.md",
            "a.md",
            "Tasks/a.txt",
            "Tasks//a.md",
            "tasks/a.md",
        ] {
            assert!(!is_covered(rel), "{rel}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_walk_stays_in_the_vault() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("Tasks/deep")).unwrap();
        fs::create_dir_all(root.join("Tasks/.trash")).unwrap();
        fs::create_dir_all(root.join("_system/logs")).unwrap();
        fs::write(root.join("Tasks/a.md"), "a").unwrap();
        fs::write(root.join("Tasks/deep/b.md"), "bb").unwrap();
        fs::write(root.join("Tasks/.trash/c.md"), "c").unwrap();
        fs::write(root.join("Tasks/notes.txt"), "c").unwrap();
        fs::write(root.join("_system/logs/l.md"), "l").unwrap();
        fs::write(outside.path().join("secret.md"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("Ideas")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.md"), root.join("Tasks/s.md"))
            .unwrap();
        let mut found = Vec::new();
        under(root, "", &mut found);
        let mut paths: Vec<(String, i64)> =
            found.iter().map(|(p, s)| (p.clone(), s.size)).collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                ("Tasks/a.md".to_string(), 1),
                ("Tasks/deep/b.md".to_string(), 2)
            ]
        );
        let mut one = Vec::new();
        under(root, "Tasks/deep/b.md", &mut one);
        assert_eq!(one.len(), 1);
        let mut gone = Vec::new();
        under(root, "Tasks/missing.md", &mut gone);
        assert!(gone.is_empty());
    }
}
