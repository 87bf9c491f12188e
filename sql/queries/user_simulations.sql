-- A user's view of their own simulations: the paged list, deletion, inputs and log files.

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

-- name: delete_terminal_simulation
-- The terminal check and the delete are one statement: a worker holding the row lock makes it
-- wait, and the state is checked again on the row as that worker left it. Tasks, inputs,
-- estimators, pages and log files go with it (ON DELETE CASCADE). `job_state` is the state seen
-- before the delete; NULL when the simulation no longer exists.
WITH deleted AS (
    DELETE FROM simulations
    WHERE id = $1 AND job_state IN ('COMPLETED', 'FAILED', 'CANCELED')
    RETURNING id
)
SELECT EXISTS (SELECT FROM deleted) AS deleted,
       (SELECT job_state FROM simulations WHERE id = $1) AS job_state

-- name: get_simulation_input
-- `data` is the submitted input as zlib-compressed JSON.
SELECT s.input_type, i.data
FROM simulations s JOIN inputs i ON i.simulation_id = s.id
WHERE s.id = $1

-- name: get_simulation_logfiles
SELECT name, content FROM logfiles WHERE simulation_id = $1 ORDER BY name
