-- Log files of a simulation, merged by name, each stored in parts (migration 0017).

-- name: delete_logfiles_named
-- Every part of the named files ($2), before they are stored again.
DELETE FROM logfiles WHERE simulation_id = $1 AND name = ANY($2::text[])

-- name: insert_logfile_parts
-- $2, $3 and $4 are parallel arrays of names, part numbers and contents.
INSERT INTO logfiles (simulation_id, name, part, content)
SELECT $1, f.name, f.part, f.content
FROM unnest($2::text[], $3::integer[], $4::text[]) AS f (name, part, content)

-- name: list_simulation_logfiles
-- Names, parts, sizes and writing transactions, to read the contents a batch at a time
-- (store/logfiles.py read_batches), each part checked to be the one listed.
SELECT name, part, octet_length(content) AS size, xmin::text AS written_by
FROM logfiles WHERE simulation_id = $1
ORDER BY name, part

-- name: get_logfile_parts
-- The parts ($2 names, $3 part numbers) with the transaction that wrote them (xmin: every part
-- of a file is written by one), so that a file replaced since it was listed is noticed.
SELECT l.name, l.part, l.content, l.xmin::text AS written_by
FROM logfiles l JOIN unnest($2::text[], $3::integer[]) AS k (name, part)
    ON l.name = k.name AND l.part = k.part
WHERE l.simulation_id = $1
ORDER BY l.name, l.part

-- name: count_logfiles
-- How many log files the simulation holds (every file has a part 0).
SELECT count(*) FROM logfiles WHERE simulation_id = $1 AND part = 0
