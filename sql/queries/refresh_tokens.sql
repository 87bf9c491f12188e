-- Sessions: refresh tokens, stored as the SHA-256 of their jti (a Keycloak sign-in's jti is never
-- handed out).

-- name: add_refresh_token
-- Only while the user's token generation is still $4, the one whose password the login checked
-- (an SSO sign-in: the one it read): a password change committed since then (or under way: FOR
-- SHARE waits for it) adds nothing.
INSERT INTO refresh_tokens (token_sha256, user_id, expires_at)
SELECT $1, id, $3 FROM users WHERE id = $2 AND token_generation = $4 FOR SHARE
RETURNING user_id

-- name: get_refresh_token_user
SELECT u.id, u.username, u.source, u.token_generation
FROM refresh_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_sha256 = $1 AND t.revoked_at IS NULL AND t.expires_at > now()

-- name: revoke_session
-- A session is named by the first 16 bytes of its token's SHA-256 (auth.session_id); a row when
-- it was live.
UPDATE refresh_tokens SET revoked_at = now()
WHERE user_id = $1 AND substring(token_sha256 FROM 1 FOR 16) = $2 AND revoked_at IS NULL
RETURNING true

-- name: prune_refresh_tokens
-- A user's tokens that can never refresh again (expired or revoked), and live ones past the
-- newest $2 (the oldest sessions: a login must not grow them without end), removed at each
-- login and SSO sign-in: an absent token is refused just like a revoked one.
DELETE FROM refresh_tokens
WHERE user_id = $1 AND (
    expires_at <= now() OR revoked_at IS NOT NULL
    OR token_sha256 NOT IN (
        SELECT token_sha256 FROM refresh_tokens
        WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
        ORDER BY created_at DESC, token_sha256
        LIMIT $2
    )
)

-- name: extend_session
-- A Keycloak sign-in going on in its browser's session (server/accounts/sessions.py
-- begin_sso); a row when the session was live.
UPDATE refresh_tokens SET expires_at = greatest(expires_at, $3)
WHERE user_id = $1 AND substring(token_sha256 FROM 1 FOR 16) = $2
  AND revoked_at IS NULL AND expires_at > now()
RETURNING true

-- name: revoke_other_sessions
-- A password change ends every other session: all the user's live tokens but those of session
-- $2 (the one that changed it, if any; see revoke_session) are revoked.
UPDATE refresh_tokens SET revoked_at = now()
WHERE user_id = $1 AND revoked_at IS NULL
  AND substring(token_sha256 FROM 1 FOR 16) IS DISTINCT FROM $2

-- name: forget_ended_refresh_tokens
-- Every user's tokens that can never refresh again, also of users who never log in again (a
-- login prunes only its own user's).
DELETE FROM refresh_tokens WHERE expires_at <= now() OR revoked_at IS NOT NULL
