//! Copies of attachments in the vault: written whole, then linked to a free name, as notes
//! are ([`super::write`]), so a copy never replaces a file and is never seen half-written.

use chrono::{DateTime, Local};

use super::write::{create_file, slugify};
use super::{Error, Vault, confine, lock};

impl Vault {
    /// Stores `bytes` as `<folder>/<YYYY-MM-DD>_<slug of name>.<ext>` (`-1`, `-2`, … when
    /// taken) and returns its vault-relative path. `folder` is vault-relative, `""` for the
    /// root; missing levels are created, a level linking out of the vault is refused.
    pub fn store_attachment(
        &self,
        folder: &str,
        name: &str,
        ext: &str,
        bytes: &[u8],
        now: DateTime<Local>,
    ) -> Result<String, Error> {
        let ext: String = ext
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(10)
            .collect::<String>()
            .to_ascii_lowercase();
        let ext = if ext.is_empty() {
            "bin".to_string()
        } else {
            ext
        };
        let root = confine::real_root(&self.root)?;
        let _guard = lock(&self.shared.write_lock);
        let dir = if folder.is_empty() {
            root.clone()
        } else {
            confine::folder(&root, folder, true)?
        };
        let stem = format!("{}_{}", now.format("%Y-%m-%d"), slugify(name));
        let file = create_file(&dir, &stem, &ext, bytes)?;
        Ok(if folder.is_empty() {
            file
        } else {
            format!("{folder}/{file}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn copies_are_new_files_never_replacing_one() {
        let (_dir, vault) = vault();
        let now = at(2026, 12, 2, 9, 0, 0);
        let a = vault
            .store_attachment("Attachments", "IMG_0001", "JPG", b"one", now)
            .unwrap();
        let b = vault
            .store_attachment("Attachments", "IMG_0001", "jpg", b"two", now)
            .unwrap();
        let c = vault
            .store_attachment("", "scan", "pdf", b"three", now)
            .unwrap();
        assert_eq!(a, "Attachments/2026-12-02_img0001.jpg");
        assert_eq!(b, "Attachments/2026-12-02_img0001-1.jpg");
        assert_eq!(c, "2026-12-02_scan.pdf");
        assert_eq!(std::fs::read(vault.root().join(&a)).unwrap(), b"one");
        assert_eq!(std::fs::read(vault.root().join(&b)).unwrap(), b"two");
        assert_eq!(
            names(&vault.root().join("Attachments")).len(),
            2,
            "no temporary left"
        );
    }

    #[test]
    fn a_folder_linking_out_of_the_vault_is_refused() {
        let (_dir, vault) = vault();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), vault.root().join("Attachments")).unwrap();
        let err = vault
            .store_attachment("Attachments", "x", "jpg", b"x", now())
            .unwrap_err();
        assert!(err.to_string().contains("outside the vault"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
