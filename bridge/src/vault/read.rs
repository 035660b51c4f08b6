//! Reading one note back for the agent, confined to the vault.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Component, Path};

use super::{Error, MAX_READ_BYTES, Vault, preview};

impl Vault {
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
}
