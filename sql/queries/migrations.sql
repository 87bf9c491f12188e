-- Bookkeeping of the migrations runner (server/database/db.py).

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
