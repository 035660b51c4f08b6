//! Photos, screenshots and other files sent with a text: their rows in `chat.db`
//! ([`rows`]), what kind each is ([`kind`]), images made ready for the model ([`picture`],
//! HEIC through [`heif`]), PDFs as documents ([`pdf`]), where Obsidian wants the copies ([`folder`]) and the whole of it
//! voice messages' transcripts ([`voice`]), link previews ([`link`]), and the whole of it
//! for one text ([`prepare`]), after waiting for files still downloading ([`wait`]).
//!
//! Invariants: attachments are read, never changed, in Messages' folder; each is copied into
//! the vault at most once per handling of its text; image bytes reach the model's request
//! but never `sessions.json` ([`strip_media`]).

pub mod folder;
pub mod heif;
pub mod kind;
pub mod link;
pub mod pdf;
pub mod picture;
pub mod prepare;
pub mod rows;
pub mod voice;
pub mod wait;

pub use folder::AttachmentSettings;
pub use link::LinkPreview;
pub use prepare::{
    Handled, Handling, Prepared, prepare, prepare_off_runtime, strip_media, with_embeds,
};
pub use rows::Attachment;
pub use voice::Voice;
pub use wait::{DEFAULT_WAIT, Waited, wait_for_files};
