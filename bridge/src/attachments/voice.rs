//! Voice messages (`message.is_audio_message = 1`): the words are the transcript Messages
//! stores in the body's `IMAudioTranscription` attribute (see
//! [`crate::typedstream::decode_string_attribute`]); the audio itself is an attachment,
//! copied into the vault like any other.

use serde::{Deserialize, Serialize};

/// The attribute holding a voice message's transcript.
pub const TRANSCRIPT_ATTRIBUTE: &str = "IMAudioTranscription";

/// What a voice message came with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Voice {
    /// Messages' transcript of it.
    Transcript(String),
    /// No transcript (yet).
    NoTranscript,
}

impl Voice {
    /// The voice message of a row: `None` unless `is_audio`; the transcript from `body`.
    pub fn of_row(is_audio: bool, body: Option<&[u8]>) -> Option<Voice> {
        if !is_audio {
            return None;
        }
        let words =
            body.and_then(|b| crate::typedstream::decode_string_attribute(b, TRANSCRIPT_ATTRIBUTE));
        Some(match words {
            Some(words) if !words.trim().is_empty() => Voice::Transcript(words),
            _ => Voice::NoTranscript,
        })
    }
}

/// The text the model gets for a message: `text` as it is, or for a voice message its
/// transcript, marked as such (with any typed words after it).
pub fn with_voice(text: &str, voice: Option<&Voice>) -> String {
    let typed = if text.trim().is_empty() {
        String::new()
    } else {
        format!("\n\n{text}")
    };
    match voice {
        None => text.to_string(),
        Some(Voice::Transcript(words)) => {
            format!("[Voice message; Messages' transcript of it:]\n{words}{typed}")
        }
        Some(Voice::NoTranscript) => {
            format!("[Voice message (no transcript); the audio is attached]{typed}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_voice_blob_gives_its_words_marked_as_a_voice_message() {
        let blob = include_bytes!("../../../tests/data/attributed-body/Transcription.typedstream");
        let voice = Voice::of_row(true, Some(blob));
        assert_eq!(voice, Some(Voice::Transcript("This is a test".into())));
        assert_eq!(Voice::of_row(false, Some(blob)), None);
        assert_eq!(Voice::of_row(true, None), Some(Voice::NoTranscript));
        let text = with_voice("", voice.as_ref());
        assert_eq!(
            text,
            "[Voice message; Messages' transcript of it:]\nThis is a test"
        );
        assert_eq!(with_voice("hi", None), "hi");
        assert!(with_voice("", Some(&Voice::NoTranscript)).contains("no transcript"));
    }
}
