//! Queues work per conversation.
//!
//! Invariants: one conversation (chat guid) is handled strictly in order, one job at a time;
//! different conversations run concurrently up to a limit. A conversation's worker exists only
//! while it has work, so an idle bridge holds no tasks per chat. After cancellation a worker
//! finishes the job in hand and takes no more; what was left queued is still claimed in the
//! ledger and is handled on the next start.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chatdb::IncomingMessage;
use crate::mutex::lock;

/// Something to do in one conversation.
#[derive(Debug, Clone)]
pub enum Job {
    /// A new text from the user.
    Message(IncomingMessage),
    /// The conversation may have been idle too long: check, and end it if so.
    Timeout {
        /// The chat guid.
        chat: String,
    },
    /// Texts of the conversation may be waiting for the vault: handle them if it is back.
    Resume {
        /// The chat guid.
        chat: String,
    },
}

impl Job {
    /// The conversation the job belongs to.
    pub fn chat(&self) -> &str {
        match self {
            Job::Message(m) => &m.chat.guid,
            Job::Timeout { chat } | Job::Resume { chat } => chat,
        }
    }
}

/// Carries out one job; the router guarantees it is never called twice at once for a chat.
pub trait Handler: Send + Sync + 'static {
    /// Handles the job to its end (errors are the handler's to report).
    fn handle(&self, job: Job) -> impl Future<Output = ()> + Send;
}

/// Per-conversation queues over a shared concurrency limit.
pub struct Router<H> {
    inner: Arc<Inner<H>>,
}

impl<H> Clone for Router<H> {
    fn clone(&self) -> Self {
        Router {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<H> {
    handler: H,
    /// Chats with a running worker, and what waits behind the job in hand.
    queues: Mutex<HashMap<String, VecDeque<Job>>>,
    permits: Semaphore,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl<H: Handler> Router<H> {
    /// A router running at most `limit` conversations at once; workers are spawned on
    /// `tracker` and stop taking jobs once `cancel` fires.
    pub fn new(
        handler: H,
        limit: usize,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Router<H> {
        let inner = Inner {
            handler,
            queues: Mutex::new(HashMap::new()),
            permits: Semaphore::new(limit.max(1)),
            tracker,
            cancel,
        };
        Router {
            inner: Arc::new(inner),
        }
    }

    /// Queues a job behind the conversation's earlier ones.
    pub fn dispatch(&self, job: Job) {
        let chat = job.chat().to_string();
        {
            let mut queues = lock(&self.inner.queues);
            if let Some(queue) = queues.get_mut(&chat) {
                queue.push_back(job);
                return;
            }
            queues.insert(chat.clone(), VecDeque::new());
        }
        let inner = Arc::clone(&self.inner);
        self.inner
            .tracker
            .spawn(async move { inner.work(chat, job).await });
    }

    /// Whether the conversation has a job running or queued.
    pub fn is_busy(&self, chat: &str) -> bool {
        lock(&self.inner.queues).contains_key(chat)
    }

    /// How many conversations have work right now.
    pub fn busy_chats(&self) -> usize {
        lock(&self.inner.queues).len()
    }

    /// The handler, for callers that share it.
    pub fn handler(&self) -> &H {
        &self.inner.handler
    }
}

impl<H: Handler> Inner<H> {
    async fn work(self: Arc<Self>, chat: String, first: Job) {
        let mut job = first;
        loop {
            let permit = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => None,
                permit = self.permits.acquire() => permit.ok(),
            };
            if permit.is_none() {
                break;
            }
            self.handler.handle(job).await;
            drop(permit);
            if self.cancel.is_cancelled() {
                break;
            }
            let mut queues = lock(&self.queues);
            match queues.get_mut(&chat).and_then(VecDeque::pop_front) {
                Some(next) => job = next,
                None => {
                    queues.remove(&chat);
                    return;
                }
            }
        }
        lock(&self.queues).remove(&chat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chatdb::Chat;
    use chrono::Utc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::{Notify, mpsc};

    fn msg(chat: &str, n: i64) -> Job {
        Job::Message(IncomingMessage {
            rowid: n,
            guid: format!("g{n}"),
            chat: Chat {
                guid: chat.into(),
                identifier: chat.into(),
                is_group: false,
            },
            sender: "+15551234567".into(),
            text: format!("text {n}"),
            date: Utc::now(),
            origin: Default::default(),
            extra: None,
        })
    }

    /// Records (chat, rowid) on start and on end; waits for `gate` before finishing.
    struct Recorder {
        events: mpsc::UnboundedSender<(String, i64, bool)>,
        gate: Arc<Notify>,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Handler for Arc<Recorder> {
        async fn handle(&self, job: Job) {
            let Job::Message(m) = job else { return };
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            self.events
                .send((m.chat.guid.clone(), m.rowid, true))
                .unwrap();
            self.gate.notified().await;
            self.running.fetch_sub(1, Ordering::SeqCst);
            self.events.send((m.chat.guid, m.rowid, false)).unwrap();
        }
    }

    fn recorder() -> (Arc<Recorder>, mpsc::UnboundedReceiver<(String, i64, bool)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let rec = Recorder {
            events: tx,
            gate: Arc::new(Notify::new()),
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
        };
        (Arc::new(rec), rx)
    }

    #[tokio::test]
    async fn one_chat_is_strictly_ordered_and_serial() {
        let (rec, mut rx) = recorder();
        let router = Router::new(
            Arc::clone(&rec),
            4,
            TaskTracker::new(),
            CancellationToken::new(),
        );
        for n in 1..=3 {
            router.dispatch(msg("a", n));
        }
        let mut seen = vec![];
        for _ in 0..3 {
            let start = rx.recv().await.unwrap();
            assert!(start.2, "a job started before the previous one ended");
            rec.gate.notify_one();
            let end = rx.recv().await.unwrap();
            assert_eq!((start.0.clone(), start.1), (end.0, end.1));
            seen.push(start.1);
        }
        assert_eq!(seen, [1, 2, 3]);
        assert_eq!(rec.max_running.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn chats_run_concurrently_up_to_the_limit() {
        let (rec, mut rx) = recorder();
        let tracker = TaskTracker::new();
        let router = Router::new(
            Arc::clone(&rec),
            2,
            tracker.clone(),
            CancellationToken::new(),
        );
        for chat in ["a", "b", "c"] {
            router.dispatch(msg(chat, 1));
        }
        // Two start; the third waits for a permit.
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        assert!(first.2 && second.2 && first.0 != second.0);
        assert_eq!(rec.running.load(Ordering::SeqCst), 2);
        rec.gate.notify_one();
        let mut started = 2;
        while started < 3 {
            let (_, _, is_start) = rx.recv().await.unwrap();
            if is_start {
                started += 1;
            }
        }
        rec.gate.notify_one();
        rec.gate.notify_one();
        tracker.close();
        tracker.wait().await;
        assert_eq!(rec.max_running.load(Ordering::SeqCst), 2);
        assert_eq!(router.busy_chats(), 0, "idle chats keep no worker");
    }

    #[tokio::test]
    async fn cancellation_finishes_the_job_in_hand_and_takes_no_more() {
        let (rec, mut rx) = recorder();
        let tracker = TaskTracker::new();
        let cancel = CancellationToken::new();
        let router = Router::new(Arc::clone(&rec), 4, tracker.clone(), cancel.clone());
        router.dispatch(msg("a", 1));
        router.dispatch(msg("a", 2));
        assert_eq!(rx.recv().await.unwrap().1, 1);
        cancel.cancel();
        rec.gate.notify_one();
        tracker.close();
        tracker.wait().await;
        let ended = rx.recv().await.unwrap();
        assert_eq!((ended.1, ended.2), (1, false));
        assert!(
            rx.try_recv().is_err(),
            "job 2 must not start after cancellation"
        );
    }
}
