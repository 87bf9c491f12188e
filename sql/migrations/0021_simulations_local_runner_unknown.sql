-- Migration 0019 took every simulation stored before it for the local runner's. A direct one
-- submitted for external workers (a server with runner.kind "none") was then refused a new
-- update key (run.py job-key) and failed by the next local runner to start, as if its own.
-- Which runner those were for is not known: NULL. job-key gives them keys, and a local runner
-- starting fails only those it had started (their job directory is on its disk).
ALTER TABLE simulations ALTER COLUMN local_runner DROP NOT NULL;
UPDATE simulations SET local_runner = NULL
WHERE local_runner
  AND start_time < (SELECT applied_at FROM schema_migrations WHERE version = 19);
