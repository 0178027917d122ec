-- Batch jobs. `config` is the validated classification spec (JSON), pinned at creation.
-- The cp_* columns are the last checkpoint: the input offset, counters and results
-- object state committed together, so a restarted worker resumes with nothing lost or
-- counted twice. requests_completed/failed are display counters, updated more often.
CREATE TABLE batch_jobs (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    config TEXT NOT NULL,
    metadata TEXT NOT NULL,
    input_key TEXT NOT NULL,
    output_key TEXT NOT NULL,
    upload_expires_at BIGINT NOT NULL,
    input_bytes BIGINT,
    requests_total BIGINT,
    requests_completed BIGINT NOT NULL DEFAULT 0,
    requests_failed BIGINT NOT NULL DEFAULT 0,
    estimated_tokens BIGINT,
    actual_tokens BIGINT,
    error TEXT,
    cp_input_offset BIGINT NOT NULL DEFAULT 0,
    cp_line BIGINT NOT NULL DEFAULT 0,
    cp_completed BIGINT NOT NULL DEFAULT 0,
    cp_failed BIGINT NOT NULL DEFAULT 0,
    cp_tokens BIGINT NOT NULL DEFAULT 0,
    cp_output_state TEXT,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT
);

-- One active job per account, enforced by the database so it holds across instances.
CREATE UNIQUE INDEX batch_jobs_one_processing_per_account
    ON batch_jobs (account_id) WHERE status = 'processing';
CREATE INDEX batch_jobs_account_created ON batch_jobs (account_id, created_at);
CREATE INDEX batch_jobs_status_lease ON batch_jobs (status, lease_expires_at);
