-- Simulations, their inputs and tasks.

-- name: insert_simulation
INSERT INTO simulations (job_id, user_id, title, sim_type, input_type, ntasks, update_key_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id

-- name: insert_input
INSERT INTO inputs (simulation_id, data) VALUES ($1, $2)

-- name: insert_tasks
-- $2: requested primaries of tasks 1..n, in order.
INSERT INTO tasks (simulation_id, task_id, requested_primaries)
SELECT $1, t.ordinality, t.primaries
FROM unnest($2::bigint[]) WITH ORDINALITY AS t (primaries, ordinality)

-- name: get_simulation_owner
SELECT id, user_id FROM simulations WHERE job_id = $1

-- name: live_update_key_exists
-- Whether a key (its SHA-256) can still update a simulation: checked before a worker's body is
-- read, when the key comes in the Authorization header.
SELECT EXISTS (
    SELECT 1 FROM simulations
     WHERE update_key_sha256 = $1 AND job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
)
