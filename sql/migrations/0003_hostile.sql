-- Issue 12 (hostile input): estimator-level fields, and finding a simulation by its update key.

-- The fields of an uploaded estimator other than `name` and `pages` (e.g. `metadata`), kept as
-- the JSON object members exactly as serialised once at upload (`"metadata":{...}`, or empty)
-- so GET /results splices them in like the pages.
ALTER TABLE estimators ADD COLUMN fields bytea NOT NULL DEFAULT '';

-- A worker's key from the Authorization header is checked before its body is read, by hash.
CREATE INDEX simulations_update_key ON simulations (update_key_sha256);
