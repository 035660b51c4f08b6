//! Converts HEIC/HEIF (what iPhones take photos in; the model does not read it) to PNG with
//! the system's converter: `/usr/bin/sips` on macOS, `heif-convert` (Debian's
//! `libheif-examples`) elsewhere. With neither, the image is attached but not shown.
//!
//! `sips -s format png <in> --out <out>`: "-s, --setProperty key value" with key `format`
//! and `--out` naming the output file, per Apple's sips(1) man page (written from the man
//! page; not run here). `heif-convert <in> <out.png>` picks the output format from the
//! suffix (`heif-convert --help`, libheif 1.15).
//!
//! Invariants: the file is passed as an argument, never through a shell; the output lives in
//! a private temporary folder removed when done; a converter's failure keeps its exit status
//! and stderr.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The converter in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Converter {
    /// macOS's Scriptable Image Processing System.
    Sips(PathBuf),
    /// libheif's example converter.
    HeifConvert(PathBuf),
}

/// Why a HEIC could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No converter is installed.
    #[error(
        "no HEIC converter is installed (sips on macOS; heif-convert from libheif-examples elsewhere)"
    )]
    NoConverter,
    /// The converter could not be started or its output read.
    #[error("HEIC conversion failed: {0}")]
    Io(#[from] std::io::Error),
    /// The converter ran and failed.
    #[error("HEIC conversion failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The start of its stderr.
        stderr: String,
    },
}

impl Converter {
    /// The converter on this machine: `sips` at its fixed macOS path, else `heif-convert`
    /// found on `PATH`.
    pub fn find() -> Option<Converter> {
        let sips = Path::new("/usr/bin/sips");
        if cfg!(target_os = "macos") && sips.is_file() {
            return Some(Converter::Sips(sips.to_path_buf()));
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join("heif-convert"))
            .find(|p| p.is_file())
            .map(Converter::HeifConvert)
    }

    /// The PNG bytes of the HEIC/HEIF file at `input`.
    pub fn to_png(&self, input: &Path) -> Result<Vec<u8>, Error> {
        let dir = tempfile::tempdir()?;
        let out = dir.path().join("converted.png");
        let mut command = match self {
            Converter::Sips(program) => {
                let mut c = Command::new(program);
                c.args(["-s", "format", "png"])
                    .arg(input)
                    .arg("--out")
                    .arg(&out);
                c
            }
            Converter::HeifConvert(program) => {
                let mut c = Command::new(program);
                c.arg(input).arg(&out);
                c
            }
        };
        let output = command.stdin(std::process::Stdio::null()).output()?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(Error::Failed {
                status: output.status,
                stderr: stderr.chars().take(500).collect(),
            });
        }
        Ok(std::fs::read(&out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_converter_that_fails_keeps_its_status_and_stderr() {
        let converter = Converter::HeifConvert(PathBuf::from("/bin/sh"));
        // `sh <missing file> <out>` fails with a message naming the file.
        let err = converter
            .to_png(Path::new("/nonexistent/x.heic"))
            .unwrap_err();
        match err {
            Error::Failed { status, stderr } => {
                assert!(!status.success());
                assert!(stderr.contains("/nonexistent/x.heic"), "{stderr}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
