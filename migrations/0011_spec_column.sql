-- One name for one concept: a job's validated classification spec (JSON) is its `spec`
-- (was `config`), as in the API, the code and the docs.
ALTER TABLE batch_jobs RENAME COLUMN config TO spec;
