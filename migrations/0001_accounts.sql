-- Accounts own API keys (and, later, batch jobs and saved classifiers).
-- Portable SQL: the same file runs on SQLite and Postgres. Times are unix milliseconds.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Only a sha256 of each key is stored; `prefix` lets a person tell keys apart.
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE INDEX api_keys_account_id ON api_keys (account_id);
