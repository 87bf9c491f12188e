-- Access tokens carry the generation of their user's tokens they were issued in (claim "gen");
-- a password change starts a new one, so that every access token issued before it is refused,
-- not only the other sessions' refresh tokens. Tokens without the claim count as generation 0.
ALTER TABLE users ADD COLUMN token_generation integer NOT NULL DEFAULT 0;
