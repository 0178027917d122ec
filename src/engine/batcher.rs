//! Dynamic batching for synchronous calls: concurrent requests' texts are coalesced
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
pub struct BatcherLimits {
    /// Texts per engine call at most (a request larger than this runs alone).
    pub max_batch_texts: usize,
    /// How long the first request of a batch waits for others to join, beyond those
    /// already queued (0: no waiting; batches form from what queues during inference).
    pub max_wait: Duration,
    /// Requests waiting at most; beyond this [`BatchError::Overloaded`].
    pub max_queued: usize,
}

/// Why a request was not embedded.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the inference queue is full; retry shortly")]
    Overloaded,
    #[error(transparent)]
    Engine(#[from] EngineError),
}

struct Request {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Embedding>, EngineError>>,
}

/// Handle to the batching thread; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: SyncSender<Request>,
}

impl Batcher {
    /// Starts the thread that owns the coalescing loop for `engine`.
    pub fn start(engine: Arc<Engine>, limits: BatcherLimits) -> Self {
        let (queue, incoming) = sync_channel(limits.max_queued.max(1));
        std::thread::Builder::new()
            .name("zeroshot-batcher".into())
            .spawn(move || coalesce(&engine, &incoming, limits))
            .expect("spawn batcher thread");
        Self { queue }
    }

    /// Embeds `texts` as part of whatever batch forms around them.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Embedding>, BatchError> {
        let (reply, answer) = oneshot::channel();
        // Counted before sending, so the batching thread never takes it out first.
        crate::metrics::request_queued();
        self.queue
            .try_send(Request { texts, reply })
            .map_err(|err| match err {
                TrySendError::Full(_) | TrySendError::Disconnected(_) => {
                    crate::metrics::request_dequeued();
                    BatchError::Overloaded
                }
            })?;
        Ok(answer
            .await
            .map_err(|_| EngineError::Inference("batcher stopped".to_string()))??)
    }
}

fn coalesce(engine: &Engine, incoming: &Receiver<Request>, limits: BatcherLimits) {
    while let Ok(first) = incoming.recv() {
        crate::metrics::request_dequeued();
        let deadline = Instant::now() + limits.max_wait;
        let mut texts = first.texts.len();
        let mut batch = vec![first];
        // Whatever queued while the last batch ran joins at once; waiting for more is
        // optional (it costs an idle server that much latency on every call).
        while texts < limits.max_batch_texts {
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
                    batch.push(next);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let all: Vec<&str> = batch
            .iter()
            .flat_map(|r| r.texts.iter().map(String::as_str))
            .collect();
        match engine.embed_texts(&all) {
            Ok(embeddings) => {
                let mut embeddings = embeddings.into_iter();
                for request in batch {
                    let own: Vec<Embedding> =
                        embeddings.by_ref().take(request.texts.len()).collect();
                    let _ = request.reply.send(Ok(own));
                }
            }
            Err(err) => {
                let message = err.to_string();
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(EngineError::Inference(message.clone())));
                }
            }
        }
    }
}
