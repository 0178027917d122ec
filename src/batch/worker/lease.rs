//! Leases: every step renews the lease of the job or shard it works on, and stops
//! when another worker holds it now or the job ended.

use super::{checked, scoring_stopped, Held, JobError, Worker};
use crate::db::batch::Lease;

impl Worker {
    /// Extends a lease; `LeaseLost` when another worker holds the task now or its job
    /// ended.
    pub(super) async fn renew(&self, held: Held<'_>) -> Result<Lease, JobError> {
        let lease = match held {
            Held::Job(job) => self.db.heartbeat(job, &self.owner, self.lease_ms()).await?,
            Held::Shard { job, shard, counts } => {
                self.db
                    .shard_heartbeat(
                        job,
                        shard,
                        &self.owner,
                        self.lease_ms(),
                        counts.completed,
                        counts.failed,
                    )
                    .await?
            }
        };
        crate::metrics::lease_renewed();
        checked(lease)
    }

    /// Waits for a blocking task, renewing the lease meanwhile, so that a slow chunk
    /// (long texts, a slow machine) never lets another worker take the task over. A
    /// cancel asked meanwhile is seen at the next renewal after the task.
    pub(super) async fn renewing_lease<T>(
        &self,
        held: Held<'_>,
        task: tokio::task::JoinHandle<T>,
    ) -> Result<T, JobError> {
        tokio::pin!(task);
        let mut beat = tokio::time::interval(self.lease / 4);
        beat.tick().await; // the first tick is immediate; the lease is fresh
        loop {
            tokio::select! {
                done = &mut task => return done.map_err(scoring_stopped),
                _ = beat.tick() => { self.renew(held).await?; }
            }
        }
    }
}
