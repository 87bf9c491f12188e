-- Bookkeeping of the migrations runner (server/db.py).

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)

-- name: list_migrations
SELECT version, name, checksum FROM schema_migrations ORDER BY version

-- name: record_migration
INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)

-- name: analyze
-- Planner statistics for every table, before migrations that read the data.
ANALYZE

-- name: advisory_lock
SELECT pg_advisory_lock($1)

-- name: advisory_unlock
SELECT pg_advisory_unlock($1)

-- name: claim_advisory_lock
-- Whether this session holds the session lock $1, taken if it is free (one this session holds
-- is not taken again: its holds would stack). See server/runner/session_lock.py.
SELECT CASE WHEN EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND classid = 0 AND objid::bigint = $1::bigint AND objsubid = 1
      AND pid = pg_backend_pid() AND granted
) THEN true ELSE pg_try_advisory_lock($1::bigint) END

-- name: connection_limit
-- The connections PostgreSQL gives clients that are not superusers.
SELECT current_setting('max_connections')::int
     - current_setting('superuser_reserved_connections')::int
     - coalesce(current_setting('reserved_connections', true), '0')::int
