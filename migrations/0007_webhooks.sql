-- Webhooks: a batch job may name a URL told when it ends (batch.completed, .failed,
-- .cancelled). Deliveries are rows, so they are retried across restarts and claimed
-- under a lease by one instance at a time.
ALTER TABLE batch_jobs ADD COLUMN webhook_url TEXT;
-- The dispatcher's enqueue step: jobs with a URL that ended recently.
CREATE INDEX batch_jobs_webhook_ended ON batch_jobs (completed_at) WHERE webhook_url IS NOT NULL;

-- One signing secret per account (`whsec_` + base64 of 32 random bytes); after a
-- rotation the previous one still signs until previous_expires_at.
CREATE TABLE webhook_secrets (
    account_id TEXT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    secret TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    previous_secret TEXT,
    previous_expires_at BIGINT
);

-- One row per event: the job's ending (job_id, ended_at = its completed_at) and the
-- payload built then, sent unchanged on every attempt under the same id.
-- status: pending, delivered, failed. No foreign key to the job: a job deleted after
-- it ended is still announced.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    job_id TEXT NOT NULL,
    ended_at BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    url TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    last_status BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
-- Racing instances enqueue an ending once (INSERT ... ON CONFLICT DO NOTHING).
CREATE UNIQUE INDEX webhook_deliveries_ending ON webhook_deliveries (job_id, ended_at);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
