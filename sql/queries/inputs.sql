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

-- name: get_small_input
-- The input's type and compressed sizes; the input itself only when both columns together take
-- at most $2 bytes (a larger one is read a slice at a time: input_slice_*).
SELECT s.input_type, octet_length(i.data) AS data_size, octet_length(i.files) AS files_size,
       CASE WHEN octet_length(i.data) + coalesce(octet_length(i.files), 0) <= $2 THEN i.data END
           AS data,
       CASE WHEN octet_length(i.data) + coalesce(octet_length(i.files), 0) <= $2 THEN i.files END
           AS files
FROM simulations s JOIN inputs i ON i.simulation_id = s.id
WHERE s.id = $1

-- name: input_slice_data
-- $3 bytes of the compressed submitted input from byte $2 (1-based); NULL once it is deleted.
SELECT substring(i.data FROM $2 FOR $3) FROM inputs i WHERE i.simulation_id = $1

-- name: input_slice_files
-- $3 bytes of the compressed converted files from byte $2 (1-based); NULL once it is deleted.
SELECT substring(i.files FROM $2 FOR $3) FROM inputs i WHERE i.simulation_id = $1
