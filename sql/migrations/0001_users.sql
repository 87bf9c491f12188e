-- User accounts and their refresh tokens.

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      text NOT NULL UNIQUE,
    password_hash text,                       -- argon2id; NULL for SSO users
    source        text NOT NULL DEFAULT 'local' CHECK (source IN ('local', 'keycloak')),
    display_name  text,
    email         text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- A refresh token is stored only as the SHA-256 of its random id (jti); logout sets revoked_at.
CREATE TABLE refresh_tokens (
    token_sha256 bytea PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user_id ON refresh_tokens (user_id);
