-- The job_ids of deleted simulations (also by a cascade from their user), for the sweeps of job
-- directories (server/runner/cleanup.py): a directory whose simulation is gone is removed only
-- when this database deleted it, never one of a job_id it never had (another deployment's, in
-- a work_dir the two share). Kept for 30 days.
CREATE TABLE deleted_job_ids (
    job_id     text PRIMARY KEY,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION remember_deleted_job_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deleted_job_ids (job_id) VALUES (OLD.job_id) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER simulation_deleted_job_id AFTER DELETE ON simulations
    FOR EACH ROW EXECUTE FUNCTION remember_deleted_job_id();
