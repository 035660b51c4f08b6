//! Voice messages' audio as the vault keeps it: Messages stores them as Core Audio files
//! (`.caf`), which Obsidian does not play (its accepted audio formats are flac, m4a, mp3,
//! ogg, wav, webm and 3gp: help.obsidian.md, "Accepted file formats"). On macOS the copy is
//! converted to `.m4a` (AAC in an MPEG-4 file) by `/usr/bin/afconvert`; elsewhere, and when
//! the conversion fails, the audio is kept as it is.
//!
//! `afconvert -f m4af -d aac <in> <out>`: `-f`/`--file` the output file format, `m4af`
//! being "Apple MPEG-4 Audio (.m4a, .m4r)", and `-d`/`--data` its data format, `aac` among
//! the m4af data formats, per afconvert's own usage text (`afconvert -h`, `-hf`; Audio File
//! Convert 2.0, mirrored at ss64.com/osx/afconvert.html). Written from that text; not run
//! here.
//!
//! Invariants: the file is an argument, never through a shell; the output lives in a
//! private temporary folder removed when done.

use std::ffi::OsString;
use std::path::Path;

/// The conversion's arguments for `input` into `output`.
pub fn afconvert_args(input: &Path, output: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["-f", "m4af", "-d", "aac"].map(OsString::from).into();
    args.push(input.into());
    args.push(output.into());
    args
}

/// The bytes the vault keeps instead of the file at `source` (extension `ext`), with their
/// extension: a `.caf` converted to `.m4a` on macOS; `None` to keep the file as it is.
pub fn playable(source: &Path, ext: &str) -> Option<(Vec<u8>, &'static str)> {
    if !ext.eq_ignore_ascii_case("caf") {
        return None;
    }
    to_m4a(source).map(|m4a| (m4a, "m4a"))
}

/// The `.m4a` made from `source` by afconvert, if it worked.
#[cfg(target_os = "macos")]
fn to_m4a(source: &Path) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let out = dir.path().join("voice.m4a");
    let status = std::process::Command::new("/usr/bin/afconvert")
        .args(afconvert_args(source, &out))
        .stdin(std::process::Stdio::null())
        .output();
    match status {
        Ok(done) if done.status.success() => std::fs::read(&out).ok(),
        Ok(done) => {
            let stderr = String::from_utf8_lossy(&done.stderr);
            tracing::warn!(status = %done.status, %stderr, "afconvert failed; the audio is kept as it is");
            None
        }
        Err(err) => {
            tracing::warn!(cause = %err, "afconvert could not run; the audio is kept as it is");
            None
        }
    }
}

/// Elsewhere there is no afconvert: the audio is kept as it is.
#[cfg(not(target_os = "macos"))]
fn to_m4a(_source: &Path) -> Option<Vec<u8>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_name_the_m4a_file_format_and_aac() {
        let args = afconvert_args(
            Path::new("/in/Audio Message.caf"),
            Path::new("/t/voice.m4a"),
        );
        assert_eq!(
            args,
            [
                "-f",
                "m4af",
                "-d",
                "aac",
                "/in/Audio Message.caf",
                "/t/voice.m4a"
            ]
            .map(OsString::from)
        );
    }

    #[cfg(not(target_os = "macos"))]
    #[test]
    fn off_macos_the_audio_is_kept_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let caf = dir.path().join("Audio Message.caf");
        std::fs::write(&caf, b"caff\x00\x01 frames").unwrap();
        assert_eq!(playable(&caf, "caf"), None);
        assert_eq!(playable(&caf, "mp3"), None);
    }
}
