-- The change listener of each server process (server/results/caches/changes.py): not a table of
-- ours, the server's own sessions and notifications.

-- name: changes_ping
-- A round trip on the listening connection: its answer comes after every notification
-- committed before it ran, so it renews the process's lease on its cached results.
SELECT 1

-- name: changes_ack
-- "This process has forgotten the deleted simulation": $1 is '<backend pid> <job_id>'.
SELECT pg_notify('simulation_deleted_ack', $1)

-- name: changes_listeners
-- The listening sessions of every server process on this database ($1: their application_name).
SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()

-- name: changes_gone
-- Of the job_ids $1 (those this process has body files of), the ones no simulation has: deleted
-- while this process was not listening. The files are a cache: any such file may go.
SELECT j AS job_id FROM unnest($1::text[]) AS j
WHERE NOT EXISTS (SELECT 1 FROM simulations s WHERE s.job_id = j)
