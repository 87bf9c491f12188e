-- Login attempts within auth.login_window, per username (its SHA-256) and per client address
-- (server/limits/throttle.py), kept in the database so that every server process and every
-- server of the database counts against one allowance.
CREATE TABLE login_attempts (
    key      text PRIMARY KEY,        -- 'user:<sha256 hex>' or 'address:<address>'
    attempts timestamptz[] NOT NULL,  -- the times of the attempts counted, oldest first
    last_at  timestamptz NOT NULL     -- the latest of them: rows without a recent one go
);

CREATE INDEX login_attempts_last_at ON login_attempts (last_at);
