-- Cancel: a processing job asked to stop is `cancelling` until the worker holding it
-- reaches its next chunk. It still holds the account's active slot until then.
DROP INDEX batch_jobs_one_processing_per_account;
CREATE UNIQUE INDEX batch_jobs_one_active_per_account
    ON batch_jobs (account_id) WHERE status IN ('processing', 'cancelling');
-- Error rows are also written to their own object. Its upload state and the error rows
-- not yet written as a part (S3 parts are at least 5 MiB) travel with the checkpoint.
ALTER TABLE batch_jobs ADD COLUMN cp_errors_state TEXT;
ALTER TABLE batch_jobs ADD COLUMN cp_errors_pending TEXT;
