-- The job state machine, driven by workers.

-- name: lock_simulation_for_worker
-- Every worker write starts here: the row lock serialises concurrent updates of one job.
SELECT id, job_state, update_key_sha256 FROM simulations WHERE job_id = $1 FOR UPDATE

-- name: recompute_job_state
-- The job state the tasks and stored results justify (api.md "Worker-facing endpoints").
-- A merge in progress (MERGING_RUNNING) is not sent back to MERGING_QUEUED.
WITH counts AS (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE task_state = 'PENDING') AS pending,
           count(*) FILTER (WHERE task_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')) AS active,
           count(*) FILTER (WHERE task_state = 'COMPLETED') AS completed,
           count(*) FILTER (WHERE task_state = 'FAILED') AS failed
    FROM tasks WHERE simulation_id = $1
), computed AS (
    SELECT CASE
        WHEN pending = total THEN 'PENDING'
        WHEN active > 0 THEN 'RUNNING'
        WHEN completed > 0 AND EXISTS (SELECT 1 FROM estimators WHERE simulation_id = $1)
            THEN 'COMPLETED'
        WHEN completed > 0 THEN 'MERGING_QUEUED'
        WHEN failed > 0 THEN 'FAILED'
        ELSE 'CANCELED'
    END AS state
    FROM counts
)
UPDATE simulations s SET
    job_state = CASE
        WHEN s.job_state = 'MERGING_RUNNING' AND computed.state = 'MERGING_QUEUED'
            THEN s.job_state
        ELSE computed.state
    END,
    end_time = CASE
        WHEN computed.state IN ('COMPLETED', 'FAILED', 'CANCELED') THEN coalesce(s.end_time, now())
    END
FROM computed
WHERE s.id = $1
RETURNING s.job_state

-- name: set_job_state
-- A state set directly (cancel, a worker's POST /jobs, recovery); end_time once terminal.
UPDATE simulations SET
    job_state = $2::text,
    end_time = CASE
        WHEN $2::text IN ('COMPLETED', 'FAILED', 'CANCELED') THEN coalesce(end_time, now())
    END
WHERE id = $1

-- name: get_job_state
SELECT job_state FROM simulations WHERE job_id = $1

-- name: list_interrupted_jobs
-- Direct simulations still unfinished that were submitted before the local runner started:
-- nobody holds their update key any more, so nobody can finish them.
SELECT job_id FROM simulations
WHERE platform = 'direct'
  AND job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
  AND start_time < $1
ORDER BY id
