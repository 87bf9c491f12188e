-- Simulations: creation, ownership, the job state (locked by every worker write) and a
-- user's list of their own simulations.

-- name: insert_simulation
INSERT INTO simulations (
    job_id, user_id, title, sim_type, input_type, ntasks, update_key_sha256, platform,
    local_runner, slurm_lease
)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10::boolean THEN now() END)
RETURNING id

-- name: get_simulation_owner
SELECT id, user_id FROM simulations WHERE job_id = $1

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

-- name: get_results_heads
-- What GET /results checks against the index a server process holds (one row per job_id;
-- concurrent fetches share one query: server/results/caches/heads.py).
SELECT job_id, id, user_id, job_state, end_time, results_version
FROM simulations WHERE job_id = ANY ($1::text[])

-- name: bump_results_version
-- Every results upload: the server processes' cached indexes of this simulation are outdated.
UPDATE simulations SET results_version = nextval('page_versions') WHERE id = $1

-- name: get_job_state
SELECT job_state FROM simulations WHERE job_id = $1

-- name: list_interrupted_jobs
-- The local runner's simulations still unfinished that were submitted before it started:
-- nobody holds their update key any more, so nobody can finish them. (Those of external
-- workers, submitted through a server with runner.kind "none", are theirs to finish.)
-- `unknown`: stored before migration 0019 recorded which runner a simulation is for (NULL).
SELECT job_id, local_runner IS NULL AS unknown FROM simulations
WHERE platform = 'direct' AND local_runner IS NOT FALSE
  AND job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
  AND start_time < $1
ORDER BY id

-- name: list_user_simulations
-- One page of a user's simulations, each row carrying how many match in all (`total`).
-- $1 user id, $2 states to keep (NULL: all), $3 sort key 'start_time' or 'end_time',
-- $4 descending, $5 page size, $6 rows to skip.
-- One fixed statement serves all four orders: in each order one key of each ASC/DESC pair is
-- NULL on every row and so has no effect. Ties go by job_id (byte order) in the same direction,
-- so ascend is exactly descend reversed and pages never overlap or skip. A NULL end_time (not
-- finished yet) sorts as later than every time: last in ascend, first in descend.
SELECT job_id, title, start_time, end_time, job_state, sim_type, input_type, platform, ntasks,
       count(*) OVER () AS total
FROM simulations
WHERE user_id = $1 AND ($2::text[] IS NULL OR job_state = ANY ($2::text[]))
ORDER BY
    CASE WHEN NOT $4::boolean THEN
        CASE $3::text WHEN 'end_time' THEN end_time ELSE start_time END
    END ASC,
    CASE WHEN $4::boolean THEN
        CASE $3::text WHEN 'end_time' THEN end_time ELSE start_time END
    END DESC,
    CASE WHEN NOT $4::boolean THEN job_id END COLLATE "C" ASC,
    CASE WHEN $4::boolean THEN job_id END COLLATE "C" DESC
LIMIT $5 OFFSET $6

-- name: count_user_simulations
-- Only needed for a page past the last one, where no row carries the total.
SELECT count(*)
FROM simulations
WHERE user_id = $1 AND ($2::text[] IS NULL OR job_state = ANY ($2::text[]))

-- name: count_unfinished_simulations
-- The user's simulations not ended yet (end_time is set when one turns terminal), counted up to
-- $2 (simulations_user_end serves it).
SELECT count(*) FROM (
    SELECT 1 FROM simulations WHERE user_id = $1 AND end_time IS NULL LIMIT $2
) AS unfinished

-- name: delete_terminal_simulation
-- The terminal check and the delete are one statement: a worker holding the row lock makes it
-- wait, and the state is read again on the row as that worker left it (FOR UPDATE). Tasks,
-- inputs, estimators, pages and log files go with it (ON DELETE CASCADE). `job_state` is that
-- state; NULL when the simulation no longer exists (also when a concurrent delete took it).
WITH target AS (
    SELECT id, job_state FROM simulations WHERE id = $1 FOR UPDATE
), deleted AS (
    DELETE FROM simulations s USING target t
    WHERE s.id = t.id AND t.job_state IN ('COMPLETED', 'FAILED', 'CANCELED')
    RETURNING s.id
)
SELECT EXISTS (SELECT FROM deleted) AS deleted, (SELECT job_state FROM target) AS job_state

-- name: rotate_update_key
-- A new key for an unfinished direct simulation (run.py job-key); the old one stops working.
-- Never a batch one's, nor one a local runner or SLURM runs (a server on the same database:
-- a lease, or SLURM job ids stored before leases): their workers hold the key. One stored
-- before migration 0019 (local_runner NULL: its runner is not known) can.
UPDATE simulations s SET update_key_sha256 = $2
WHERE s.job_id = $1 AND s.platform = 'direct' AND s.local_runner IS NOT TRUE
  AND s.slurm_lease IS NULL
  AND NOT EXISTS (SELECT 1 FROM slurm_jobs j WHERE j.simulation_id = s.id)
  AND s.job_state NOT IN ('COMPLETED', 'FAILED', 'CANCELED')
RETURNING s.id

-- name: update_key_state
-- The state of the simulation a key (its SHA-256) belongs to, a live one first (no row: none):
-- checked before a worker's body is read or parsed.
SELECT job_state FROM simulations
WHERE update_key_sha256 = $1
ORDER BY job_state IN ('COMPLETED', 'FAILED', 'CANCELED')
LIMIT 1

-- name: ended_job_ids
-- Of the job_ids in $1, those whose simulation was deleted, or ended at least $2 seconds ago
-- (when $2 is not NULL): nothing of theirs runs any more (the reconciler, $2 = 0), their job
-- directories can be removed (the sweep, $2 = job_dir_ttl). A job_id this database never had
-- is not ours (another deployment's, on a shared account or work_dir): left alone.
SELECT d.job_id
FROM unnest($1::text[]) AS d (job_id)
LEFT JOIN simulations s ON s.job_id = d.job_id
WHERE (s.id IS NULL AND EXISTS (SELECT 1 FROM deleted_job_ids g WHERE g.job_id = d.job_id))
   OR ($2::float8 IS NOT NULL AND s.job_state IN ('COMPLETED', 'FAILED', 'CANCELED')
       AND ($2 = 0 OR s.end_time < now() - make_interval(secs => $2)))

-- name: deleted_lately
-- Whether the simulation $1 was deleted less than $2 seconds ago.
SELECT EXISTS (
    SELECT 1 FROM deleted_job_ids
    WHERE job_id = $1 AND deleted_at > now() - make_interval(secs => $2)
)

-- name: forget_deleted_job_ids
-- Deleted simulations' job_ids kept long enough for every sweep to have seen them.
DELETE FROM deleted_job_ids WHERE deleted_at < now() - interval '30 days'

-- name: measure_simulation
-- What one simulation takes against its owner's quota, measured again after a write to it
-- (migration 0012); the caller holds the owner's row lock.
UPDATE simulations SET stored_bytes = simulation_stored_bytes(id) WHERE id = $1

-- name: stored_bytes
-- The bytes a user's simulations take on the server's disks: compressed inputs (with the files
-- converted from an editor project) and, in addition, the same inputs as the runner writes them
-- uncompressed into job directories (disk_size: both take disk at once, for runner.job_dir_ttl
-- after the end or for good, so neither the database nor work_dir can grow past the quota;
-- counting only one would let the other grow: highly compressible files, or a large project
-- converted to small files), result pages (data as stored, name, dimensions, and 128 bytes for
-- the row and its index entry: migration 0016), their estimators (name, own fields, and 64
-- bytes: an estimator may hold nothing else), log files (name, content as sent, and 64 bytes a
-- part), and the simulations' own rows (title, 256 bytes, and 128 per task: a submission of a
-- few hundred bytes may make 1000 task rows). Each simulation's share is kept on its row
-- (measure_simulation; simulation_stored_bytes, migrations 0012 and 0016), so this reads the
-- user's simulations only, not every page and log file they hold.
SELECT coalesce(sum(stored_bytes), 0) AS total FROM simulations WHERE user_id = $1
