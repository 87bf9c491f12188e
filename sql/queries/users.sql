-- User accounts and profiles.

-- name: create_user
INSERT INTO users (username, password_hash) VALUES ($1, $2)
ON CONFLICT (username, source) DO NOTHING
RETURNING id

-- name: sign_in_sso_user
-- The Keycloak user of this name, created on first sign-in with the profile the token carries;
-- never a local account of the same name. Later sign-ins leave the profile to the user. The
-- account is bound to the realm's user (issuer, sub) that first signed in: no row comes back for
-- another sub of the same realm (a realm of another issuer, the operator's move, rebinds it).
INSERT INTO users (username, source, display_name, email, sso_issuer, sso_subject)
VALUES ($1, 'keycloak', $2, $3, $4, $5)
ON CONFLICT (username, source) DO UPDATE
SET sso_issuer = EXCLUDED.sso_issuer, sso_subject = EXCLUDED.sso_subject
WHERE users.sso_subject IS NULL
   OR users.sso_subject = EXCLUDED.sso_subject
   OR users.sso_issuer IS DISTINCT FROM EXCLUDED.sso_issuer
RETURNING id, token_generation

-- name: get_login
SELECT id, password_hash, token_generation FROM users WHERE username = $1 AND source = 'local'

-- name: get_user
-- With the user's live sessions: the first 16 bytes of each live refresh token's stored SHA-256,
-- which the access tokens of that session carry (auth.py: `sid`).
SELECT u.id, u.username, u.source, u.token_generation,
       array(
           SELECT substring(t.token_sha256 FROM 1 FOR 16) FROM refresh_tokens t
           WHERE t.user_id = u.id AND t.revoked_at IS NULL AND t.expires_at > now()
       ) AS sessions
FROM users u WHERE u.id = $1

-- name: get_profile
SELECT username, source, display_name, email FROM users WHERE id = $1

-- name: get_password_hash
SELECT password_hash FROM users WHERE id = $1

-- name: update_profile
-- $3 and $5 are applied only when the flags $2 and $4 are set; $6 is a new hash or NULL. A new
-- password starts a new token generation (migration 0009), and is set only while the hash is
-- still $7, the one the current password was checked against: of two changes at once, the
-- second waits for the first's row lock and then matches no row. Returns the generation now
-- current; NULL when nothing changed (no such user, or its password changed meanwhile).
UPDATE users SET
    display_name     = CASE WHEN $2 THEN $3 ELSE display_name END,
    email            = CASE WHEN $4 THEN $5 ELSE email END,
    password_hash    = COALESCE($6, password_hash),
    token_generation = token_generation + CASE WHEN $6 IS NULL THEN 0 ELSE 1 END
WHERE id = $1 AND ($6::text IS NULL OR password_hash = $7)
RETURNING token_generation

-- name: lock_owner
-- Lock the row of a user ($1), or of a simulation's owner ($2), for the rest of the transaction:
-- writes of one user are checked against the quota one after another. Returns the user's id.
SELECT id FROM users
WHERE id = coalesce($1, (SELECT user_id FROM simulations WHERE id = $2))
FOR UPDATE
