-- What every pool connection does once, when it opens.

-- name: array_types
-- One of each array type the queries use: asyncpg looks an array type up in the catalog on the
-- first statement of a connection that uses it (a round trip each, of a few milliseconds on a
-- fresh PostgreSQL backend); this statement has them looked up together, before any request.
SELECT NULL::int4[], NULL::int8[], NULL::text[], NULL::bytea[], NULL::timestamptz[]
