//! The inference queue of synchronous calls: concurrent requests' texts are coalesced
//! into one engine call (bounded in texts and by a short wait), as the TEI router
//! does, because one ONNX run over 32 texts costs far less than 32 runs of one. The
//! queue is bounded: when it is full the caller is told to back off instead of memory
//! growing.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Embedding, Engine, EngineError};

/// Limits of the coalescing.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Texts per engine call at most (a request larger than this runs alone).
    pub max_run_texts: usize,
    /// How long the first request of a run waits for others to join, beyond those
    /// already queued (0: no waiting; runs form from what queues during inference).
    pub max_wait: Duration,
    /// Requests waiting at most; beyond this [`QueueError::Overloaded`].
    pub max_queued: usize,
}

/// Why a request was not embedded.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("the inference queue is full; retry shortly")]
    Overloaded,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

struct Request {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Embedding>, EngineError>>,
}

/// Handle to the queue's thread; cheap to clone.
#[derive(Clone)]
pub struct InferenceQueue {
    queue: SyncSender<Request>,
}

impl InferenceQueue {
    /// Starts the thread that owns the coalescing loop for `engine`.
    pub fn start(engine: Arc<Engine>, limits: QueueLimits) -> Self {
        let (queue, incoming) = sync_channel(limits.max_queued.max(1));
        std::thread::Builder::new()
            .name("zeroshot-queue".into())
            .spawn(move || coalesce(&engine, &incoming, limits))
            .expect("spawn inference queue thread");
        Self { queue }
    }

    /// Embeds `texts` as part of whatever run forms around them.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, QueueError> {
        let (reply, answer) = oneshot::channel();
        // Counted before sending, so the queue's thread never takes it out first.
        crate::metrics::request_queued();
        self.queue
            .try_send(Request { texts, reply })
            .map_err(|err| match err {
                TrySendError::Full(_) | TrySendError::Disconnected(_) => {
                    crate::metrics::request_dequeued();
                    QueueError::Overloaded
                }
            })?;
        Ok(answer
            .await
            .map_err(|_| EngineError::Inference("inference queue stopped".to_string()))??)
    }
}

fn coalesce(engine: &Engine, incoming: &Receiver<Request>, limits: QueueLimits) {
    while let Ok(first) = incoming.recv() {
        crate::metrics::request_dequeued();
        let deadline = Instant::now() + limits.max_wait;
        let mut texts = first.texts.len();
        let mut run = vec![first];
        // Whatever queued while the last run ran joins at once; waiting for more is
        // optional (it costs an idle server that much latency on every call).
        while texts < limits.max_run_texts {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = if left.is_zero() {
                incoming.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                incoming.recv_timeout(left)
            };
            match next {
                Ok(next) => {
                    crate::metrics::request_dequeued();
                    texts += next.texts.len();
                    run.push(next);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let all: Vec<&str> = run
            .iter()
            .flat_map(|r| r.texts.iter().map(String::as_str))
            .collect();
        match engine.embed_texts(&all) {
            Ok(embeddings) => {
                let mut embeddings = embeddings.into_iter();
                for request in run {
                    let own: Vec<Embedding> =
                        embeddings.by_ref().take(request.texts.len()).collect();
                    let _ = request.reply.send(Ok(own));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for request in run {
                    let _ = request
                        .reply
                        .send(Err(EngineError::Inference(message.clone())));
                }
            }
        }
    }
}
