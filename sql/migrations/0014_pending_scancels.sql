-- SLURM jobs to cancel that SLURM has not confirmed yet (server/runner/slurm/dispatcher.py): a row
-- is written before scancel runs and removed once scancel succeeded or SLURM no longer knows the
-- job; the reconciler retries what is left on its polls (the cluster was unreachable, the server
-- stopped meanwhile). Keyed by cluster and SLURM job id, not by simulation: a deleted simulation's
-- jobs must still be cancelled, so nothing here cascades from its delete.
CREATE TABLE pending_scancels (
    cluster      text NOT NULL,    -- [[clusters]] name, '' for this host as a login node
    slurm_job_id bigint NOT NULL,  -- an array's or a merge job's id
    since        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cluster, slurm_job_id)
);
