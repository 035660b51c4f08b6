//! Replies at most once: every reply — the agent's and the bridge's own — goes through an
//! [`Outbox`], which records it in the [`Ledger`] around the [`Sender`]'s send.
//!
//! Invariants: a text handled again after a crash never gets the same reply twice, and a
//! reply whose delivery is unknown (the sender timed out, or the bridge died while sending)
//! is never repeated; it is counted in the status instead.

use std::sync::Arc;

use chrono::Utc;

use crate::chatdb::Chat;
use crate::echoes::Echoes;
use crate::ledger::{self, Ledger, SendOutcome, SendStart};
use crate::sender::{SendError, Sender};
use crate::status::StatusBoard;

/// How a reply went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Sent now.
    Sent,
    /// The same reply to the same text was sent before (a re-run after a crash): not sent
    /// again.
    AlreadySent,
    /// It may or may not have been sent (the sender timed out, or the bridge died while
    /// sending): not sent again, and reported in the status.
    Unconfirmed,
}

impl Delivery {
    /// What the model is told.
    pub fn for_model(self) -> &'static str {
        match self {
            Delivery::Sent => "sent",
            Delivery::AlreadySent => "already sent",
            Delivery::Unconfirmed => {
                "delivery unconfirmed: it may have been sent, so it is not sent again"
            }
        }
    }
}

/// Sends replies, at most once per (text, reply) when it has a ledger.
#[derive(Clone, Debug)]
pub struct Outbox {
    sender: Sender,
    ledger: Option<Arc<Ledger>>,
    status: Option<StatusBoard>,
    /// Every reply is remembered here before it is sent, so its copies are not texts.
    echoes: Option<Arc<Echoes>>,
}

impl From<Sender> for Outbox {
    /// An outbox that records nothing: every call sends.
    fn from(sender: Sender) -> Outbox {
        Outbox {
            sender,
            ledger: None,
            status: None,
            echoes: None,
        }
    }
}

impl Outbox {
    /// An outbox that records replies in `ledger` and counts unconfirmed ones in `status`.
    pub fn new(sender: Sender, ledger: Arc<Ledger>, status: StatusBoard) -> Outbox {
        Outbox {
            sender,
            ledger: Some(ledger),
            status: Some(status),
            echoes: None,
        }
    }

    /// Remembers every reply in `echoes` before sending it.
    pub fn with_echoes(mut self, echoes: Arc<Echoes>) -> Outbox {
        self.echoes = Some(echoes);
        self
    }

    /// Remembers the reply (durably, off the runtime's workers), then sends it.
    async fn deliver(&self, chat: &Chat, text: &str) -> Result<(), SendError> {
        if let Some(echoes) = &self.echoes {
            let (echoes, guid, copy) = (Arc::clone(echoes), chat.guid.clone(), text.to_string());
            let remembered =
                tokio::task::spawn_blocking(move || echoes.remember(&guid, &copy, Utc::now()))
                    .await;
            if !matches!(remembered, Ok(Ok(()))) {
                tracing::warn!(chat = ?chat.guid, "could not remember the reply; its copy in a chat with yourself may be read as a text");
            }
        }
        self.sender.send(chat, text).await
    }

    /// Sends `text` into `chat` as a reply to the text whose guid is `source`, unless that
    /// very reply to that text was sent (or may have been) before. Without a `source` (or a
    /// ledger) it just sends.
    ///
    /// A failure to record is logged and the reply is sent anyway: a reply matters more
    /// than the guarantee against repeating it.
    pub async fn send(
        &self,
        chat: &Chat,
        source: Option<&str>,
        text: &str,
    ) -> Result<Delivery, SendError> {
        let (Some(ledger), Some(source)) = (&self.ledger, source) else {
            self.deliver(chat, text).await?;
            return Ok(Delivery::Sent);
        };
        let digest = ledger::digest(text);
        let recorded = match ledger.begin_send(source, &digest).await {
            Ok(SendStart::Go) => true,
            Ok(SendStart::AlreadySent) => {
                tracing::info!(chat = ?chat.guid, ?source, "reply already sent; not sending it again");
                return Ok(Delivery::AlreadySent);
            }
            Ok(SendStart::Unconfirmed { just_found }) => {
                tracing::warn!(chat = ?chat.guid, ?source,
                    "reply unconfirmed (the bridge stopped while sending it); not sending it again");
                if just_found {
                    self.count_unconfirmed(chat, None);
                }
                return Ok(Delivery::Unconfirmed);
            }
            Err(err) => {
                tracing::warn!(chat = ?chat.guid, cause = %err, "could not record the reply; sending it anyway");
                false
            }
        };
        let result = self.deliver(chat, text).await;
        let outcome = match &result {
            Ok(()) => SendOutcome::Sent,
            Err(err) if is_certainly_unsent(err) => SendOutcome::NotSent,
            Err(_) => SendOutcome::Unknown,
        };
        if recorded && let Err(err) = ledger.end_send(source, &digest, outcome).await {
            tracing::warn!(chat = ?chat.guid, ?source, ?outcome, cause = %err, "could not record how the reply went");
        }
        match (result, outcome) {
            (Ok(()), _) => Ok(Delivery::Sent),
            (Err(err), SendOutcome::Unknown) => {
                tracing::warn!(chat = ?chat.guid, ?source, cause = %err,
                    "reply unconfirmed; it will not be sent again");
                self.count_unconfirmed(chat, Some(err.to_string()));
                Ok(Delivery::Unconfirmed)
            }
            (Err(err), _) => Err(err),
        }
    }

    fn count_unconfirmed(&self, chat: &Chat, cause: Option<String>) {
        if let Some(status) = &self.status {
            status.update(|s| {
                s.unconfirmed_sends += 1;
                s.last_error = Some(cause.unwrap_or_else(|| {
                    format!(
                        "a reply in {} may not have been delivered (the bridge stopped while \
                         sending it); it was not sent again",
                        chat.guid
                    )
                }));
            });
        }
    }
}

/// Whether the error proves that Messages was never asked to send (`osascript` did not
/// start, was refused, or failed): anything else — a time-out — leaves it unknown.
fn is_certainly_unsent(err: &SendError) -> bool {
    matches!(
        err,
        SendError::Spawn { .. } | SendError::AutomationDenied { .. } | SendError::Failed { .. }
    )
}

/// The fake `osascript` shared with the end-to-end tests (declared outside `tests`, so that
/// `#[path]` resolves from this file).
#[cfg(all(test, unix))]
#[allow(clippy::duplicate_mod)] // `sender` loads it too, privately.
#[path = "../../tests/util/osascript.rs"]
mod fake_osascript;

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::fake_osascript::FakeOsascript;
    use super::*;
    use crate::agent::{ToolOutput, ToolRunner};
    use crate::tools::Tools;
    use crate::vault::Vault;

    fn chat() -> Chat {
        Chat {
            guid: "iMessage;-;+15551234567".into(),
            identifier: "+15551234567".into(),
            is_group: false,
        }
    }
    use crate::chatdb::IncomingMessage;
    use crate::ledger::Cursor;

    struct World {
        dir: tempfile::TempDir,
        fake: FakeOsascript,
        status: StatusBoard,
    }

    impl World {
        fn new() -> World {
            let dir = tempfile::tempdir().unwrap();
            let fake = FakeOsascript::install(&dir.path().join("osascript"));
            World {
                dir,
                fake,
                status: StatusBoard::new(None),
            }
        }

        /// The ledger as a fresh process would open it, with text `GUID-1` claimed.
        fn ledger(&self) -> Arc<Ledger> {
            let path = self.dir.path().join(crate::state::FILE);
            let (state, _) = crate::state::StateDb::open(path).unwrap();
            let ledger = Ledger::open(Arc::new(state)).unwrap();
            if ledger.unfinished().unwrap().is_empty() {
                let text = IncomingMessage {
                    rowid: 1,
                    guid: "GUID-1".into(),
                    chat: chat(),
                    sender: "+15551234567".into(),
                    text: "call mom".into(),
                    date: chrono::Utc::now(),
                    origin: Default::default(),
                    extra: None,
                };
                let cursor = Cursor {
                    rowid: 1,
                    date: None,
                    mark: None,
                };
                ledger.blocking_claim(&[text], cursor).unwrap();
            }
            Arc::new(ledger)
        }

        fn outbox(&self, ledger: &Arc<Ledger>) -> Outbox {
            let sender = Sender::with_program(self.fake.program());
            Outbox::new(sender, Arc::clone(ledger), self.status.clone())
        }

        fn sent(&self) -> Vec<String> {
            self.fake.calls().into_iter().map(|c| c.text).collect()
        }
    }

    /// Issue 4: a text handled again (a re-run after a crash) never gets the same reply
    /// twice, across a restart too; a different reply, or a reply to another text, goes.
    #[tokio::test]
    async fn a_reply_is_sent_once_per_text_even_when_the_text_is_handled_again() {
        let w = World::new();
        let ledger = w.ledger();
        let outbox = w.outbox(&ledger);
        let texts = ["Saved to Tasks ✅", "crlf\r\nand\u{2028}sep", "שלום 𝔘"];
        for text in texts {
            let first = outbox.send(&chat(), Some("GUID-1"), text).await.unwrap();
            assert_eq!(first, Delivery::Sent);
            let again = outbox.send(&chat(), Some("GUID-1"), text).await.unwrap();
            assert_eq!(again, Delivery::AlreadySent);
        }
        assert_eq!(w.sent(), texts);

        // A restart: the record is on disk.
        drop((outbox, ledger));
        let ledger = w.ledger();
        let tools = Tools::new(
            Vault::new(w.dir.path().join("vault")),
            w.outbox(&ledger),
            chat(),
            Some("GUID-1".into()),
        );
        let out = tools
            .call("send_message", &json!({"message": texts[0]}))
            .await;
        assert_eq!(out, ToolOutput::ok("already sent"));
        assert_eq!(tools.record().messages_sent, [texts[0]]);
        let out = tools
            .call("send_message", &json!({"message": "Anything else?"}))
            .await;
        assert_eq!(out, ToolOutput::ok("sent"));
        assert_eq!(w.sent().len(), 4);

        // Without a source nothing is recorded: every call sends.
        let outbox = w.outbox(&ledger);
        for _ in 0..2 {
            let sent = outbox.send(&chat(), None, "No answer, so Inbox.").await;
            assert_eq!(sent.unwrap(), Delivery::Sent);
        }
        assert_eq!(w.sent().len(), 6);
        assert_eq!(w.status.get().unconfirmed_sends, 0);
    }

    /// Issue 4: a reply left in flight by a crash may have gone out: it is reported
    /// once and never sent again.
    #[tokio::test]
    async fn a_reply_in_flight_at_a_crash_is_reported_and_never_repeated() {
        let w = World::new();
        let ledger = w.ledger();
        let digest = ledger::digest("Saved to Tasks ✅");
        assert_eq!(
            ledger.begin_send("GUID-1", &digest).await.unwrap(),
            SendStart::Go
        );
        drop(ledger); // the process dies here, osascript running

        let ledger = w.ledger();
        let outbox = w.outbox(&ledger);
        for _ in 0..2 {
            let sent = outbox
                .send(&chat(), Some("GUID-1"), "Saved to Tasks ✅")
                .await;
            assert_eq!(sent.unwrap(), Delivery::Unconfirmed);
        }
        assert!(w.sent().is_empty());
        let status = w.status.get();
        assert_eq!(status.unconfirmed_sends, 1, "reported once");
        let error = status.last_error.unwrap();
        assert!(error.contains("may not have been delivered"), "{error}");
        assert!(!error.contains("Saved"), "no message text in the status");
    }

    /// A send that certainly failed is not recorded as sent: the next try goes.
    #[tokio::test]
    async fn a_failed_send_can_be_tried_again() {
        let w = World::new();
        let ledger = w.ledger();
        let outbox = w.outbox(&ledger);
        w.fake.fail_next(
            1,
            "execution error: Messages got an error: Can’t send. (-1700)",
        );
        let err = outbox
            .send(&chat(), Some("GUID-1"), "hello")
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::Failed { .. }), "{err:?}");
        let sent = outbox.send(&chat(), Some("GUID-1"), "hello").await;
        assert_eq!(sent.unwrap(), Delivery::Sent);
        assert_eq!(w.sent(), ["hello", "hello"]);
        assert_eq!(ledger.unconfirmed_sends().unwrap(), 0);
    }

    #[test]
    fn only_errors_that_prove_nothing_was_sent_allow_a_retry() {
        let spawn = SendError::Spawn {
            program: "osascript".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let denied = SendError::AutomationDenied {
            stderr: "(-1743)".into(),
        };
        let failed = SendError::Failed {
            chat: "c".into(),
            status: "exit status: 1".into(),
            stderr: "(-1700)".into(),
        };
        for err in [spawn, denied, failed] {
            assert!(is_certainly_unsent(&err), "{err:?}");
        }
    }
}
