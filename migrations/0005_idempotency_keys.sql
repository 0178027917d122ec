-- Idempotency-Key on POST /v1/batch and POST /v1/classifiers: a key's first successful
-- answer, replayed for 24 hours to a retry of the same request. A row without a
-- response is a request still in flight under that key.
CREATE TABLE idempotency_keys (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status BIGINT,
    response TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
