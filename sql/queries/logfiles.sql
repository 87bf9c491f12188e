-- Log files of a simulation, merged by name.

-- name: upsert_logfiles
-- $2 and $3 are parallel arrays of names and contents; a name stored before is replaced.
INSERT INTO logfiles (simulation_id, name, content)
SELECT $1, f.name, f.content FROM unnest($2::text[], $3::text[]) AS f (name, content)
ON CONFLICT (simulation_id, name) DO UPDATE SET content = excluded.content

-- name: list_simulation_logfiles
-- Names and sizes, to read the contents a batch at a time (store/logfiles.py read_batches).
SELECT name, octet_length(content) AS size FROM logfiles WHERE simulation_id = $1 ORDER BY name

-- name: get_logfiles_named
SELECT name, content FROM logfiles WHERE simulation_id = $1 AND name = ANY($2::text[])
ORDER BY name
