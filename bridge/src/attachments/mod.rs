//! Photos, screenshots and other files sent with a text: their rows in `chat.db`
//! ([`rows`]), what kind each is ([`kind`]), images made ready for the model ([`picture`],
//! HEIC through [`heif`]), PDFs as documents ([`pdf`]), voice messages' transcripts
//! ([`voice`]) and audio ([`audio`]), link previews ([`link`]), where Obsidian wants the
//! copies ([`folder`]), and the whole of it for one text ([`prepare`]), after waiting for
//! files still downloading ([`wait`]).
//!
//! Invariants: attachments are read, never changed, in Messages' folder; each is copied into
//! the vault at most once per handling of its text; image bytes reach the model's request
//! but never `sessions.json` ([`strip_media`]); a clarification shows them again from the
//! vault copies ([`replay`]).

pub mod audio;
pub mod folder;
pub mod heif;
pub mod kind;
pub mod link;
pub mod pdf;
pub mod picture;
pub mod prepare;
pub mod replay;
pub mod rows;
pub mod voice;
pub mod wait;

pub use folder::AttachmentSettings;
pub use link::LinkPreview;
pub use prepare::{
    Handled, Handling, Prepared, place_off_runtime, prepare, prepare_off_runtime, with_embeds,
};
pub use replay::{restore_off_runtime, strip_media};
pub use rows::Attachment;
pub use voice::Voice;
pub use wait::{DEFAULT_WAIT, RowsOf, Waited, any_to_come, wait_for_files};

/// What came with a text's words, read from its row.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extras {
    /// The files sent with it (photos, PDFs, …), in Messages' order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
    /// For a voice message, its transcript (or that it has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<Voice>,
    /// The preview Messages stored for a link in it (`payload_data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkPreview>,
}

impl Extras {
    /// The voice message and link preview of a row (attachments are read separately);
    /// `None` when it has neither.
    pub fn of_row(
        is_audio: bool,
        body: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Option<Box<Extras>> {
        let voice = Voice::of_row(is_audio, body);
        let link = payload.and_then(LinkPreview::parse);
        (voice.is_some() || link.is_some()).then(|| {
            Box::new(Extras {
                attachments: Vec::new(),
                voice,
                link,
            })
        })
    }
}
