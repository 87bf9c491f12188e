-- A simulation sent to SLURM (`POST /jobs/batch`, or `/jobs/direct` through a server whose
-- `runner.kind` is "slurm") has a lease until SLURM has it: set when it is stored, renewed by
-- the server process that holds it (waiting for its turn, or being sent) at every reconciler
-- interval. The reconciler fails one that never reached SLURM once its lease is older than
-- five minutes (its server stopped before sending it: list_unsubmitted). Other runners'
-- simulations have none: a local runner's or an external worker's job was failed as "never
-- reached SLURM" by a SLURM server on the same database, and so was one still in a busy
-- server's queue. Batch simulations from before, not yet sent, are taken as leased when stored.
ALTER TABLE simulations ADD COLUMN slurm_lease timestamptz;
UPDATE simulations s SET slurm_lease = s.start_time
WHERE s.platform = 'batch'
  AND s.job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
  AND NOT EXISTS (SELECT 1 FROM slurm_jobs j WHERE j.simulation_id = s.id);
CREATE INDEX simulations_slurm_leases ON simulations (slurm_lease)
WHERE job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED');
