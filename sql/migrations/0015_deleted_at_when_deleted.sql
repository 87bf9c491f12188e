-- A deletion's time is when its statement ran, not when its transaction began (now()): a DELETE
-- that waited on a lock (a worker's last upload holding the row) looked older than the lease the
-- moment it committed, and a concurrent DELETE of the same simulation then answered its 404 at
-- once, while another process could still serve the simulation from memory
-- (server/handlers/users.py, `_after_a_deletion_under_way`).
CREATE OR REPLACE FUNCTION remember_deleted_job_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deleted_job_ids (job_id, deleted_at) VALUES (OLD.job_id, clock_timestamp())
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
