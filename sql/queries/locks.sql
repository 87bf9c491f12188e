-- Session-level advisory locks, held across transactions (server/runner/session_lock.py).

-- name: claim_advisory_lock
-- Whether this session holds the session lock $1, taken if it is free (one this session holds
-- is not taken again: its holds would stack). See server/runner/session_lock.py.
SELECT CASE WHEN EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND classid = 0 AND objid::bigint = $1::bigint AND objsubid = 1
      AND pid = pg_backend_pid() AND granted
) THEN true ELSE pg_try_advisory_lock($1::bigint) END
