-- Saved classifiers that learn. `origin` is how a version was made (JSON
-- `classifiers::Origin`; NULL: saved from a definition). A version that scores with an
-- adaptation keeps where it came from (`adapted_from`, JSON `classifiers::AdaptedFrom`)
-- and the fitted label vectors, transforms and footing (`adapted_labels`, JSON), read
-- only when scoring; both NULL: not adapted.
ALTER TABLE classifiers ADD COLUMN origin TEXT;
ALTER TABLE classifiers ADD COLUMN adapted_from TEXT;
ALTER TABLE classifiers ADD COLUMN adapted_labels TEXT;
-- A batch job that references a classifier may save its fitted vectors as the
-- classifier's next version when it completes (`save_adapted`, 0 or 1); the version it
-- saved is recorded in the same transaction, so a repeated assembly saves none.
ALTER TABLE batch_jobs ADD COLUMN save_adapted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE batch_jobs ADD COLUMN saved_version BIGINT;
-- The vectors of a classifier's label sentences and examples (`input_hash`: sha256 of
-- the model's name, the prefix and the text; `vector`: base64 of little-endian f32),
-- so a lesson after a restart embeds only its new texts. Deleted with the classifier.
CREATE TABLE classifier_inputs (
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    vector TEXT NOT NULL,
    PRIMARY KEY (account_id, name, input_hash)
);
