//! Reading one note back for the agent, confined to the vault.
//!
//! Invariants: only a regular `.md` file is read, never through a link at its own name, in
//! a folder whose real location is inside the vault and not hidden; at most
//! [`MAX_READ_BYTES`].

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::path::{Component, Path};

use super::confine::{self, open_regular};
use super::{Error, MAX_READ_BYTES, Vault, preview};

impl Vault {
    /// Returns the text of the note at `rel` (vault-relative). Refuses absolute paths, `..`,
    /// NUL bytes, hidden files and folders (`.obsidian`, `.git`, `.trash`, …), anything not
    /// ending in `.md`, anything whose real folder is outside the vault, anything that is
    /// not a regular file (a link, a FIFO, a device…), and files over 1 MiB.
    pub fn read_note(&self, rel: &str) -> Result<String, Error> {
        let path = checked_path(rel)?;
        let root = confine::real_root(&self.root)?;
        let name = path
            .file_name()
            .ok_or_else(|| Error::invalid("filepath", "no file name"))?;
        let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
            None => root.clone(),
            Some(parent) => match fs::canonicalize(root.join(parent)) {
                Ok(dir) => dir,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::NotFound { path: preview(rel) });
                }
                Err(e) => return Err(Error::io(&root.join(parent), e)),
            },
        };
        let Ok(inside) = dir.strip_prefix(&root) else {
            return Err(Error::Outside { path: preview(rel) });
        };
        if inside.components().any(|c| is_hidden(&c)) {
            return Err(hidden());
        }
        let real = dir.join(name);
        let file = open_regular(&real, OpenOptions::new().read(true))
            .map_err(|refused| confine::refused(rel, &real, refused))?;
        let meta = file.metadata().map_err(|e| Error::io(&real, e))?;
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
}

/// The path as asked for, checked before touching the disk.
fn checked_path(rel: &str) -> Result<&Path, Error> {
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
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(outside());
            }
            c if is_hidden(&c) => return Err(hidden()),
            Component::Normal(_) | Component::CurDir => {}
        }
    }
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("md"))
    {
        return Err(Error::invalid("filepath", "only .md notes can be read"));
    }
    Ok(path)
}

/// A name starting with `.`: Obsidian's settings, version control, the trash.
fn is_hidden(c: &Component) -> bool {
    matches!(c, Component::Normal(name) if name.as_encoded_bytes().starts_with(b"."))
}

fn hidden() -> Error {
    Error::invalid(
        "filepath",
        "hidden files and folders (.obsidian, .git, .trash, …) are not read",
    )
}
#[cfg(test)]
mod tests {
    use super::super::NewNote;
    use super::super::testing::*;
    use super::*;

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
            ("out.md", "not regular"),
            ("Escape/secret.md", "outside"),
            ("Tasks/ok\0.md", "invalid"),
            ("Tasks/plain.txt", "invalid"),
            ("Tasks/ok", "invalid"),
            ("", "invalid"),
            ("Tasks/dir.md", "not regular"),
            ("Tasks/big.md", "invalid"),
            ("Tasks/missing.md", "not found"),
        ];
        for (path, want) in cases {
            let got = match vault.read_note(path) {
                Err(Error::Outside { .. }) => "outside",
                Err(Error::Invalid { .. }) => "invalid",
                Err(Error::NotFound { .. }) => "not found",
                Err(Error::NotRegular { .. }) => "not regular",
                other => panic!("{path:?}: unexpected {other:?}"),
            };
            assert_eq!(got, want, "{path:?}");
        }
        // Issue 9: a link is never followed, even one that stays inside the vault.
        assert!(matches!(
            vault.read_note("in.md"),
            Err(Error::NotRegular {
                kind: "a symbolic link",
                ..
            })
        ));
    }

    /// Issue 9: `vault_read` read `.obsidian/…` files. No hidden file or folder is read,
    /// however the path reaches it.
    #[cfg(unix)]
    #[test]
    fn hidden_files_and_folders_are_never_read() {
        let (_dir, vault) = vault();
        for rel in [
            ".obsidian/x.md",
            ".git/notes.md",
            "Ideas/.trash/old.md",
            ".secret.md",
        ] {
            let path = vault.root().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "HIDDEN").unwrap();
        }
        fs::create_dir_all(vault.root().join("Ideas")).unwrap();
        std::os::unix::fs::symlink(
            vault.root().join(".obsidian"),
            vault.root().join("Ideas/cfg"),
        )
        .unwrap();
        for rel in [
            ".obsidian/x.md",
            "./.obsidian/x.md",
            ".git/notes.md",
            "Ideas/.trash/old.md",
            ".secret.md",
            "Ideas/cfg/x.md",
        ] {
            let err = vault.read_note(rel).unwrap_err();
            assert!(
                err.to_string().contains("hidden files and folders"),
                "{rel}: {err}"
            );
        }
    }

    /// Issue 9: a FIFO named `*.md` made `vault_read` block in `open` for good.
    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_device_at_a_note_path_is_refused_without_blocking() {
        let (_dir, vault) = vault();
        fs::create_dir_all(vault.root().join("Ideas")).unwrap();
        mkfifo(&vault.root().join("Ideas/pipe.md"));
        let err = vault.read_note("Ideas/pipe.md").unwrap_err();
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
        assert!(err.to_string().contains("only regular files"), "{err}");
        std::os::unix::fs::symlink("/dev/zero", vault.root().join("Ideas/zero.md")).unwrap();
        assert!(matches!(
            vault.read_note("Ideas/zero.md"),
            Err(Error::NotRegular {
                kind: "a symbolic link",
                ..
            })
        ));
    }
}
