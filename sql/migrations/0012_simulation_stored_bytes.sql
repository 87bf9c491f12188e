-- What each simulation takes against its owner's quota (jobs.user_quota), kept on its row:
-- measured again by every write to that simulation (submission, results, log files), so the
-- quota check sums one column of the user's simulations instead of reading every page and log
-- file the user ever stored (which grew with the user's history, under the user's row lock).
-- A simulation counts its row (title, 256 bytes, 128 per task), its input compressed and at its
-- size in a job directory (a NULL disk_size, an older server's row, as migration 0011 backfilled
-- it), its result pages as stored, its estimators (name, own fields, 64 bytes a row) and its log
-- files (name, content, 64 bytes a row).
CREATE FUNCTION simulation_stored_bytes(sim bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (SELECT octet_length(s.title) + 256 + 128 * s.ntasks FROM simulations s WHERE s.id = sim)
         + coalesce((SELECT octet_length(i.data) + coalesce(octet_length(i.files), 0)
                            + coalesce(i.disk_size, octet_length(coalesce(i.files, i.data)))
                     FROM inputs i WHERE i.simulation_id = sim), 0)
         + coalesce((SELECT sum(octet_length(p.data)) FROM estimators e
                     JOIN pages p ON p.estimator_id = e.id WHERE e.simulation_id = sim), 0)
         + coalesce((SELECT sum(octet_length(e.name) + octet_length(e.fields) + 64)
                     FROM estimators e WHERE e.simulation_id = sim), 0)
         + coalesce((SELECT sum(octet_length(l.name) + octet_length(l.content) + 64)
                     FROM logfiles l WHERE l.simulation_id = sim), 0)
$$;

ALTER TABLE simulations ADD COLUMN stored_bytes bigint NOT NULL DEFAULT 0;

UPDATE simulations SET stored_bytes = simulation_stored_bytes(id);
