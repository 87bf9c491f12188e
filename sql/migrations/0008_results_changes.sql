-- Server processes keep finished simulations' results indexes in memory (server/results/).
-- `results_version` changes with every results upload, so a process can check in one row that
-- what it holds is current; triggers tell every listening process (LISTEN/NOTIFY, payload: the
-- job_id) when a simulation is deleted (`simulation_deleted`, also by a cascade from its user)
-- or when its state, owner or results change (`simulation_changed`). Notifications are sent at
-- commit, so nobody is told of a change that was rolled back.
ALTER TABLE simulations ADD COLUMN results_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION notify_simulation_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('simulation_deleted', OLD.job_id);
    RETURN NULL;
END
$$;

CREATE FUNCTION notify_simulation_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('simulation_changed', OLD.job_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER simulation_deleted AFTER DELETE ON simulations
    FOR EACH ROW EXECUTE FUNCTION notify_simulation_deleted();

CREATE TRIGGER simulation_changed AFTER UPDATE ON simulations
    FOR EACH ROW
    WHEN (OLD.job_state IS DISTINCT FROM NEW.job_state
          OR OLD.end_time IS DISTINCT FROM NEW.end_time
          OR OLD.user_id IS DISTINCT FROM NEW.user_id
          OR OLD.job_id IS DISTINCT FROM NEW.job_id
          OR OLD.results_version IS DISTINCT FROM NEW.results_version)
    EXECUTE FUNCTION notify_simulation_changed();
