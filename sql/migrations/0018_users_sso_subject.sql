-- A Keycloak account is bound to the realm's user that first signed in to it: the issuer and the
-- `sub` of that token. A username the realm later gives to another user (deleted and re-created,
-- or renamed) no longer reaches the first one's simulations. Accounts made before are bound at
-- their next sign-in.
ALTER TABLE users ADD COLUMN sso_issuer text;
ALTER TABLE users ADD COLUMN sso_subject text;
