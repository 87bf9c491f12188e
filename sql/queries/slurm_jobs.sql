-- The SLURM job ids of simulations, for cancel and the reconciler.

-- name: insert_slurm_jobs
-- Stored right after sbatch; returns the job state, read under the simulation's row lock, so
-- that a cancel committed meanwhile is seen here (and its jobs cancelled) or sees this row.
WITH sim AS (
    SELECT id, job_state FROM simulations WHERE job_id = $1 FOR UPDATE
), stored AS (
    INSERT INTO slurm_jobs (simulation_id, cluster, job_dir, array_job_id, merge_job_id)
    SELECT id, $2, $3, $4, $5 FROM sim
)
SELECT job_state FROM sim

-- name: get_slurm_jobs
SELECT j.cluster, j.job_dir, j.array_job_id, j.merge_job_id
FROM slurm_jobs j JOIN simulations s ON s.id = j.simulation_id
WHERE s.job_id = $1

-- name: list_watched_slurm_jobs
-- Every simulation the reconciler still watches, with its tasks that have not ended; by
-- cluster (the reconciler asks each cluster's squeue once, for a run of rows of one cluster).
SELECT s.id, s.job_id, s.job_state, j.cluster, j.job_dir, j.array_job_id, j.merge_job_id,
       coalesce(
           array_agg(t.task_id ORDER BY t.task_id)
               FILTER (WHERE t.task_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')),
           '{}'
       ) AS open_tasks
FROM slurm_jobs j
JOIN simulations s ON s.id = j.simulation_id
LEFT JOIN tasks t ON t.simulation_id = s.id
WHERE NOT j.done
GROUP BY s.id, j.simulation_id
ORDER BY j.cluster, s.id

-- name: set_slurm_jobs_done
UPDATE slurm_jobs SET done = true WHERE simulation_id = $1

-- name: list_unsubmitted
-- Unfinished simulations sent to SLURM that never reached it (no ids stored) although no
-- server process has renewed their lease for $1 seconds: the server stopped before sending.
SELECT s.job_id FROM simulations s
WHERE s.slurm_lease < now() - make_interval(secs => $1)
  AND s.job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
  AND NOT EXISTS (SELECT 1 FROM slurm_jobs j WHERE j.simulation_id = s.id)
ORDER BY s.id

-- name: is_unsubmitted
-- list_unsubmitted's test for one simulation (by id), asked again under its row lock: its ids
-- may have been stored (insert_slurm_jobs takes the same lock) or its lease renewed meanwhile.
SELECT s.slurm_lease < now() - make_interval(secs => $2)
   AND NOT EXISTS (SELECT 1 FROM slurm_jobs j WHERE j.simulation_id = s.id)
FROM simulations s WHERE s.id = $1

-- name: renew_slurm_leases
-- The simulations a server process holds to send to SLURM (waiting for their turn, or sent).
UPDATE simulations SET slurm_lease = now()
WHERE job_id = ANY($1::text[]) AND slurm_lease IS NOT NULL

-- name: remember_scancels
-- Written before scancel runs, so that a cancel SLURM never got is retried by the reconciler.
INSERT INTO pending_scancels (cluster, slurm_job_id)
SELECT $1, unnest($2::bigint[])
ON CONFLICT DO NOTHING

-- name: remember_cancelled_scancels
-- A cancelled simulation's SLURM jobs, written down in the cancel's own transaction: a delete
-- committed before the cancel reads its ids (which removes them) cannot keep them running.
INSERT INTO pending_scancels (cluster, slurm_job_id)
SELECT cluster, unnest(ARRAY[array_job_id, merge_job_id]) FROM slurm_jobs WHERE simulation_id = $1
ON CONFLICT DO NOTHING

-- name: forget_scancels
DELETE FROM pending_scancels WHERE cluster = $1 AND slurm_job_id = ANY($2::bigint[])

-- name: list_pending_scancels
-- By cluster: the reconciler runs one scancel per cluster.
SELECT cluster, array_agg(slurm_job_id ORDER BY slurm_job_id) AS job_ids
FROM pending_scancels
GROUP BY cluster
ORDER BY cluster
