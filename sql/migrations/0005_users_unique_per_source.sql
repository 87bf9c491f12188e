-- A Keycloak (SSO) user and a local user may share a username: they are different people to us
-- (one proved who they are to the realm, the other holds a password here), so a username is
-- unique per source, never across sources.

ALTER TABLE users DROP CONSTRAINT users_username_key;
ALTER TABLE users ADD CONSTRAINT users_username_source_key UNIQUE (username, source);
