-- Tasks: creation, status for users, updates from workers and from the local runner.

-- name: insert_tasks
-- $2: requested primaries of tasks 1..n, in order.
INSERT INTO tasks (simulation_id, task_id, requested_primaries)
SELECT $1, t.ordinality, t.primaries
FROM unnest($2::bigint[]) WITH ORDINALITY AS t (primaries, ordinality)

-- name: job_status
-- The job state and its tasks in one snapshot.
SELECT s.job_state, t.task_id, t.task_state, t.simulated_primaries, t.requested_primaries,
       t.estimated_time, t.start_time, t.end_time
FROM simulations s JOIN tasks t ON t.simulation_id = s.id
WHERE s.id = $1
ORDER BY t.task_id

-- name: lock_task_for_worker
-- lock_simulation_for_worker plus the task's row, locked too, in one round trip (no row: no
-- such simulation or no such task). Both rows are locked so that, after waiting for another
-- update of the job, both are read again as that update left them: a task row read beside an
-- unlocked join would be the one from before the wait, and writing it back would undo that
-- update. (Rows are locked in FROM order, simulation first, like every other job write.)
SELECT s.id, s.job_state, s.update_key_sha256, t.task_state
FROM simulations s
JOIN tasks t ON t.simulation_id = s.id AND t.task_id = $2
WHERE s.job_id = $1
FOR UPDATE OF s, t

-- name: update_task
-- $3 is the new state; NULL parameters (also $3: a progress report) leave their column as it is.
-- start_time is set when the task turns RUNNING (or ends without having reported RUNNING:
-- it ran; then at the end sent, if one was) and end_time when it turns terminal, unless sent.
UPDATE tasks SET
    task_state = coalesce($3::text, task_state),
    simulated_primaries = coalesce($4, simulated_primaries),
    requested_primaries = coalesce($5, requested_primaries),
    estimated_time = coalesce($6, estimated_time),
    start_time = coalesce(
        $7, start_time,
        CASE WHEN $3::text = 'RUNNING' THEN now()
             WHEN $3::text IN ('COMPLETED', 'FAILED') THEN coalesce($8, now()) END
    ),
    end_time = coalesce(
        $8, end_time,
        CASE WHEN $3::text IN ('COMPLETED', 'FAILED', 'CANCELED') THEN now() END
    )
WHERE simulation_id = $1 AND task_id = $2

-- name: end_unfinished_tasks
-- Every task not yet terminal becomes $2 (CANCELED or FAILED); returns those tasks.
UPDATE tasks SET task_state = $2::text, end_time = coalesce(end_time, now())
WHERE simulation_id = $1 AND task_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
RETURNING task_id

-- name: report_task_progress
-- POST /tasks without a state move (the bulk of worker traffic) in one statement, with no
-- BEGIN/COMMIT round trips: it locks the simulation row like lock_task_for_worker and writes
-- only when the key matches ($3: its SHA-256), the job is not terminal and the task exists in
-- state $4 (NULL: any state) and has not ended (a late report must not rewrite its end).
-- Returns the job state; no row when a check fails (the caller then takes the general path,
-- which says which check failed). A row lock held by another
-- writer is waited for and the checks are made again on the row as it left it. Its commit
-- does not wait for the disk: a crash can lose the last fraction of a second of progress,
-- which the next report repeats (a state move is never made here).
WITH locked AS (
    SELECT id, job_state, set_config('synchronous_commit', 'off', true)
    FROM simulations
    WHERE job_id = $1 AND update_key_sha256 = $3
      AND job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
    FOR UPDATE
)
UPDATE tasks t SET
    simulated_primaries = coalesce($5, t.simulated_primaries),
    requested_primaries = coalesce($6, t.requested_primaries),
    estimated_time = coalesce($7, t.estimated_time),
    start_time = coalesce($8, t.start_time, CASE WHEN t.task_state = 'RUNNING' THEN now() END),
    end_time = coalesce(
        $9, t.end_time,
        CASE WHEN t.task_state IN ('COMPLETED', 'FAILED', 'CANCELED') THEN now() END
    )
FROM locked
WHERE t.simulation_id = locked.id AND t.task_id = $2 AND t.task_state = coalesce($4, t.task_state)
  AND t.task_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
RETURNING locked.job_state
