-- Login attempts per key within the login window (server/limits/throttle.py).

-- name: claim_login_attempts
-- The keys' rows, locked (made when missing), with only the attempts still in the window of $2
-- seconds, and the time now. Keys are locked in order, so two logins never wait on each other.
INSERT INTO login_attempts AS l (key, attempts, last_at)
SELECT key, '{}', clock_timestamp() FROM unnest($1::text[]) AS key ORDER BY key
ON CONFLICT (key) DO UPDATE SET attempts = ARRAY(
    SELECT a FROM unnest(l.attempts) AS a
    WHERE a > clock_timestamp() - $2::float8 * interval '1 second' ORDER BY a
)
RETURNING key, attempts, clock_timestamp() AS now

-- name: add_login_attempt
-- Count the attempt made at $2 for each key (rows claimed by claim_login_attempts).
UPDATE login_attempts SET attempts = attempts || $2::timestamptz, last_at = $2
WHERE key = ANY($1::text[])

-- name: forget_login_attempts
-- Rows with no attempt left in the window of $1 seconds; rows a login holds are left for later.
DELETE FROM login_attempts WHERE key IN (
    SELECT key FROM login_attempts
    WHERE last_at <= clock_timestamp() - $1::float8 * interval '1 second'
    FOR UPDATE SKIP LOCKED
)

-- name: take_back_login_attempt
-- A successful login's attempt (made at $2) no longer counts; rows locked in key order.
WITH locked AS (
    SELECT key FROM login_attempts WHERE key = ANY($1::text[]) ORDER BY key FOR UPDATE
)
UPDATE login_attempts l SET attempts = array_remove(l.attempts, $2::timestamptz)
FROM locked WHERE l.key = locked.key
