-- What every pool connection does once, when it opens, and what the server checks of the
-- database at start (server/database/db.py).

-- name: array_types
-- One of each array type the queries use: asyncpg looks an array type up in the catalog on the
-- first statement of a connection that uses it (a round trip each, of a few milliseconds on a
-- fresh PostgreSQL backend); this statement has them looked up together, before any request.
SELECT NULL::int4[], NULL::int8[], NULL::text[], NULL::bytea[], NULL::timestamptz[]

-- name: connection_limit
-- The connections PostgreSQL gives clients that are not superusers.
SELECT current_setting('max_connections')::int
     - current_setting('superuser_reserved_connections')::int
     - coalesce(current_setting('reserved_connections', true), '0')::int
