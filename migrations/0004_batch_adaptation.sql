-- Batch-adaptive scoring: what adaptation did (a JSON report the API shows) and the
-- fitted label vectors (JSON), stored with the line count before any line is scored,
-- so a resumed job scores with exactly the vectors it started with.
ALTER TABLE batch_jobs ADD COLUMN adaptation TEXT;
ALTER TABLE batch_jobs ADD COLUMN adapted_labels TEXT;
