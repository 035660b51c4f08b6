//! "Launch at Login" as a per-user LaunchAgent: `~/Library/LaunchAgents/<bundle id>.plist`.
//!
//! Invariants: the plist is generated with the `plist` crate, never by string pasting; launchd
//! starts the app at login (`RunAtLoad`) and restarts it only after an unsuccessful exit
//! (`KeepAlive` = `{SuccessfulExit: false}`), so a crash brings it back and Quit (exit 0) does
//! not; the file is written with `persist::write_atomic`, so launchd never reads half a plist;
//! removing an absent agent is not an error. Enabling is refused unless the app runs from an
//! Applications folder (a path on a disk image or a translocated copy disappears). The state
//! shown is what launchd will do: the plist present and not switched off by the user
//! ([`State`], from `launchctl print-disabled`, asked on macOS only). Works under any home
//! folder, so it is tested on Linux.

use std::path::{Path, PathBuf};

use crate::persist;
use serde::{Deserialize, Serialize};

/// Why the login item could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum LoginItemError {
    /// The app does not run from an Applications folder.
    #[error(
        "Move Second Brain to the Applications folder first, then open it from there: it runs \
         from {}, which may not be there at the next login.", .path.display()
    )]
    NotInApplications {
        /// Where this executable is.
        path: PathBuf,
    },
    /// The user switched the item off in System Settings, where only they can switch it on.
    #[error(
        "Second Brain is switched off in System Settings › General › Login Items: switch it on \
         under Allow in the Background."
    )]
    SwitchedOff,
    /// This user has no home folder to keep the agent in.
    #[error("this user has no home folder")]
    NoHome,
    /// The path of this executable is unknown.
    #[error("cannot find this executable: {0}")]
    NoExecutable(#[source] std::io::Error),
    /// The plist could not be generated.
    #[error("could not generate the launch agent for {label}: {source}")]
    Encode {
        /// The agent's label.
        label: String,
        /// The underlying error.
        source: plist::Error,
    },
    /// The plist could not be written or removed.
    #[error("could not write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What launchd will do at the next login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No agent: the app does not start at login.
    Off,
    /// The agent is installed and allowed.
    On,
    /// The agent is installed, but the user switched it off in System Settings › General ›
    /// Login Items › Allow in the Background.
    SwitchedOff,
    /// The agent is installed, but whether launchd will run it could not be read.
    Unknown(String),
}

/// The app's login item: the agent `label` (the bundle id) under `home`, starting `program`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginItem {
    /// The user's home folder (the agent is in its `Library/LaunchAgents`).
    pub home: PathBuf,
    /// The agent's label, the app's bundle identifier.
    pub label: String,
    /// The executable launchd starts.
    pub program: PathBuf,
}

impl LoginItem {
    /// The item of this executable for this user, under `label`.
    pub fn of_this_app(label: &str) -> Result<LoginItem, LoginItemError> {
        let home = dirs::home_dir().ok_or(LoginItemError::NoHome)?;
        let program = std::env::current_exe().map_err(LoginItemError::NoExecutable)?;
        Ok(LoginItem {
            home,
            label: label.to_owned(),
            program,
        })
    }

    /// Where the agent lives.
    pub fn path(&self) -> PathBuf {
        agent_path(&self.home, &self.label)
    }

    /// What launchd will do (see [`state`]).
    pub fn state(&self, disabled: Option<Result<String, String>>) -> State {
        state(&self.home, &self.label, disabled)
    }

    /// What launchd will do, asked of launchd on macOS when the agent is installed; elsewhere
    /// there is no launchd to disagree with the plist.
    pub fn launchd_state(&self) -> State {
        let ask = cfg!(target_os = "macos") && self.path().is_file();
        self.state(ask.then(print_disabled))
    }

    /// Flips the item from `now`: installs it when off, removes it when on or unknown (so the
    /// user can always get out of an unknown state); refused when the user switched it off.
    pub fn toggle(&self, now: &State) -> Result<(), LoginItemError> {
        match now {
            State::Off => enable(&self.home, &self.label, &self.program).map(drop),
            State::On | State::Unknown(_) => disable(&self.home, &self.label),
            State::SwitchedOff => Err(LoginItemError::SwitchedOff),
        }
    }
}

/// `KeepAlive` as a dictionary: restart only when the last exit was not successful.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeepAlive {
    /// `false`: relaunch after a crash or non-zero exit, not after a clean Quit.
    pub successful_exit: bool,
}

/// The LaunchAgent property list, keys as launchd spells them (launchd.plist(5)).
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
    /// The app's bundle id: since macOS 13, System Settings › General › Login Items lists the
    /// agent under the app's name and icon rather than its signer's (launchd.plist(5),
    /// `AssociatedBundleIdentifiers`; Apple Platform Deployment, "Manage login items and
    /// background tasks on Mac").
    pub associated_bundle_identifiers: Vec<String>,
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
            associated_bundle_identifiers: vec![label.to_owned()],
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

/// Whether `program` stays where it is: inside `/Applications` or `~/Applications`, and not a
/// translocated copy (Gatekeeper runs an app opened from its download location from a
/// random read-only path under `/private/var/folders/…/AppTranslocation/`; Apple, "Gatekeeper
/// and runtime protection", App Translocation).
pub fn runs_from_applications(home: &Path, program: &Path) -> bool {
    let translocated = program
        .components()
        .any(|part| part.as_os_str() == "AppTranslocation");
    let installed =
        program.starts_with("/Applications") || program.starts_with(home.join("Applications"));
    installed && !translocated
}

/// Whether launchd lists `label` as disabled in the output of `launchctl print-disabled
/// gui/<uid>`: lines of the form `"label" => disabled` (`=> true` before macOS 13; answer to
/// "How does one check whether the OS X disabled flag for launchd services is set",
/// serverfault.com/q/218402). `None` when the output does not have that shape.
pub fn disabled_in(output: &str, label: &str) -> Option<bool> {
    if !output.contains("disabled services = {") {
        return None;
    }
    let quoted = format!("\"{label}\"");
    let line = output
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(&quoted));
    match line.and_then(|l| l.split("=>").nth(1)).map(str::trim) {
        None => Some(false),
        Some("disabled" | "true") => Some(true),
        Some("enabled" | "false") => Some(false),
        Some(_) => None,
    }
}

/// `launchctl print-disabled gui/<uid>`: the services of this user's GUI domain that are
/// switched off (launchctl(1): "print-disabled <domain-target>"; `gui/<uid>` is the domain of
/// the logged-in user). The error is a sentence for the menu.
#[cfg(unix)]
pub fn print_disabled() -> Result<String, String> {
    let uid = rustix::process::getuid().as_raw();
    let output = std::process::Command::new("/bin/launchctl")
        .arg("print-disabled")
        .arg(format!("gui/{uid}"))
        .output()
        .map_err(|err| format!("launchctl did not run: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "launchctl print-disabled failed ({})",
            output.status
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// No launchd to ask.
#[cfg(not(unix))]
pub fn print_disabled() -> Result<String, String> {
    Err("there is no launchd on this system".to_owned())
}

/// What launchd will do for `label`. `disabled` is the output of `launchctl print-disabled`,
/// or why it could not be read (`None` where there is no launchd to ask).
pub fn state(home: &Path, label: &str, disabled: Option<Result<String, String>>) -> State {
    if !agent_path(home, label).is_file() {
        return State::Off;
    }
    match disabled {
        None => State::On,
        Some(Err(reason)) => State::Unknown(reason),
        Some(Ok(output)) => match disabled_in(&output, label) {
            Some(false) => State::On,
            Some(true) => State::SwitchedOff,
            None => State::Unknown("launchctl answered in an unknown form".to_owned()),
        },
    }
}

/// Installs (or rewrites) the agent; returns its path. Refused unless `program` runs from an
/// Applications folder.
pub fn enable(home: &Path, label: &str, program: &Path) -> Result<PathBuf, LoginItemError> {
    if !runs_from_applications(home, program) {
        return Err(LoginItemError::NotInApplications {
            path: program.to_path_buf(),
        });
    }
    let path = agent_path(home, label);
    let bytes = LaunchAgent::new(label, program).to_xml()?;
    persist::write_atomic(&path, &bytes).map_err(|source| LoginItemError::Io {
        path: path.clone(),
        source,
    })?;
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
        assert_eq!(
            dict.get("ProcessType").and_then(|v| v.as_string()),
            Some("Interactive")
        );
        let associated: Vec<&str> = dict
            .get("AssociatedBundleIdentifiers")
            .and_then(|v| v.as_array())
            .unwrap()
            .iter()
            .map(|v| v.as_string().unwrap())
            .collect();
        assert_eq!(associated, [LABEL]);

        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<?xml"), "{text}");
        assert!(text.contains("<!DOCTYPE plist"), "{text}");
        assert_eq!(state(home.path(), LABEL, None), State::On);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }

    #[test]
    fn enabling_is_refused_outside_an_applications_folder() {
        let home = tempfile::tempdir().unwrap();
        let in_home = home
            .path()
            .join("Applications/Second Brain.app/Contents/MacOS/second-brain");
        for allowed in [
            Path::new("/Applications/Second Brain.app/Contents/MacOS/second-brain"),
            Path::new("/Applications/Utilities/Second Brain.app/Contents/MacOS/second-brain"),
            &in_home,
        ] {
            assert!(runs_from_applications(home.path(), allowed), "{allowed:?}");
        }
        let refused = [
            "/Volumes/Second Brain/Second Brain.app/Contents/MacOS/second-brain",
            "/private/var/folders/x1/abc/T/AppTranslocation/5E6F-7A8B/d/Second Brain.app/Contents/MacOS/second-brain",
            "/Applications/AppTranslocation/Second Brain.app/Contents/MacOS/second-brain",
            "/Users/zoë/Downloads/Second Brain.app/Contents/MacOS/second-brain",
            "/ApplicationsX/Second Brain.app/Contents/MacOS/second-brain",
            "/work/target/debug/second-brain",
        ];
        for program in refused {
            let err = enable(home.path(), LABEL, Path::new(program)).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("Move Second Brain to the Applications folder first"),
                "{program}: {err}"
            );
            assert!(err.to_string().contains(program), "{err}");
        }
        assert!(!home.path().join("Library").exists(), "nothing written");
    }

    #[test]
    fn the_state_is_what_launchd_will_do() {
        let home = tempfile::tempdir().unwrap();
        let listing = |entries: &str| Some(Ok(format!("disabled services = {{\n{entries}}}\n")));
        assert_eq!(state(home.path(), LABEL, listing("")), State::Off);
        enable(
            home.path(),
            LABEL,
            Path::new("/Applications/Second Brain.app/Contents/MacOS/second-brain"),
        )
        .unwrap();
        let cases = [
            (listing(""), State::On),
            (
                listing("\t\"com.apple.Siri.agent\" => disabled\n"),
                State::On,
            ),
            (listing(&format!("\t\"{LABEL}\" => enabled\n")), State::On),
            (listing(&format!("\t\"{LABEL}\" => false\n")), State::On),
            (
                listing(&format!("\t\"{LABEL}\" => disabled\n")),
                State::SwitchedOff,
            ),
            (
                listing(&format!("\t\"{LABEL}\" => true\n")),
                State::SwitchedOff,
            ),
            (
                listing(&format!("\t\"{LABEL}.helper\" => disabled\n")),
                State::On,
            ),
            (None, State::On),
        ];
        for (disabled, expected) in cases {
            assert_eq!(
                state(home.path(), LABEL, disabled.clone()),
                expected,
                "{disabled:?}"
            );
        }
        assert_eq!(
            state(
                home.path(),
                LABEL,
                Some(Err("launchctl: not found".to_owned()))
            ),
            State::Unknown("launchctl: not found".to_owned())
        );
        assert!(matches!(
            state(
                home.path(),
                LABEL,
                Some(Ok("Unrecognized subcommand".to_owned()))
            ),
            State::Unknown(_)
        ));
        assert!(matches!(
            state(
                home.path(),
                LABEL,
                listing(&format!("\t\"{LABEL}\" => maybe\n"))
            ),
            State::Unknown(_)
        ));
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
    fn toggling_follows_what_launchd_will_do() {
        let home = tempfile::tempdir().unwrap();
        let item = LoginItem {
            home: home.path().to_path_buf(),
            label: LABEL.to_owned(),
            program: "/Applications/Second Brain.app/Contents/MacOS/second-brain".into(),
        };
        item.toggle(&State::Off).unwrap();
        assert_eq!(item.state(None), State::On);
        let err = item.toggle(&State::SwitchedOff).unwrap_err();
        assert!(err.to_string().contains("Allow in the Background"), "{err}");
        assert!(item.path().is_file(), "a refused toggle changes nothing");
        item.toggle(&State::Unknown("launchctl failed".to_owned()))
            .unwrap();
        assert_eq!(item.state(None), State::Off);
        assert!(!item.path().exists());
    }

    /// Where launchd does not exist, asking it is an error the menu can show, never a panic
    /// or a guess.
    #[test]
    #[cfg(target_os = "linux")]
    fn asking_a_missing_launchd_says_so() {
        let err = print_disabled().unwrap_err();
        assert!(err.starts_with("launchctl did not run: "), "{err}");
    }

    #[test]
    fn disable_removes_and_tolerates_absence() {
        let home = tempfile::tempdir().unwrap();
        disable(home.path(), LABEL).unwrap();
        let first = "/Applications/Second Brain.app/Contents/MacOS/second-brain";
        let second = "/Applications/Second Brain 2.app/Contents/MacOS/second-brain";
        enable(home.path(), LABEL, Path::new(first)).unwrap();
        // Enabling twice rewrites in place.
        enable(home.path(), LABEL, Path::new(second)).unwrap();
        let agent: LaunchAgent = plist::from_file(agent_path(home.path(), LABEL)).unwrap();
        assert_eq!(agent.program_arguments, [second]);
        disable(home.path(), LABEL).unwrap();
        assert_eq!(state(home.path(), LABEL, None), State::Off);
        assert!(!agent_path(home.path(), LABEL).exists());
    }
}
