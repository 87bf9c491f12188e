-- The submitted input of a simulation, and the input files converted from it.

-- name: insert_input
-- $4: the bytes the input takes once written into a job directory (migration 0011).
INSERT INTO inputs (simulation_id, data, files, disk_size) VALUES ($1, $2, $3, $4)

-- name: get_simulation_input
-- `data` is the submitted input, `files` the converted files (or NULL), as zlib-compressed JSON.
SELECT s.input_type, i.data, i.files
FROM simulations s JOIN inputs i ON i.simulation_id = s.id
WHERE s.id = $1

-- name: get_job_input
-- What a job's workers are given: the converted files, or else the submitted input.
SELECT coalesce(i.files, i.data) AS input
FROM simulations s JOIN inputs i ON i.simulation_id = s.id
WHERE s.job_id = $1
