-- Results: estimators and their pages.

-- name: upsert_estimators
-- $2: names in display order, $3 their other fields. New estimators are shown after those
-- already stored; one uploaded again keeps its id and place, and takes the new fields.
INSERT INTO estimators (simulation_id, name, position, fields)
SELECT $1, e.name, base.next + e.ordinality - 1, e.fields
FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS e (name, fields, ordinality),
     (SELECT coalesce(max(position) + 1, 0) AS next FROM estimators WHERE simulation_id = $1)
         AS base
ON CONFLICT (simulation_id, name) DO UPDATE SET fields = EXCLUDED.fields
RETURNING id, name

-- name: upsert_pages
-- One row per page; dimensions arrive as text ('{80,400}') because unnest flattens int[][].
INSERT INTO pages (estimator_id, page_number, name, dimensions, data, crc32, crc_shift, raw_size)
SELECT p.estimator_id, p.page_number, p.name, p.dimensions::integer[], p.data, p.crc32,
       p.crc_shift, p.raw_size
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::bytea[], $6::bigint[],
            $7::bigint[], $8::int[])
    AS p (estimator_id, page_number, name, dimensions, data, crc32, crc_shift, raw_size)
ON CONFLICT (estimator_id, page_number) DO UPDATE SET
    name = EXCLUDED.name, dimensions = EXCLUDED.dimensions, data = EXCLUDED.data,
    crc32 = EXCLUDED.crc32, crc_shift = EXCLUDED.crc_shift, raw_size = EXCLUDED.raw_size,
    version = nextval('page_versions')

-- name: results_index
-- Everything GET /results checks and streams: one row per page (one row of NULLs when nothing
-- is stored; an estimator without pages has one row with NULL page columns), each with the
-- job's owner, state and results version. An estimator's fields come on its first row only
-- (NULL on the others): they may be large, and are one value however many pages it has. The
-- pages' data (as page_data gives it) comes too when $2 > 0 and all of it comes to $2 stored
-- bytes at most (else NULL): a whole small result in one query. The total is summed first, and
-- only then (with $2 = 0 not at all), so that the rows carry no data when it is too large (a
-- window over the rows held them all).
WITH total AS (
    SELECT coalesce(sum(octet_length(p.data)), 0) AS bytes
    FROM simulations s
    JOIN estimators e ON e.simulation_id = s.id
    JOIN pages p ON p.estimator_id = e.id
    WHERE s.job_id = $1
)
SELECT s.id, s.user_id, s.job_state, s.end_time, s.results_version,
       e.name AS estimator, e.id AS estimator_id, p.page_number,
       CASE WHEN row_number() OVER (PARTITION BY e.position, e.id ORDER BY p.page_number) = 1
            THEN e.fields END AS estimator_fields,
       p.version,
       octet_length(p.data) AS stored_size, p.raw_size,
       CASE WHEN $2::bigint > 0 AND (SELECT bytes FROM total) <= $2::bigint THEN p.data END
           AS data,
       p.crc32, p.crc_shift
FROM simulations s
LEFT JOIN estimators e ON e.simulation_id = s.id
LEFT JOIN pages p ON p.estimator_id = e.id
WHERE s.job_id = $1
ORDER BY e.position, e.id, p.page_number

-- name: page_data
-- The stored bytes of some pages, by (estimator_id, page_number).
SELECT p.estimator_id, p.page_number, p.version, p.data, p.crc32, p.crc_shift, p.raw_size
FROM unnest($1::bigint[], $2::int[]) AS k (estimator_id, page_number)
JOIN pages p USING (estimator_id, page_number)

-- name: estimators_of_job
-- One row per page (NULLs after the LEFT JOINs when nothing is stored), with the owner.
SELECT s.user_id, e.name AS estimator, p.page_number, p.name, p.dimensions
FROM simulations s
LEFT JOIN estimators e ON e.simulation_id = s.id
LEFT JOIN pages p ON p.estimator_id = e.id
WHERE s.job_id = $1
ORDER BY e.position, e.id, p.page_number

-- name: count_results
-- How many estimators and pages the simulation holds.
SELECT (SELECT count(*) FROM estimators WHERE simulation_id = $1)
     + (SELECT count(*) FROM pages p JOIN estimators e ON e.id = p.estimator_id
        WHERE e.simulation_id = $1)
