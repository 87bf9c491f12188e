-- Whether the local runner runs a simulation: a direct one submitted through a server whose
-- `runner.kind` is "local". Only those are failed when the local runner starts again
-- (list_interrupted_jobs): a server with `runner.kind = "none"` on the same database submits
-- for external workers, whose update keys (`run.py job-key`) outlive any server. Rows made
-- before are taken for the local runner's, as they were.
ALTER TABLE simulations ADD COLUMN local_runner boolean NOT NULL DEFAULT true;
ALTER TABLE simulations ALTER COLUMN local_runner SET DEFAULT false;
