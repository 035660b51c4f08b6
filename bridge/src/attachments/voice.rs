//! Voice messages (`message.is_audio_message = 1`): the words are the transcript Messages
//! stores in the body's `IMAudioTranscription` attribute (see
//! [`crate::typedstream::decode_string_attribute`]); the audio itself is an attachment,
//! copied into the vault like any other. Messages often writes the transcript after the row
//! (it updates the row in place): [`wait_for_transcript`] waits for it as for a file.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _};
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

/// Reads message `rowid`'s body again from `chat_db` (read-only) on every change to the
/// database's files until it holds a transcript, or `limit` passes: the voice message as it
/// then stands. The database is the one intake reads; a read that fails counts as no
/// transcript yet.
pub async fn wait_for_transcript(chat_db: &Path, rowid: i64, limit: Duration) -> Voice {
    let Some(conn) = super::rows::open_read_only(chat_db) else {
        return Voice::NoTranscript;
    };
    // intake's own watch of the database's files, whose echo wake-ups see a commit that is
    // published a moment after its file event, with a slow poll as its safety net.
    let mut changes = crate::watcher::Watcher::new(chat_db, super::rows::SAFETY_POLL);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(Voice::Transcript(words)) = transcript(&conn, rowid) {
            return Voice::Transcript(words);
        }
        tracing::debug!(rowid, "waiting for a voice transcript");
        tokio::select! {
            () = changes.changed() => {}
            () = tokio::time::sleep_until(deadline) => {
                return transcript(&conn, rowid).unwrap_or(Voice::NoTranscript);
            }
        }
    }
}

/// The voice message in row `rowid`'s `attributedBody` now (column as Messages names it).
fn transcript(conn: &Connection, rowid: i64) -> Option<Voice> {
    let body: Option<Vec<u8>> = conn
        .query_row(
            "SELECT attributedBody FROM message WHERE ROWID = ?1",
            [rowid],
            |row| row.get::<_, Option<Vec<u8>>>(0),
        )
        .optional()
        .ok()
        .flatten()
        .flatten();
    Voice::of_row(true, body.as_deref())
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

    fn chat_db(dir: &Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("chat.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE message (ROWID INTEGER PRIMARY KEY, attributedBody BLOB); \
             INSERT INTO message VALUES (7, NULL);",
        )
        .unwrap();
        (path, conn)
    }

    #[tokio::test]
    async fn a_transcript_written_into_the_row_later_ends_the_wait_with_its_words() {
        let dir = tempfile::tempdir().unwrap();
        let (path, conn) = chat_db(dir.path());
        let writer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            let blob =
                include_bytes!("../../../tests/data/attributed-body/Transcription.typedstream");
            conn.execute(
                "UPDATE message SET attributedBody = ?1 WHERE ROWID = 7",
                [&blob[..]],
            )
            .unwrap();
        });
        let voice = wait_for_transcript(&path, 7, Duration::from_secs(20)).await;
        writer.await.unwrap();
        assert_eq!(voice, Voice::Transcript("This is a test".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_transcript_the_wait_ends_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _conn) = chat_db(dir.path());
        let voice = wait_for_transcript(&path, 7, Duration::from_secs(120)).await;
        assert_eq!(voice, Voice::NoTranscript);
        let missing = wait_for_transcript(&dir.path().join("none.db"), 7, Duration::ZERO).await;
        assert_eq!(missing, Voice::NoTranscript);
    }
}
