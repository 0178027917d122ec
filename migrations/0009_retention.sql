-- Retention: when a job's input, results and error rows were deleted (ms since epoch).
-- The row stays, so the job still shows with `expired: true`; set once, by the sweeper
-- whose conditional UPDATE claimed the job.
ALTER TABLE batch_jobs ADD COLUMN expired_at BIGINT;
CREATE INDEX batch_jobs_expiry ON batch_jobs (expired_at, status, completed_at);
