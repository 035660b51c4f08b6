//! Media in a transcript that continues (a clarification): `sessions.json` never holds
//! image, PDF or audio bytes, yet the follow-up request must show the model the same
//! image again, byte for byte the same block as the first time, so that the prompt cache's
//! prefix still matches.
//!
//! [`strip_media`] replaces each media block by a text block naming its vault copy and
//! MIME type; [`restore_media`] prepares the block again from that copy, with the same
//! steps as the first time ([`super::prepare::show`]: same bytes in, same decoder, resize
//! and encoder settings, so the same bytes out), or leaves a placeholder naming the file
//! when the copy is gone. Preparing again was chosen over keeping the prepared derivative
//! next to the copy: a derivative would be a file in the user's vault they never sent,
//! shown by Obsidian as an attachment and left behind when they move or delete the copy;
//! the cost is the image work once more per clarification (well under the 200 ms of the
//! first time, bench `attachments`).
//!
//! Invariant: a stripped transcript is still a valid request on its own (text blocks
//! only), so a run that does not restore (an idle session's Inbox filing) sends it as it is.

use std::path::{Component, Path};

use serde_json::{Value, json};

use super::heif::Converter;
use super::kind::Kind;
use super::prepare::{Budget, show};
use crate::vault::Vault;

/// How a stripped block names its copy: `<MARK><path> | <mime>]`.
const MARK: &str = "[Attachment shown to the model from its vault copy: ";

/// The text of a block whose copy is unknown or gone.
fn placeholder(name: Option<&str>) -> Value {
    let text = match name {
        Some(path) => format!(
            "[The attachment named above was shown in an earlier turn; its vault copy {path} \
             is gone.]"
        ),
        None => "[The attachment named above was shown in an earlier turn; it is saved in the \
                 vault.]"
            .to_string(),
    };
    json!({"type": "text", "text": text})
}

fn is_media(block: &Value) -> bool {
    matches!(
        block.get("type").and_then(Value::as_str),
        Some("image" | "document")
    )
}

/// Replaces the media blocks of `transcript`, in order, by text blocks naming their vault
/// copies: `copies[i]` (path, MIME type) is the copy of the i-th media block (`None`: not
/// copied, a plain placeholder). Returns how many were replaced.
pub fn strip_media(transcript: &mut [Value], copies: &[(Option<String>, Option<String>)]) -> usize {
    let mut copies = copies.iter();
    let mut replaced = 0;
    for block in blocks_mut(transcript).filter(|b| is_media(b)) {
        *block = match copies.next() {
            Some((Some(path), mime)) => {
                let mime = mime.as_deref().unwrap_or("");
                json!({"type": "text", "text": format!("{MARK}{path} | {mime}]")})
            }
            _ => placeholder(None),
        };
        replaced += 1;
    }
    for block in blocks_mut(transcript) {
        drop_fetched_bytes(block);
    }
    replaced
}

/// A page the server's web fetch returned as a base64 document (a PDF) keeps its shape but
/// not its bytes: its source becomes plain text naming the URL. The result block is still
/// one the API takes back (`web_fetch_result.content` is a document whose source is base64
/// PDF or plain text: `BetaWebFetchBlock` / `BetaDocumentBlock` in Anthropic's SDK types).
/// Text pages are kept as they came.
fn drop_fetched_bytes(block: &mut Value) {
    if block.get("type").and_then(Value::as_str) != Some("web_fetch_tool_result") {
        return;
    }
    let Some(result) = block.get_mut("content") else {
        return;
    };
    let url = result
        .get("url")
        .and_then(Value::as_str)
        .unwrap_or("the linked page");
    let text = format!("[A PDF fetched from {url}; its bytes are not kept between texts.]");
    let Some(source) = result.pointer_mut("/content/source") else {
        return;
    };
    if source.get("type").and_then(Value::as_str) == Some("base64") {
        *source = json!({"type": "text", "media_type": "text/plain", "data": text});
    }
}

/// Puts back each block [`strip_media`] named, prepared again from its vault copy (HEIC
/// through `converter`); a copy that is gone or no longer shows becomes a placeholder
/// naming it. Returns the copies put back, in order, for the next [`strip_media`].
/// Blocking: file reads and image work.
pub fn restore_media(
    vault: &Vault,
    converter: Option<&Converter>,
    transcript: &mut [Value],
) -> Vec<(Option<String>, Option<String>)> {
    let mut restored = Vec::new();
    for block in blocks_mut(transcript) {
        let Some((path, mime)) = block
            .get("text")
            .and_then(Value::as_str)
            .and_then(|t| t.strip_prefix(MARK)?.strip_suffix(']')?.rsplit_once(" | "))
            .map(|(p, m)| (p.to_string(), m.to_string()))
        else {
            continue;
        };
        let mime = Some(mime).filter(|m| !m.is_empty());
        match shown_again(vault, converter, &path, mime.as_deref()) {
            Ok(media) => {
                *block = media;
                restored.push((Some(path), mime));
            }
            Err(why) => {
                tracing::warn!(cause = %why, "an earlier attachment cannot be shown again");
                *block = placeholder(Some(&path));
            }
        }
    }
    restored
}

/// The block for the vault copy at `path` (vault-relative), as [`super::prepare`] made it.
fn shown_again(
    vault: &Vault,
    converter: Option<&Converter>,
    path: &str,
    mime: Option<&str>,
) -> Result<Value, String> {
    let rel = Path::new(path);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err("not a path inside the vault".into());
    }
    let root = std::fs::canonicalize(vault.root()).map_err(|e| e.to_string())?;
    let file = std::fs::canonicalize(root.join(rel)).map_err(|e| e.to_string())?;
    if !file.starts_with(&root) {
        return Err("the copy links out of the vault".into());
    }
    let bytes = std::fs::read(&file).map_err(|e| e.to_string())?;
    let kind = Kind::of(mime, None, Some(&file));
    show(kind, &bytes, &file, converter, &mut Budget::new())
}

/// Every content block of every message.
fn blocks_mut(transcript: &mut [Value]) -> impl Iterator<Item = &mut Value> {
    transcript
        .iter_mut()
        .filter_map(|m| match m.get_mut("content") {
            Some(Value::Array(blocks)) => Some(blocks.iter_mut()),
            _ => None,
        })
        .flatten()
}

/// [`restore_media`] off the runtime's workers, with the HEIC converter of this machine.
pub async fn restore_off_runtime(
    vault: &Vault,
    transcript: &mut Vec<Value>,
) -> Vec<(Option<String>, Option<String>)> {
    if !transcript.iter().any(|m| m.to_string().contains(MARK)) {
        return Vec::new();
    }
    let mut copy = transcript.clone();
    let done = vault
        .off_runtime(move |vault| {
            let restored = restore_media(vault, Converter::find().as_ref(), &mut copy);
            Ok((copy, restored))
        })
        .await;
    match done {
        Ok((back, restored)) => {
            *transcript = back;
            restored
        }
        Err(err) => {
            tracing::warn!(cause = %err, "earlier attachments could not be shown again");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attachments::{Attachment, AttachmentSettings, prepare};
    use chrono::Local;

    #[test]
    fn a_stripped_photo_comes_back_byte_for_byte_and_a_gone_copy_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("vault"));
        std::fs::create_dir(vault.root()).unwrap();
        let photo = dir.path().join("IMG_9.JPG");
        let img = image::RgbImage::from_fn(2000, 1500, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 40])
        });
        img.save_with_format(&photo, image::ImageFormat::Jpeg)
            .unwrap();
        let attachment = Attachment {
            guid: "g".into(),
            path: Some(photo.clone()),
            mime_type: Some("image/jpeg".into()),
            transfer_name: Some("IMG_9.JPG".into()),
            ..Attachment::default()
        };
        let settings = AttachmentSettings::load(vault.root());
        let p = prepare(&vault, &settings, None, &[attachment], Local::now());
        let first = p.blocks.clone();
        let mut transcript = vec![json!({"role": "user", "content": first.clone()})];
        assert_eq!(strip_media(&mut transcript, &p.shown_copies()), 1);
        let kept = serde_json::to_string(&transcript).unwrap();
        assert!(kept.len() < 1024, "{kept}");
        let restored = restore_media(&vault, None, &mut transcript);
        assert_eq!(restored, p.shown_copies());
        assert_eq!(
            transcript[0]["content"],
            json!(first),
            "the same blocks again"
        );

        strip_media(&mut transcript, &restored);
        std::fs::remove_file(vault.root().join(p.handled[0].saved.as_deref().unwrap())).unwrap();
        assert!(restore_media(&vault, None, &mut transcript).is_empty());
        let text = transcript[0]["content"][1]["text"].as_str().unwrap();
        assert!(
            text.contains("is gone") && text.contains("img9.jpg"),
            "{text}"
        );
    }

    /// Issue 10: sessions.json holds no PDF bytes, not even those of a page the server's web
    /// fetch read; a text page's result is kept byte for byte.
    #[test]
    fn a_fetched_pdf_keeps_its_block_but_not_its_bytes() {
        let fetched = |source: Value| {
            json!({"type": "web_fetch_tool_result", "tool_use_id": "srvtoolu_1", "content": {
                "type": "web_fetch_result", "url": "https://example.com/paper.pdf",
                "retrieved_at": "2026-12-02T07:00:00Z",
                "content": {"type": "document", "source": source, "title": "Paper"}}})
        };
        let pdf =
            json!({"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"});
        let page = json!({"type": "text", "media_type": "text/plain", "data": "Hello"});
        let mut transcript = vec![json!({"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_fetch",
             "input": {"url": "https://example.com/paper.pdf"}},
            fetched(pdf), fetched(page.clone()),
        ]})];
        assert_eq!(strip_media(&mut transcript, &[]), 0);
        let kept = transcript[0]["content"].clone();
        assert!(!kept.to_string().contains("JVBERi0"), "{kept}");
        let source = &kept[1]["content"]["content"]["source"];
        assert_eq!(source["type"], "text");
        assert!(
            source["data"]
                .as_str()
                .unwrap()
                .contains("https://example.com/paper.pdf"),
            "{source}"
        );
        assert_eq!(kept[1]["content"]["url"], "https://example.com/paper.pdf");
        assert_eq!(kept[2], fetched(page), "a text page is kept as it came");
    }

    #[test]
    fn only_vault_paths_are_read_and_uncopied_media_get_a_plain_placeholder() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::new(dir.path().join("vault"));
        std::fs::create_dir(vault.root()).unwrap();
        std::fs::write(dir.path().join("secret.png"), b"x").unwrap();
        let mut transcript = vec![json!({"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            {"type": "text", "text": format!("{MARK}../secret.png | image/png]")},
        ]})];
        assert_eq!(strip_media(&mut transcript, &[(None, None)]), 1);
        assert!(!transcript[0].to_string().contains("AAAA"));
        assert!(restore_media(&vault, None, &mut transcript).is_empty());
        assert!(
            transcript[0]["content"][1]["text"]
                .as_str()
                .unwrap()
                .contains("is gone")
        );
    }
}
