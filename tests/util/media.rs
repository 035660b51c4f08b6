//! The fake API's checks of image and PDF content blocks, as the real API makes them.
//!
//! Source: Anthropic's vision guide (https://platform.claude.com/docs/en/build-with-claude/vision):
//! an `image` block has a `source` of `{"type": "base64", "media_type", "data"}` (or a
//! `url` source); supported media types are `image/jpeg`, `image/png`, `image/gif` and
//! `image/webp`; "Maximum image size: 5 MB" per image through the API; up to 100 images per
//! API request; images larger than 8000×8000 px are rejected, and when more than 20 images are
//! in one request, images over 2000×2000 px are. The API also rejects bytes that are not of
//! the declared media type ("Image does not match the provided media type …", as quoted in
//! public reports, e.g. anthropics/claude-code issues). Images are user content only.

use base64::Engine as _;
use serde_json::Value;

/// Media types the API takes for images.
pub const IMAGE_TYPES: [&str; 4] = ["image/jpeg", "image/png", "image/gif", "image/webp"];
/// Largest image, decoded, in bytes.
pub const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Most images in one request.
pub const MAX_IMAGES: usize = 100;
/// Largest edge of any image.
pub const MAX_EDGE: u32 = 8000;
/// Largest edge when a request holds more than [`MANY_IMAGES`].
pub const MAX_EDGE_MANY: u32 = 2000;
/// Above this many images the smaller edge limit applies.
pub const MANY_IMAGES: usize = 20;

/// Checks every `image` block of `messages`; `Err` names the first problem.
pub fn check(messages: &[Value]) -> Result<(), String> {
    let mut sizes = Vec::new();
    let mut pages = 0;
    for (i, message) in messages.iter().enumerate() {
        let Some(Value::Array(blocks)) = message.get("content") else {
            continue;
        };
        for (j, block) in blocks.iter().enumerate() {
            if block.get("type").and_then(Value::as_str) == Some("document") {
                pages += check_document(block)
                    .map_err(|e| format!("messages.{i}.content.{j}.document.source: {e}"))?;
                continue;
            }
            if block.get("type").and_then(Value::as_str) != Some("image") {
                continue;
            }
            if message.get("role").and_then(Value::as_str) != Some("user") {
                return Err(format!(
                    "messages.{i}.content.{j}: images are only allowed in user messages"
                ));
            }
            let size = check_image(block)
                .map_err(|e| format!("messages.{i}.content.{j}.image.source: {e}"))?;
            sizes.push((i, j, size));
        }
    }
    if pages > MAX_PDF_PAGES {
        return Err(format!(
            "A maximum of {MAX_PDF_PAGES} PDF pages may be provided."
        ));
    }
    if sizes.len() > MAX_IMAGES {
        return Err(format!(
            "messages: too many images ({} > {MAX_IMAGES})",
            sizes.len()
        ));
    }
    let limit = if sizes.len() > MANY_IMAGES {
        MAX_EDGE_MANY
    } else {
        MAX_EDGE
    };
    for (i, j, (w, h)) in sizes {
        if w > limit || h > limit {
            return Err(format!(
                "messages.{i}.content.{j}.image.source.base64.data: image dimensions exceed max allowed size: {limit} pixels"
            ));
        }
    }
    Ok(())
}

/// Most PDF pages in one request (200k-token models), per the PDF guide
/// (https://platform.claude.com/docs/en/build-with-claude/pdf-support, "Check PDF
/// requirements"), which also takes only base64 `application/pdf` sources of standard,
/// unencrypted PDFs.
pub const MAX_PDF_PAGES: usize = 100;

/// One document block's source; its page count when valid.
fn check_document(block: &Value) -> Result<usize, String> {
    let source = block.get("source").ok_or("Field required")?;
    if source.get("type").and_then(Value::as_str) != Some("base64") {
        return Err("only base64 sources are used by these tests".into());
    }
    if source.get("media_type").and_then(Value::as_str) != Some("application/pdf") {
        return Err("base64.media_type: Input should be 'application/pdf'".into());
    }
    let data = source
        .get("data")
        .and_then(Value::as_str)
        .ok_or("base64.data: Field required")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| "base64.data: The PDF data is not valid base64".to_string())?;
    let doc = lopdf::Document::load_mem(&bytes)
        .map_err(|_| "The PDF specified was not valid.".to_string())?;
    if doc.is_encrypted() {
        return Err("The PDF specified is password protected.".into());
    }
    Ok(doc.get_pages().len())
}

/// One image block's source; its pixel size when valid.
fn check_image(block: &Value) -> Result<(u32, u32), String> {
    let source = block.get("source").ok_or("Field required")?;
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {}
        Some("url") => return Err("url sources are not used by these tests".into()),
        other => {
            return Err(format!(
                "type: Input tag {other:?} is not 'base64' or 'url'"
            ));
        }
    }
    let media_type = source
        .get("media_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !IMAGE_TYPES.contains(&media_type) {
        return Err(format!(
            "base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp', got {media_type:?}"
        ));
    }
    let data = source
        .get("data")
        .and_then(Value::as_str)
        .ok_or("base64.data: Field required")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| "base64.data: The image data is not valid base64".to_string())?;
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(format!(
            "base64: image exceeds 5 MB maximum: {} bytes > {MAX_IMAGE_BYTES} bytes",
            bytes.len()
        ));
    }
    let format = image::guess_format(&bytes)
        .map_err(|_| "base64.data: the bytes are not an image".to_string())?;
    if format.to_mime_type() != media_type {
        return Err(format!(
            "base64.data: Image does not match the provided media type {media_type}"
        ));
    }
    let size = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format)
        .into_dimensions()
        .map_err(|e| format!("base64.data: the image cannot be read: {e}"))?;
    Ok(size)
}

/// The decoded images of a request body, in order.
pub fn images(body: &Value) -> Vec<(String, Vec<u8>)> {
    blocks_of(body, "image")
}

/// The decoded sources of a request's blocks of type `kind` (`image`, `document`).
pub fn blocks_of(body: &Value, kind: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for message in body["messages"].as_array().into_iter().flatten() {
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] == kind {
                let media_type = block["source"]["media_type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let data = block["source"]["data"].as_str().unwrap_or_default();
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap_or_default();
                out.push((media_type, bytes));
            }
        }
    }
    out
}

/// A valid PDF of `pages` empty pages (a correct cross-reference table), as a scanner might
/// write a document.
pub fn pdf(pages: usize) -> Vec<u8> {
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            (0..pages)
                .map(|i| format!("{} 0 R", i + 3))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    ];
    for _ in 0..pages {
        objects.push("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>".to_string());
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn png(w: u32, h: u32) -> String {
        let mut out = Vec::new();
        image::DynamicImage::new_rgb8(w, h)
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    fn user(blocks: Vec<Value>) -> Vec<Value> {
        vec![json!({"role": "user", "content": blocks})]
    }

    fn img(media_type: &str, data: &str) -> Value {
        json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
    }

    fn doc(media_type: &str, data: &str) -> Value {
        json!({"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}})
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn what_the_api_rejects_is_rejected() {
        let ok = png(10, 10);
        assert_eq!(check(&user(vec![img("image/png", &ok)])), Ok(()));
        assert_eq!(
            check(&user(vec![doc("application/pdf", &b64(&pdf(100)))])),
            Ok(())
        );
        let cases: Vec<(Vec<Value>, &str)> = vec![
            (user(vec![img("image/jpeg", &ok)]), "does not match"),
            (user(vec![img("image/heic", &ok)]), "Input should be"),
            (user(vec![img("image/png", "!!!")]), "not valid base64"),
            (user(vec![json!({"type": "image"})]), "Field required"),
            (user(vec![img("image/png", &png(8001, 1))]), "8000 pixels"),
            (user(vec![img("image/png", &ok); 101]), "too many images"),
            (
                user(vec![img("image/png", &png(2001, 1)); 21]),
                "2000 pixels",
            ),
            (
                vec![json!({"role": "assistant", "content": [img("image/png", &ok)]})],
                "only allowed in user",
            ),
            (
                user(vec![doc("application/pdf", &b64(b"%PDF-1.4 junk"))]),
                "not valid",
            ),
            (
                user(vec![doc("image/png", &b64(&pdf(1)))]),
                "application/pdf",
            ),
            (
                user(vec![
                    doc("application/pdf", &b64(&pdf(60))),
                    doc("application/pdf", &b64(&pdf(41))),
                ]),
                "100 PDF pages",
            ),
        ];
        for (messages, want) in cases {
            let err = check(&messages).unwrap_err();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }
}
