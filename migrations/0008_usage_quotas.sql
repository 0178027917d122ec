-- Usage per account, UTC day ('YYYY-MM-DD') and source ('classify' or 'batch'), added
-- to where the work is done: a successful /v1/classify call, a batch checkpoint (in
-- the checkpoint's own transaction, so a resumed job counts each line once).
-- `requests` counts /v1/classify calls; batch rows leave it 0.
CREATE TABLE usage_daily (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    source TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    texts BIGINT NOT NULL DEFAULT 0,
    tokens BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day, source)
);

-- Per-account limits; NULL is no limit. rps_limit: /v1/classify requests per second
-- (per instance); monthly_token_quota: classify and batch tokens per UTC month.
ALTER TABLE accounts ADD COLUMN rps_limit BIGINT;
ALTER TABLE accounts ADD COLUMN monthly_token_quota BIGINT;
