//! Where the vault's files really are, and opening only what is a regular file there.
//!
//! Invariants: the root is resolved (canonical) once per operation and must be a real
//! folder that is not `/`, the home folder or a system folder; a folder inside it (a content
//! folder, `_system/logs`) is resolved step by step without trusting links: a link that
//! stays inside the root is followed, one that leaves it makes the folder
//! [`Error::FolderOutside`]; a file is checked with `symlink_metadata` and opened with
//! `O_NOFOLLOW | O_NONBLOCK`, then checked again on the open handle, so a link, a FIFO, a
//! socket or a device is refused and never blocks the caller.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::{Error, preview};

/// The vault root as it really is: an existing folder, canonical, and a place a vault may be.
pub(super) fn real_root(root: &Path) -> Result<PathBuf, Error> {
    let real = match fs::canonicalize(root) {
        Ok(real) => real,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                path: root.display().to_string(),
            });
        }
        Err(e) => return Err(Error::io(root, e)),
    };
    let meta = fs::metadata(&real).map_err(|e| Error::io(&real, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "vault",
            format!("{} is not a folder", root.display()),
        ));
    }
    check_vault_place(
        &real,
        dirs::home_dir()
            .and_then(|h| fs::canonicalize(h).ok())
            .as_deref(),
    )
    .map_err(|reason| Error::invalid("vault", reason))?;
    Ok(real)
}

/// Folders that hold the system or other people's files: never a vault, nor anything in
/// them.
const SYSTEM_TREES: &[&str] = &[
    "/System",
    "/usr",
    "/bin",
    "/sbin",
    "/etc",
    "/dev",
    "/proc",
    "/sys",
    "/boot",
    "/lib",
    "/lib64",
    "/private/etc",
    "/private/var/db",
    "/cores",
];
/// Folders that are never a vault themselves (a vault may sit inside them).
const SYSTEM_FOLDERS: &[&str] = &[
    "/",
    "/Users",
    "/Volumes",
    "/Applications",
    "/Library",
    "/Network",
    "/private",
    "/private/tmp",
    "/private/var",
    "/tmp",
    "/var",
    "/opt",
    "/home",
    "/root",
    "/mnt",
    "/media",
    "/srv",
];

/// Why `real` (a canonical folder) cannot be a vault, if it cannot: the whole disk, the
/// home folder (or its `Library`), or a system folder.
pub fn check_vault_place(real: &Path, home: Option<&Path>) -> Result<(), String> {
    let shown = real.display();
    if real == Path::new("/") {
        return Err(format!(
            "{shown} is the whole disk, not a vault: choose your Obsidian vault's folder"
        ));
    }
    if let Some(home) = home {
        if real == home {
            return Err(format!(
                "{shown} is your home folder, not a vault: choose your Obsidian vault's folder"
            ));
        }
        if real == home.join("Library") {
            return Err(format!(
                "{shown} is a system folder, not a vault: choose your Obsidian vault's folder"
            ));
        }
    }
    let system = SYSTEM_FOLDERS.iter().any(|f| real == Path::new(f))
        || SYSTEM_TREES.iter().any(|t| real.starts_with(t));
    if system {
        return Err(format!(
            "{shown} is a system folder, not a vault: choose your Obsidian vault's folder"
        ));
    }
    Ok(())
}

/// Where the folder `rel` (`/`-separated, e.g. `Tasks` or `_system/logs`) really is under
/// the canonical `root`. Missing levels are created when `create` is set, else reported as
/// [`Error::NotFound`]; a level that is a link out of the vault (or a dangling one) makes
/// it [`Error::FolderOutside`]; a level that is not a folder is refused.
pub(super) fn folder(root: &Path, rel: &str, create: bool) -> Result<PathBuf, Error> {
    let mut at = root.to_path_buf();
    for level in rel.split('/') {
        let next = at.join(level);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.is_dir() => at = next,
            Ok(meta) if meta.file_type().is_symlink() => {
                let outside = || Error::FolderOutside {
                    folder: rel.to_string(),
                };
                let target = fs::canonicalize(&next).map_err(|_| outside())?;
                if !target.starts_with(root) || !target.is_dir() {
                    return Err(outside());
                }
                at = target;
            }
            Ok(meta) => {
                return Err(Error::invalid(
                    "folder",
                    format!("{rel} is {}, not a folder", kind(meta.file_type())),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match fs::create_dir(&next) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        // Made meanwhile (by another writer, or a link put there): look again.
                        return folder(root, rel, create);
                    }
                    Err(e) => return Err(Error::io(&next, e)),
                }
                at = next;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    path: rel.to_string(),
                });
            }
            Err(e) => return Err(Error::io(&next, e)),
        }
    }
    Ok(at)
}

/// Why a path was not opened.
#[derive(Debug)]
pub(super) enum Refused {
    /// Nothing there.
    Missing,
    /// Something that is not a regular file: a link, a folder, a FIFO, a socket, a device.
    NotRegular(&'static str),
    /// The file system failed.
    Io(io::Error),
}

/// Opens `path` with `options` only if it is a regular file: checked without following a
/// link, opened with `O_NOFOLLOW | O_NONBLOCK` (a link, or a FIFO without a writer, can
/// neither be followed nor block), and checked again on the open handle.
pub(super) fn open_regular(path: &Path, options: &OpenOptions) -> Result<File, Refused> {
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(Refused::NotRegular(kind(meta.file_type()))),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Refused::Io(e)),
    }
    let mut options = options.clone();
    no_follow_no_block(&mut options);
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Refused::Missing),
        Err(e) if is_link_refusal(&e) => return Err(Refused::NotRegular("a symbolic link")),
        Err(e) => return Err(Refused::Io(e)),
    };
    let meta = file.metadata().map_err(Refused::Io)?;
    if !meta.is_file() {
        return Err(Refused::NotRegular(kind(meta.file_type())));
    }
    Ok(file)
}

#[cfg(unix)]
fn no_follow_no_block(options: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt as _;
    // open(2): O_NOFOLLOW fails with ELOOP when the last component is a symbolic link;
    // O_NONBLOCK makes opening a FIFO return at once instead of waiting for its other end,
    // and is ignored for regular files.
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
}

#[cfg(not(unix))]
fn no_follow_no_block(_: &mut OpenOptions) {}

#[cfg(unix)]
fn is_link_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ELOOP)
}

#[cfg(not(unix))]
fn is_link_refusal(_: &io::Error) -> bool {
    false
}

/// What a file that is not a regular file is, for messages.
fn kind(t: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// The vault error for a file at `path` (asked for as `rel`) that was not opened.
pub(super) fn refused(rel: &str, path: &Path, refused: Refused) -> Error {
    match refused {
        Refused::Missing => Error::NotFound { path: preview(rel) },
        Refused::NotRegular(kind) => Error::NotRegular {
            path: preview(rel),
            kind,
        },
        Refused::Io(e) => Error::io(path, e),
    }
}
