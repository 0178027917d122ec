-- Shards: a started job's input, cut at line boundaries into byte ranges when the job
-- is surveyed. Any instance's worker scores any shard under its own lease and writes
-- its own result part; the cp_* columns are the shard's last checkpoint (input
-- position, counters, its parts' upload states), as they were the job's before.
-- requests_completed/failed are display counters, summed into the job's.
CREATE TABLE batch_shards (
    job_id TEXT NOT NULL REFERENCES batch_jobs(id) ON DELETE CASCADE,
    shard BIGINT NOT NULL,
    start_offset BIGINT NOT NULL,
    end_offset BIGINT NOT NULL,
    start_line BIGINT NOT NULL,
    cp_input_offset BIGINT NOT NULL,
    cp_line BIGINT NOT NULL,
    cp_completed BIGINT NOT NULL DEFAULT 0,
    cp_failed BIGINT NOT NULL DEFAULT 0,
    cp_tokens BIGINT NOT NULL DEFAULT 0,
    cp_output_state TEXT,
    cp_errors_state TEXT,
    cp_errors_pending TEXT,
    requests_completed BIGINT NOT NULL DEFAULT 0,
    requests_failed BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    completed_at BIGINT,
    PRIMARY KEY (job_id, shard)
);
CREATE INDEX batch_shards_claim ON batch_shards (completed_at, lease_expires_at);

-- How many shards the survey cut; set with requests_total.
ALTER TABLE batch_jobs ADD COLUMN shards BIGINT;

-- A job running when this migration applies started without shards: it starts over
-- (its results so far are rewritten from the first line).
UPDATE batch_jobs SET requests_total = NULL, adaptation = NULL, adapted_labels = NULL,
    requests_completed = 0, requests_failed = 0, lease_owner = NULL, lease_expires_at = NULL
    WHERE status IN ('processing', 'cancelling');

-- The job's checkpoint moved to its shards.
ALTER TABLE batch_jobs DROP COLUMN cp_input_offset;
ALTER TABLE batch_jobs DROP COLUMN cp_line;
ALTER TABLE batch_jobs DROP COLUMN cp_completed;
ALTER TABLE batch_jobs DROP COLUMN cp_failed;
ALTER TABLE batch_jobs DROP COLUMN cp_tokens;
ALTER TABLE batch_jobs DROP COLUMN cp_output_state;
ALTER TABLE batch_jobs DROP COLUMN cp_errors_state;
ALTER TABLE batch_jobs DROP COLUMN cp_errors_pending;
