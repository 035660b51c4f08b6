//! One bridge per data directory: an exclusive lock on `<data dir>/bridge.lock`.
//!
//! Invariant: while a bridge runs, the lock is held; state-changing CLI commands take the
//! same lock and refuse instead of racing it. The OS releases it when the process dies.
//! Taking it makes the data directory private (0700).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (a running bridge or the app) holds it.
    #[error(
        "Second Brain is running and owns {path}; stop it first, or use the app (or clear sessions \
         from its window)"
    )]
    Held {
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be opened.
    #[error("cannot open lock file {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Holds the data directory until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock without waiting.
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
        let path = data_dir.join("bridge.lock");
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        crate::persist::private_dir(data_dir).map_err(io_err)?;
        let file =
            crate::persist::private(OpenOptions::new().create(true).truncate(false).write(true))
                .open(&path)
                .map_err(io_err)?;
        match file.try_lock() {
            Ok(()) => Ok(DataDirLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::Held { path }),
            Err(TryLockError::Error(source)) => Err(LockError::Io { path, source }),
        }
    }

    /// Whether some process holds the lock right now.
    pub fn is_held(data_dir: &Path) -> bool {
        matches!(DataDirLock::acquire(data_dir), Err(LockError::Held { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }));
        assert!(err.to_string().contains("running"));
        assert!(DataDirLock::is_held(dir.path()));
        drop(first);
        assert!(!DataDirLock::is_held(dir.path()));
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
