//! Whether a PDF can be shown to the model as a `document` block. Anthropic's PDF guide
//! (platform.claude.com/docs/en/build-with-claude/pdf-support, "Check PDF requirements"):
//! a request of at most 32 MB and 100 pages (for 200k-token models), "both limits on the
//! entire request payload", and standard PDFs only ("no passwords/encryption").

use base64::Engine as _;
use serde_json::{Value, json};

/// Most pages shown in one request.
pub const MAX_PAGES: u32 = 100;

/// Why a PDF is attached but not shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not a PDF lopdf can read.
    #[error("it cannot be read as a PDF")]
    Unreadable,
    /// Password-protected.
    #[error("it is password-protected")]
    Encrypted,
    /// More pages than the request may still hold.
    #[error("it has {pages} pages; at most {room} more can be shown")]
    TooManyPages {
        /// Its pages.
        pages: u32,
        /// Pages the request can still take.
        room: u32,
    },
}

/// The page count of `bytes`, if it is a PDF the API takes.
pub fn pages(bytes: &[u8]) -> Result<u32, Refusal> {
    let doc = lopdf::Document::load_mem(bytes).map_err(|_| Refusal::Unreadable)?;
    if doc.is_encrypted() {
        return Err(Refusal::Encrypted);
    }
    Ok(u32::try_from(doc.get_pages().len()).unwrap_or(u32::MAX))
}

/// A `document` block (base64 source) of the PDF `bytes`.
pub fn document_block(bytes: &[u8]) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_counted_and_garbage_is_refused() {
        assert_eq!(pages(&util::media::pdf(3)), Ok(3));
        assert_eq!(pages(&util::media::pdf(1)), Ok(1));
        assert_eq!(pages(b"%PDF-1.4 nonsense"), Err(Refusal::Unreadable));
        assert_eq!(pages(b""), Err(Refusal::Unreadable));
    }
}
