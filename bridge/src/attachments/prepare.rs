//! Turns a text's attachments into what the model is shown and what the note embeds: each
//! file is read once, copied into the vault's attachment folder, and — for images — shrunk
//! and given to the model as an `image` block; everything else is described in words.
//!
//! Invariants: every attachment gets exactly one [`Handling`], told to the model in the
//! summary; nothing here fails the text: a file that cannot be read or copied is named.
//! Blocking (file reads, image work, a converter process): callers run it off the runtime.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chrono::{DateTime, Local};
use serde_json::{Value, json};

use super::folder::AttachmentSettings;
use super::heif::Converter;
use super::kind::Kind;
use super::pdf;
use super::picture;
use super::rows::{Attachment, Transfer};
use crate::vault::Vault;

/// Largest file copied into the vault (and read at all).
pub const MAX_COPY_BYTES: u64 = 100 * 1024 * 1024;
/// Most images shown to the model for one text; the API takes up to 100 per request
/// (platform.claude.com/docs/en/build-with-claude/vision, "Limitations"), and a
/// clarification carries earlier ones again, so one text uses at most a fifth of that.
pub const MAX_IMAGES_SHOWN: usize = 20;
/// Most base64 bytes of media (images and PDFs) one text puts in a request: the API takes
/// 32 MB for the whole request (PDF guide, "Check PDF requirements"), which also carries the
/// system prompt, tools and transcript.
pub const MAX_MEDIA_BASE64: usize = 24 * 1024 * 1024;

/// What one text may still show the model.
pub(super) struct Budget {
    images: usize,
    pages: u32,
    base64: usize,
}

impl Budget {
    pub(super) fn new() -> Budget {
        Budget {
            images: MAX_IMAGES_SHOWN,
            pages: pdf::MAX_PAGES,
            base64: MAX_MEDIA_BASE64,
        }
    }

    /// Takes room for `bytes` of media, if there is any.
    fn take_bytes(&mut self, bytes: usize) -> Result<(), String> {
        let encoded = bytes.div_ceil(3) * 4;
        if encoded > self.base64 {
            return Err(
                "too large to show with the rest of this text (the API takes 32 MB a request)"
                    .into(),
            );
        }
        self.base64 -= encoded;
        Ok(())
    }
}

/// What became of one attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handling {
    /// Copied, and shown to the model as an image.
    Shown,
    /// Copied, described to the model but not shown, for this reason.
    NotShown(String),
    /// Not copied (too large); the note links to Messages' own file.
    TooLarge,
    /// Could not be read at all.
    Unreadable(String),
}

/// One attachment, handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    /// The name it is told by.
    pub name: String,
    /// Its MIME type, when known.
    pub mime_type: Option<String>,
    /// Its size in bytes, when read.
    pub bytes: Option<u64>,
    /// Its copy in the vault, vault-relative.
    pub saved: Option<String>,
    /// The note's embed or link for it.
    pub embed: Option<String>,
    /// What became of it.
    pub handling: Handling,
    /// Its copy, when it waits for the note's folder (note-relative attachment folders).
    pub later: Option<Later>,
}

/// A copy made once the folder of the note it goes with is known ([`Prepared::place`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Later {
    source: PathBuf,
    stem: String,
    ext: String,
}

/// A text's attachments, ready for the model and the note.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prepared {
    /// The `image` blocks, each after a text block naming it.
    pub blocks: Vec<Value>,
    /// Each attachment and what became of it.
    pub handled: Vec<Handled>,
    /// Where the vault wants the copies and how notes embed them.
    pub settings: AttachmentSettings,
}

impl Prepared {
    /// The same without the model's blocks (which go to the request).
    pub fn without_blocks(&self) -> Prepared {
        Prepared {
            blocks: Vec::new(),
            handled: self.handled.clone(),
            settings: self.settings.clone(),
        }
    }

    /// Makes the copies that waited for the note's folder, in the attachment folder of a
    /// note in `note_folder` (vault-relative); returns every embed the note must carry.
    /// Each copy is made once: later calls only give the embeds.
    pub fn place(&mut self, vault: &Vault, note_folder: &str, now: DateTime<Local>) -> Vec<String> {
        let folder = self.settings.folder(note_folder);
        for h in &mut self.handled {
            let Some(later) = h.later.take() else {
                continue;
            };
            let stored = match read(&later.source) {
                Ok(Read::Bytes(bytes)) => {
                    let (bytes, ext) = match super::audio::playable(&later.source, &later.ext) {
                        Some((audio, ext)) => (audio, ext.to_string()),
                        None => (bytes, later.ext),
                    };
                    vault
                        .store_attachment(&folder, &later.stem, &ext, &bytes, now)
                        .map_err(|e| e.to_string())
                }
                Ok(Read::TooLarge(_)) => Err("it grew over 100 MB".into()),
                Err(why) => Err(why),
            };
            match stored {
                Ok(saved) => {
                    h.embed = Some(self.settings.embed(&saved));
                    h.saved = Some(saved);
                }
                Err(why) => tracing::warn!(cause = %why, "attachment not copied into the vault"),
            }
        }
        self.embeds()
    }

    /// The vault copies of the attachments shown to the model, in the order of their
    /// blocks (`None` for one not copied).
    pub fn shown_copies(&self) -> Vec<(Option<String>, Option<String>)> {
        self.handled
            .iter()
            .filter(|h| h.handling == Handling::Shown)
            .map(|h| (h.saved.clone(), h.mime_type.clone()))
            .collect()
    }

    /// The embeds the note must carry.
    pub fn embeds(&self) -> Vec<String> {
        self.handled
            .iter()
            .filter_map(|h| h.embed.clone())
            .collect()
    }

    /// The text as the model gets it: `text` (or a note that there is none) and then the
    /// [`Prepared::summary`].
    pub fn input(&self, text: &str) -> String {
        match (text.trim().is_empty(), self.handled.is_empty()) {
            (_, true) => text.to_string(),
            (true, false) => format!("(No words, only attachments.)\n\n{}", self.summary()),
            (false, false) => format!("{text}\n\n{}", self.summary()),
        }
    }

    /// What the user is told when some attachments could not be read, naming them.
    pub fn unreadable_notice(&self) -> Option<String> {
        let named: Vec<String> = self
            .handled
            .iter()
            .filter_map(|h| match &h.handling {
                Handling::Unreadable(why) => Some(format!("{} ({why})", h.name)),
                _ => None,
            })
            .collect();
        if named.is_empty() {
            return None;
        }
        Some(format!(
            "I couldn't read {} from that text; the rest is being filed.",
            named.join(", ")
        ))
    }

    /// What the model is told about the attachments, appended to the text.
    pub fn summary(&self) -> String {
        if self.handled.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "[Attachments of this text, already saved by the bridge; the note gets their embeds added automatically]",
        );
        for (i, h) in self.handled.iter().enumerate() {
            out.push_str(&format!("\n{}. {}", i + 1, describe(h)));
        }
        out
    }
}

/// One line about one attachment.
fn describe(h: &Handled) -> String {
    let mut facts = vec![h.mime_type.clone().unwrap_or_else(|| "unknown type".into())];
    if let Some(bytes) = h.bytes {
        facts.push(human(bytes));
    }
    let saved = match (&h.saved, &h.later) {
        (Some(p), _) => format!(", saved as {p}"),
        (None, Some(_)) => ", saved next to the note when it is written".to_string(),
        (None, None) => String::new(),
    };
    let what = match &h.handling {
        Handling::Shown => "shown below".to_string(),
        Handling::NotShown(why) => format!("not shown: {why}"),
        Handling::TooLarge => {
            "over 100 MB: not copied into the vault; the note links to it in Messages' folder"
                .into()
        }
        Handling::Unreadable(why) => format!("could not be read ({why}); tell the user"),
    };
    format!("{} ({}){saved}: {what}", h.name, facts.join(", "))
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
        b if b >= 1024 => format!("{} KB", b / 1024),
        b => format!("{b} bytes"),
    }
}

/// Handles `attachments` in order: copies into `vault` (where `settings` say), images
/// prepared for the model with `converter` for HEIC.
pub fn prepare(
    vault: &Vault,
    settings: &AttachmentSettings,
    converter: Option<&Converter>,
    attachments: &[Attachment],
    now: DateTime<Local>,
) -> Prepared {
    let mut prepared = Prepared {
        settings: settings.clone(),
        ..Prepared::default()
    };
    let mut budget = Budget::new();
    for attachment in attachments {
        let (handled, block) = one(vault, settings, converter, attachment, now, &mut budget);
        if let Some(block) = block {
            prepared
                .blocks
                .push(json!({"type": "text", "text": format!("[Attachment: {}]", handled.name)}));
            prepared.blocks.push(block);
        }
        prepared.handled.push(handled);
    }
    prepared
}

/// [`prepare`] for a text's `attachments`, off the runtime's workers (file reads, image
/// work and a converter process block), with the vault's settings read now and the HEIC
/// converter found on this machine. Empty when there are none.
pub async fn prepare_off_runtime(vault: &Vault, attachments: Vec<Attachment>) -> Prepared {
    if attachments.is_empty() {
        return Prepared::default();
    }
    let count = attachments.len();
    let done = vault
        .off_runtime(move |vault| {
            let settings = AttachmentSettings::load(vault.root());
            let converter = Converter::find();
            Ok(prepare(
                vault,
                &settings,
                converter.as_ref(),
                &attachments,
                Local::now(),
            ))
        })
        .await;
    done.unwrap_or_else(|err| {
        tracing::warn!(cause = %err, count, "attachments could not be prepared");
        Prepared::default()
    })
}

/// [`Prepared::place`] for the note `prepared` goes with, off the runtime's workers when a
/// copy is still to be made; returns the embeds the note must carry. The lock is held
/// throughout, so two notes of one run never copy a file twice.
pub async fn place_off_runtime(
    vault: &Vault,
    prepared: &tokio::sync::Mutex<Prepared>,
    note_folder: &str,
) -> Vec<String> {
    let mut p = prepared.lock().await;
    if p.handled.iter().all(|h| h.later.is_none()) {
        return p.embeds();
    }
    let mut waiting = p.without_blocks();
    let note_folder = note_folder.to_string();
    let placed = vault
        .off_runtime(move |vault| {
            waiting.place(vault, &note_folder, Local::now());
            Ok(waiting)
        })
        .await;
    match placed {
        Ok(placed) => p.handled = placed.handled,
        Err(err) => tracing::warn!(cause = %err, "attachments could not be copied into the vault"),
    }
    p.embeds()
}

/// An `image` content block (base64 source) as the Messages API takes it.
pub fn image_block(picture: &picture::Picture) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(&picture.bytes);
    json!({"type": "image", "source": {"type": "base64", "media_type": picture.media_type, "data": data}})
}

fn one(
    vault: &Vault,
    settings: &AttachmentSettings,
    converter: Option<&Converter>,
    attachment: &Attachment,
    now: DateTime<Local>,
    budget: &mut Budget,
) -> (Handled, Option<Value>) {
    let mut handled = Handled {
        name: attachment.display_name(),
        mime_type: attachment.mime_type.clone(),
        bytes: None,
        saved: None,
        embed: None,
        handling: Handling::Unreadable("Messages has not named its file".into()),
        later: None,
    };
    let Some(path) = attachment.path.as_deref() else {
        return (handled, None);
    };
    let bytes = match read(path) {
        Ok(Read::Bytes(bytes)) => bytes,
        Ok(Read::TooLarge(size)) => {
            handled.bytes = Some(size);
            handled.embed = Some(format!("[{}](<file://{}>)", handled.name, path.display()));
            handled.handling = Handling::TooLarge;
            return (handled, None);
        }
        Err(why) => {
            handled.handling = Handling::Unreadable(match attachment.transfer {
                Transfer::Failed => "Messages could not download it".into(),
                _ => why,
            });
            return (handled, None);
        }
    };
    handled.bytes = Some(bytes.len() as u64);
    let stem = Path::new(&handled.name)
        .file_stem()
        .map_or("attachment".into(), |s| s.to_string_lossy().into_owned());
    let ext = path
        .extension()
        .map_or(String::new(), |e| e.to_string_lossy().into_owned());
    if settings.place.follows_note() {
        // The model picks the note's folder: the copy is made once it has (one copy only).
        handled.later = Some(Later {
            source: path.to_path_buf(),
            stem,
            ext,
        });
    } else {
        // Audio Obsidian cannot play is kept converted (macOS), else as it is.
        let audio = super::audio::playable(path, &ext);
        let (copy, ext) = audio
            .as_ref()
            .map_or((&bytes[..], ext.as_str()), |(a, e)| (&a[..], *e));
        match vault.store_attachment(&settings.folder(""), &stem, ext, copy, now) {
            Ok(saved) => {
                handled.embed = Some(settings.embed(&saved));
                handled.saved = Some(saved);
            }
            Err(err) => tracing::warn!(cause = %err, "attachment not copied into the vault"),
        }
    }
    let kind = Kind::of(
        attachment.mime_type.as_deref(),
        attachment.uti.as_deref(),
        Some(path),
    );
    let (handling, block) = match show(kind, &bytes, path, converter, budget) {
        Ok(block) => (Handling::Shown, Some(block)),
        Err(why) => (Handling::NotShown(why), None),
    };
    handled.handling = handling;
    (handled, block)
}

/// The block that shows the file to the model, or why it is not shown. The same bytes
/// and kind always give the same block (the encoders involved are deterministic).
pub(super) fn show(
    kind: Kind,
    bytes: &[u8],
    path: &Path,
    converter: Option<&Converter>,
    budget: &mut Budget,
) -> Result<Value, String> {
    let picture = match kind {
        Kind::Image(_) | Kind::Heif if budget.images == 0 => {
            return Err(format!("only {MAX_IMAGES_SHOWN} images are shown per text"));
        }
        Kind::Image(format) => picture::prepare(bytes, Some(format)).map_err(|e| e.to_string())?,
        Kind::Heif => {
            let converter = converter.ok_or_else(|| super::heif::Error::NoConverter.to_string())?;
            let png = converter.to_png(path).map_err(|e| e.to_string())?;
            picture::prepare(&png, Some(image::ImageFormat::Png)).map_err(|e| e.to_string())?
        }
        Kind::Pdf => {
            let pages = pdf::pages(bytes).map_err(|e| e.to_string())?;
            if pages > budget.pages {
                let refusal = pdf::Refusal::TooManyPages {
                    pages,
                    room: budget.pages,
                };
                return Err(refusal.to_string());
            }
            budget.take_bytes(bytes.len())?;
            budget.pages -= pages;
            return Ok(pdf::document_block(bytes));
        }
        Kind::Other => return Err("not an image or PDF".into()),
    };
    budget.take_bytes(picture.bytes.len())?;
    budget.images -= 1;
    Ok(image_block(&picture))
}

enum Read {
    Bytes(Vec<u8>),
    TooLarge(u64),
}

/// The file's bytes, unless it is over [`MAX_COPY_BYTES`] or not a regular file.
fn read(path: &Path) -> Result<Read, String> {
    let meta = std::fs::metadata(path).map_err(|e| reason(&e))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_COPY_BYTES {
        return Ok(Read::TooLarge(meta.len()));
    }
    std::fs::read(path).map(Read::Bytes).map_err(|e| reason(&e))
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            "the file is not on this Mac; it may be in iCloud only".into()
        }
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `content` with each of `embeds` it does not already hold appended on its own line.
pub fn with_embeds(content: &str, embeds: &[String]) -> String {
    let missing: Vec<&str> = embeds
        .iter()
        .filter(|e| !content.contains(e.as_str()))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        return content.to_string();
    }
    let body = content.trim_end_matches(['\r', '\n']);
    let sep = if body.is_empty() { "" } else { "\n\n" };
    format!("{body}{sep}{}\n", missing.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn attachment(path: &Path, mime: &str, name: &str) -> Attachment {
        Attachment {
            guid: format!("guid-{name}"),
            path: Some(path.to_path_buf()),
            mime_type: Some(mime.into()),
            transfer_name: Some(name.into()),
            ..Attachment::default()
        }
    }

    #[test]
    fn an_image_is_copied_shown_and_embedded_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("vault"));
        std::fs::create_dir(vault.root()).unwrap();
        let img = image::RgbImage::from_pixel(3000, 1000, image::Rgb([10, 20, 30]));
        let photo = dir.path().join("IMG_0001.png");
        img.save(&photo).unwrap();
        let list = [
            attachment(&photo, "image/png", "IMG_0001.png"),
            attachment(&dir.path().join("gone.jpg"), "image/jpeg", "gone.jpg"),
            Attachment {
                path: None,
                ..attachment(&PathBuf::new(), "image/jpeg", "unnamed.jpg")
            },
            Attachment {
                transfer: Transfer::Failed,
                ..attachment(
                    &dir.path().join("failed.mov"),
                    "video/quicktime",
                    "failed.mov",
                )
            },
        ];
        let settings = AttachmentSettings::load(vault.root());
        let now = Local::now();
        let p = prepare(&vault, &settings, None, &list, now);
        let day = now.format("%Y-%m-%d");
        let saved = format!("Attachments/{day}_img0001.png");
        assert_eq!(p.handled[0].saved.as_deref(), Some(saved.as_str()));
        assert_eq!(
            std::fs::read(vault.root().join(&saved)).unwrap(),
            std::fs::read(&photo).unwrap()
        );
        assert_eq!(p.handled[0].handling, Handling::Shown);
        assert!(
            matches!(p.handled[1].handling, Handling::Unreadable(ref w) if w.contains("iCloud"))
        );
        assert!(matches!(p.handled[2].handling, Handling::Unreadable(_)));
        assert_eq!(
            p.handled[3].handling,
            Handling::Unreadable("Messages could not download it".into())
        );
        assert_eq!(
            p.unreadable_notice().as_deref(),
            Some(
                "I couldn't read gone.jpg (the file is not on this Mac; it may be in iCloud \
                 only), unnamed.jpg (Messages has not named its file), failed.mov (Messages \
                 could not download it) from that text; the rest is being filed."
            )
        );
        assert_eq!(p.embeds(), [format!("![[{day}_img0001.png]]")]);
        assert_eq!(p.blocks.len(), 2);
        assert_eq!(p.blocks[1]["source"]["media_type"], "image/jpeg");
        let summary = p.summary();
        assert!(summary.contains("gone.jpg"), "{summary}");
        assert!(summary.contains("shown below"), "{summary}");
    }

    #[test]
    fn a_note_relative_folder_copies_once_next_to_the_note_when_its_folder_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("vault"));
        std::fs::create_dir_all(vault.root().join(".obsidian")).unwrap();
        std::fs::write(
            vault.root().join(".obsidian/app.json"),
            r#"{"attachmentFolderPath": "./assets"}"#,
        )
        .unwrap();
        let photo = dir.path().join("IMG_3.png");
        image::RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .save(&photo)
            .unwrap();
        let settings = AttachmentSettings::load(vault.root());
        let now = Local::now();
        let mut p = prepare(
            &vault,
            &settings,
            None,
            &[attachment(&photo, "image/png", "IMG_3.png")],
            now,
        );
        assert_eq!(p.handled[0].handling, Handling::Shown);
        assert!(
            p.embeds().is_empty(),
            "no copy before the note's folder is known"
        );
        assert!(!vault.root().join("Attachments").exists());
        assert!(
            p.summary().contains("saved next to the note"),
            "{}",
            p.summary()
        );
        let day = now.format("%Y-%m-%d");
        let want = [format!("![[{day}_img3.png]]")];
        assert_eq!(p.place(&vault, "Ideas", now), want);
        assert_eq!(p.place(&vault, "Ideas", now), want, "placed once");
        assert_eq!(
            std::fs::read(vault.root().join(format!("Ideas/assets/{day}_img3.png"))).unwrap(),
            std::fs::read(&photo).unwrap()
        );
        assert_eq!(
            std::fs::read_dir(vault.root().join("Ideas/assets"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn a_file_over_100_mb_is_linked_not_copied_and_a_heic_without_converter_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("vault"));
        std::fs::create_dir(vault.root()).unwrap();
        let big = dir.path().join("movie.mov");
        // Sparse: the size is what counts, no 100 MB is written.
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_COPY_BYTES + 1)
            .unwrap();
        let heic =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/attachments/sticker.heic");
        let list = [
            attachment(&big, "video/quicktime", "movie.mov"),
            attachment(&heic, "image/heic", "IMG_2.HEIC"),
        ];
        let settings = AttachmentSettings::load(vault.root());
        let p = prepare(&vault, &settings, None, &list, Local::now());
        assert_eq!(p.handled[0].handling, Handling::TooLarge);
        assert_eq!(p.handled[0].saved, None);
        let link = p.handled[0].embed.as_deref().unwrap();
        assert!(link.contains(&big.display().to_string()), "{link}");
        assert!(
            matches!(&p.handled[1].handling, Handling::NotShown(why) if why.contains("heif-convert"))
        );
        assert!(
            p.handled[1]
                .saved
                .as_deref()
                .is_some_and(|s| s.ends_with(".heic"))
        );
        assert!(p.blocks.is_empty());
        assert!(p.summary().contains("over 100 MB"), "{}", p.summary());
        assert_eq!(
            std::fs::read_dir(vault.root().join("Attachments"))
                .unwrap()
                .count(),
            1
        );
    }

    #[test]
    fn embeds_the_model_wrote_are_not_repeated() {
        let embeds = vec!["![[a.jpg]]".to_string(), "![[b.pdf]]".to_string()];
        assert_eq!(
            with_embeds("Look ![[a.jpg]]\n", &embeds),
            "Look ![[a.jpg]]\n\n![[b.pdf]]\n"
        );
        assert_eq!(with_embeds("", &embeds), "![[a.jpg]]\n![[b.pdf]]\n");
        assert_eq!(
            with_embeds("x ![[a.jpg]] ![[b.pdf]]", &embeds),
            "x ![[a.jpg]] ![[b.pdf]]"
        );
    }
}
