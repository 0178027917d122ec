//! The webhook dispatcher: every `serve` instance runs one, on its own task, so a slow
//! or failing receiver never slows scoring. Each round it
//! 1. enqueues: jobs with a `webhook_url` that ended in the last 24 h and whose ending
//!    has no delivery row get one (the unique (job, ending) index lets racing instances
//!    enqueue it once);
//! 2. claims due deliveries under a short lease and sends each (at most 8 at a time),
//!    recording the outcome and, on failure, when to try again.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use reqwest::Url;
use tokio::sync::Semaphore;

use super::address::{pin, ResolveError};
use super::{event_type, retry_delay, signature, Settings, WINDOW};
use crate::clock::{now_ms, rfc3339};
use crate::db::batch::JobRow;
use crate::db::webhooks::{Attempt, DeliveryRow, NewDelivery};
use crate::db::{Db, DbError};
use crate::outage::{self, Dependency};
use crate::wire::{Event, Shards};

/// Deliveries attempted at once by one instance.
const IN_FLIGHT: usize = 8;
/// One attempt, DNS resolution included, gives up after this.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// An attempt's claim: longer than an attempt, short enough that a dead instance's
/// claims are soon free again.
const LEASE: Duration = Duration::from_secs(30);
/// Job endings enqueued per round at most.
const ENQUEUE_BATCH: i64 = 100;

/// What the dispatcher needs; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub db: Db,
    /// Identifies this instance's claims.
    pub owner: String,
    pub settings: Settings,
}

/// Why an attempt did not get a 2xx.
#[derive(Debug)]
enum Failure {
    /// Worth retrying: a network error, a timeout, a non-2xx status.
    Retry { status: Option<i64>, error: String },
    /// Not worth retrying: the receiver's address is refused.
    Fatal(String),
}

impl From<DbError> for Failure {
    fn from(err: DbError) -> Self {
        Failure::Retry {
            status: None,
            error: err.to_string(),
        }
    }
}

impl Dispatcher {
    /// Runs until the process ends. Polls as often as the retry base, between 0.1 s
    /// and 1 s.
    pub async fn run(self) {
        let poll = self
            .settings
            .retry_base
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        loop {
            // A database outage is logged once, not at every poll.
            match self.poll(&permits).await {
                Ok(()) => outage::recovered(Dependency::Database),
                Err(err) => {
                    outage::fault(&err.into());
                }
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Enqueues new job endings and starts as many due deliveries as there are free
    /// permits.
    async fn poll(&self, permits: &Arc<Semaphore>) -> Result<(), DbError> {
        self.enqueue().await?;
        let free = permits.available_permits() as i64;
        if free > 0 {
            let claimed = self
                .db
                .claim_deliveries(&self.owner, LEASE.as_millis() as i64, free)
                .await?;
            for delivery in claimed {
                let permit = permits.clone().acquire_owned().await;
                let this = self.clone();
                tokio::spawn(async move {
                    this.attempt(delivery).await;
                    drop(permit);
                });
            }
        }
        Ok(())
    }

    /// Gives every recent, unannounced job ending its delivery.
    async fn enqueue(&self) -> Result<(), DbError> {
        let since = now_ms() - WINDOW.as_millis() as i64;
        for job in self.db.unannounced_endings(since, ENQUEUE_BATCH).await? {
            let shards = self.db.shard_counts(&[job.id.as_str()]).await?;
            let Some((event, url, ended_at)) = announce(&job, shards.get(&job.id).copied()) else {
                continue;
            };
            let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
            let enqueued = self
                .db
                .enqueue_delivery(&NewDelivery {
                    id: &id,
                    account_id: &job.account_id,
                    job_id: &job.id,
                    ended_at,
                    event_type: &event.kind,
                    url,
                    payload: &serde_json::to_string(&event).expect("serialisable"),
                })
                .await?;
            if enqueued {
                tracing::info!(job = %job.id, delivery = %id, event = %event.kind, "webhook event enqueued");
            }
        }
        Ok(())
    }

    /// Sends one claimed delivery and records how it went.
    async fn attempt(&self, delivery: DeliveryRow) {
        let outcome = match tokio::time::timeout(ATTEMPT_TIMEOUT, self.send(&delivery)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::Retry {
                status: None,
                error: format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
            }),
        };
        let attempt = self.judge(&delivery, outcome);
        report(&delivery, &attempt);
        match self
            .db
            .record_attempt(&delivery.id, &self.owner, &attempt)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(delivery = %delivery.id, "webhook attempt outlived its lease")
            }
            Err(err) => {
                tracing::error!(delivery = %delivery.id, error = %err, "recording a webhook attempt failed")
            }
        }
    }

    /// What the `outcome` of sending `delivery` makes of it: delivered, retried later,
    /// or failed for good (a fatal error, or no retry left within 24 h of the event).
    fn judge(&self, delivery: &DeliveryRow, outcome: Result<i64, Failure>) -> Attempt {
        match outcome {
            Ok(status) => Attempt::Delivered { status },
            Err(Failure::Fatal(error)) => Attempt::Failed {
                status: None,
                error,
            },
            Err(Failure::Retry { status, error }) => {
                let next = now_ms()
                    + retry_delay(self.settings.retry_base, delivery.attempts + 1).as_millis()
                        as i64;
                if next > delivery.ended_at + WINDOW.as_millis() as i64 {
                    Attempt::Failed {
                        status,
                        error: format!("{error}; no more attempts 24 h after the event"),
                    }
                } else {
                    Attempt::Retry {
                        status,
                        error,
                        next_attempt_at: next,
                    }
                }
            }
        }
    }

    /// One POST of the delivery's payload, signed now; the receiver's status.
    async fn send(&self, delivery: &DeliveryRow) -> Result<i64, Failure> {
        let url = Url::parse(&delivery.url).map_err(|err| Failure::Fatal(err.to_string()))?;
        let pinned = pin(&url, self.settings.allow_private)
            .await
            .map_err(|err| match err {
                ResolveError::Refused(_) => Failure::Fatal(err.to_string()),
                ResolveError::Lookup { .. } => Failure::Retry {
                    status: None,
                    error: err.to_string(),
                },
            })?;
        let secrets = super::secret(&self.db, &delivery.account_id).await?;
        let timestamp = now_ms() / 1000;
        let signed = signature(
            &secrets.signing_secrets(now_ms()),
            &delivery.id,
            timestamp,
            &delivery.payload,
        );
        // No redirects and no proxy; a name goes to the address that was checked, so
        // the receiver's DNS cannot switch it to another one between check and connect.
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT);
        if let (Some(address), Some(host)) = (pinned, url.host_str()) {
            client = client.resolve(host, address);
        }
        let client = client.build().map_err(|err| Failure::Retry {
            status: None,
            error: describe(&err),
        })?;
        let response = client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("zeroshot-webhooks/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .body(delivery.payload.clone())
            .send()
            .await
            .map_err(|err| Failure::Retry {
                status: None,
                error: describe(&err),
            })?;
        let status = i64::from(response.status().as_u16());
        if response.status().is_success() {
            Ok(status)
        } else {
            Err(Failure::Retry {
                status: Some(status),
                error: format!("the receiver answered HTTP {status}"),
            })
        }
    }
}

/// Counts `attempt` in the metrics and logs it.
fn report(delivery: &DeliveryRow, attempt: &Attempt) {
    crate::metrics::webhook_attempt(match attempt {
        Attempt::Delivered { .. } => "delivered",
        Attempt::Retry { .. } => "retry",
        Attempt::Failed { .. } => "failed",
    });
    match attempt {
        Attempt::Delivered { status } => {
            tracing::info!(delivery = %delivery.id, job = %delivery.job_id, status, "webhook delivered")
        }
        Attempt::Retry {
            error,
            next_attempt_at,
            ..
        } => tracing::warn!(
            delivery = %delivery.id, job = %delivery.job_id, %error,
            next_attempt_at = %rfc3339(*next_attempt_at), "webhook attempt failed; will retry"
        ),
        Attempt::Failed { error, .. } => {
            tracing::warn!(delivery = %delivery.id, job = %delivery.job_id, %error, "webhook delivery failed")
        }
    }
}

/// The event a job's ending announces (the job as `GET /v1/batch/{id}` shows it, its
/// shards included), its URL and the ending's time; `None` for a job that has not
/// ended or has no URL.
fn announce(job: &JobRow, shards: Option<Shards>) -> Option<(Event, &str, i64)> {
    let kind = event_type(job.status)?;
    let ended_at = job.completed_at?;
    let url = job.webhook_url.as_deref()?;
    let mut data = crate::batch::view::view(job).ok()?;
    data.shards = shards;
    Some((
        Event {
            kind: kind.to_string(),
            timestamp: rfc3339(ended_at),
            data,
        },
        url,
        ended_at,
    ))
}

/// An error with its causes, as reqwest's own message leaves them out.
fn describe(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
