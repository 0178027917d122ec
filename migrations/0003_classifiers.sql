-- Saved classifiers: immutable versions per (account, name). `spec` is the validated
-- classification spec (JSON); `vectors` its label vectors (base64 of little-endian f32,
-- `dim` per label) computed with `model`, so a model change recomputes them.
CREATE TABLE classifiers (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    description TEXT,
    spec TEXT NOT NULL,
    model TEXT NOT NULL,
    dim BIGINT NOT NULL,
    vectors TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, name, version)
);

-- The saved classifier a batch job was created from (its spec is copied into config).
ALTER TABLE batch_jobs ADD COLUMN classifier_name TEXT;
ALTER TABLE batch_jobs ADD COLUMN classifier_version BIGINT;
CREATE INDEX batch_jobs_classifier ON batch_jobs (account_id, classifier_name);
