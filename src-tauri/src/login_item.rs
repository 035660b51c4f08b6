//! "Launch at Login" as a per-user LaunchAgent: `~/Library/LaunchAgents/<bundle id>.plist`.
//!
//! Invariants: the plist is generated with the `plist` crate, never by string pasting; launchd
//! starts the app at login (`RunAtLoad`) and restarts it only after an unsuccessful exit
//! (`KeepAlive` = `{SuccessfulExit: false}`), so a crash brings it back and Quit (exit 0) does
//! not; the file is written to a temporary name and renamed, so launchd never reads half a
//! plist; removing an absent agent is not an error. Works under any home folder, so it is
//! tested on Linux.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why the login item could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum LoginItemError {
    /// The LaunchAgents folder could not be created.
    #[error("could not create {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The plist could not be generated.
    #[error("could not generate the launch agent for {label}: {source}")]
    Encode {
        /// The agent's label.
        label: String,
        /// The underlying error.
        source: plist::Error,
    },
    /// The plist could not be written, renamed or removed.
    #[error("could not write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `KeepAlive` as a dictionary: restart only when the last exit was not successful.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeepAlive {
    /// `false`: relaunch after a crash or non-zero exit, not after a clean Quit.
    pub successful_exit: bool,
}

/// The LaunchAgent property list, keys as launchd spells them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LaunchAgent {
    /// The bundle identifier.
    pub label: String,
    /// The executable and its arguments.
    pub program_arguments: Vec<String>,
    /// Start when the user logs in.
    pub run_at_load: bool,
    /// When to restart.
    pub keep_alive: KeepAlive,
    /// `Interactive`: a GUI app the user is waiting for, not throttled like a daemon.
    pub process_type: String,
    /// `Aqua`: only in a graphical login session.
    pub limit_load_to_session_type: String,
}

impl LaunchAgent {
    /// The agent for `program` (the app's executable) under `label` (the bundle id).
    pub fn new(label: &str, program: &Path) -> Self {
        Self {
            label: label.to_owned(),
            program_arguments: vec![program.display().to_string()],
            run_at_load: true,
            keep_alive: KeepAlive {
                successful_exit: false,
            },
            process_type: "Interactive".to_owned(),
            limit_load_to_session_type: "Aqua".to_owned(),
        }
    }

    /// The XML plist bytes.
    pub fn to_xml(&self) -> Result<Vec<u8>, LoginItemError> {
        let mut bytes = Vec::new();
        plist::to_writer_xml(&mut bytes, self).map_err(|source| LoginItemError::Encode {
            label: self.label.clone(),
            source,
        })?;
        Ok(bytes)
    }
}

/// Where the agent for `label` lives under `home`.
pub fn agent_path(home: &Path, label: &str) -> PathBuf {
    home.join("Library/LaunchAgents")
        .join(format!("{label}.plist"))
}

/// Whether the agent for `label` is installed under `home`.
pub fn is_enabled(home: &Path, label: &str) -> bool {
    agent_path(home, label).is_file()
}

/// Installs (or rewrites) the agent; returns its path.
pub fn enable(home: &Path, label: &str, program: &Path) -> Result<PathBuf, LoginItemError> {
    let path = agent_path(home, label);
    let dir = path.parent().unwrap_or(home);
    std::fs::create_dir_all(dir).map_err(|source| LoginItemError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let bytes = LaunchAgent::new(label, program).to_xml()?;
    let tmp = dir.join(format!(".{label}.plist.tmp"));
    let io = |source| LoginItemError::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    tracing::info!(path = %path.display(), "launch at login enabled");
    Ok(path)
}

/// Removes the agent; nothing to do when it is not there.
pub fn disable(home: &Path, label: &str) -> Result<(), LoginItemError> {
    let path = agent_path(home, label);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "launch at login disabled");
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LoginItemError::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LABEL: &str = "app.secondbrain.SecondBrain";

    #[test]
    fn plist_restarts_after_a_crash_but_not_after_quit() {
        let home = tempfile::tempdir().unwrap();
        let program = Path::new("/Applications/Second Brain.app/Contents/MacOS/second-brain");
        let path = enable(home.path(), LABEL, program).unwrap();
        assert_eq!(
            path,
            home.path()
                .join("Library/LaunchAgents/app.secondbrain.SecondBrain.plist")
        );

        let value = plist::Value::from_file(&path).unwrap();
        let dict = value.as_dictionary().unwrap();
        assert_eq!(dict.get("Label").and_then(|v| v.as_string()), Some(LABEL));
        let args: Vec<&str> = dict
            .get("ProgramArguments")
            .and_then(|v| v.as_array())
            .unwrap()
            .iter()
            .map(|v| v.as_string().unwrap())
            .collect();
        assert_eq!(args, [program.to_str().unwrap()]);
        assert_eq!(
            dict.get("RunAtLoad").and_then(|v| v.as_boolean()),
            Some(true)
        );
        let keep_alive = dict
            .get("KeepAlive")
            .and_then(|v| v.as_dictionary())
            .unwrap();
        assert_eq!(
            keep_alive
                .get("SuccessfulExit")
                .and_then(|v| v.as_boolean()),
            Some(false)
        );
        assert_eq!(keep_alive.len(), 1);
        assert_eq!(
            dict.get("LimitLoadToSessionType")
                .and_then(|v| v.as_string()),
            Some("Aqua")
        );

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<?xml"), "{text}");
        assert!(text.contains("<!DOCTYPE plist"), "{text}");
        assert!(is_enabled(home.path(), LABEL));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn program_paths_survive_unusual_characters() {
        let cases = [
            "/Applications/Second Brain.app/Contents/MacOS/second-brain",
            "/Users/zoë/Apps/🧠/second-brain",
            "/Users/مريم/second-brain",
            "/tmp/a&b<c>\"d'/second-brain",
            "/tmp/𝄞/second-brain",
        ];
        for program in cases {
            let agent = LaunchAgent::new(LABEL, Path::new(program));
            let back: LaunchAgent = plist::from_bytes(&agent.to_xml().unwrap()).unwrap();
            assert_eq!(back, agent, "{program}");
            assert_eq!(back.program_arguments, [program]);
        }
    }

    #[test]
    fn disable_removes_and_tolerates_absence() {
        let home = tempfile::tempdir().unwrap();
        disable(home.path(), LABEL).unwrap();
        enable(home.path(), LABEL, Path::new("/bin/true")).unwrap();
        // Enabling twice rewrites in place.
        enable(home.path(), LABEL, Path::new("/bin/false")).unwrap();
        let agent: LaunchAgent = plist::from_file(agent_path(home.path(), LABEL)).unwrap();
        assert_eq!(agent.program_arguments, ["/bin/false"]);
        disable(home.path(), LABEL).unwrap();
        assert!(!is_enabled(home.path(), LABEL));
        assert!(!agent_path(home.path(), LABEL).exists());
    }
}
