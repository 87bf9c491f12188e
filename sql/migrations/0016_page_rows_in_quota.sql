-- Result pages count their row against the quota too: 128 bytes (its header, ids, CRCs, sizes,
-- version and primary-key entry), its name and its dimensions, besides its data as stored. An
-- upload of many tiny pages (`{"page_number": n}`, ~20 bytes of data each) took about six times
-- what the quota counted. Everything else is counted as migration 0012 counts it.
CREATE OR REPLACE FUNCTION simulation_stored_bytes(sim bigint) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT (SELECT octet_length(s.title) + 256 + 128 * s.ntasks FROM simulations s WHERE s.id = sim)
         + coalesce((SELECT octet_length(i.data) + coalesce(octet_length(i.files), 0)
                            + coalesce(i.disk_size, octet_length(coalesce(i.files, i.data)))
                     FROM inputs i WHERE i.simulation_id = sim), 0)
         + coalesce((SELECT sum(octet_length(p.data) + octet_length(p.name)
                                + 4 * coalesce(cardinality(p.dimensions), 0) + 128)
                     FROM estimators e
                     JOIN pages p ON p.estimator_id = e.id WHERE e.simulation_id = sim), 0)
         + coalesce((SELECT sum(octet_length(e.name) + octet_length(e.fields) + 64)
                     FROM estimators e WHERE e.simulation_id = sim), 0)
         + coalesce((SELECT sum(octet_length(l.name) + octet_length(l.content) + 64)
                     FROM logfiles l WHERE l.simulation_id = sim), 0)
$$;

UPDATE simulations s SET stored_bytes = simulation_stored_bytes(s.id)
WHERE EXISTS (SELECT 1 FROM estimators e WHERE e.simulation_id = s.id);
