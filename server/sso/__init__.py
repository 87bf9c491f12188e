"""Single sign-on through Keycloak: the realm's signing keys (jwks) and the checks a Keycloak
access token must pass (keycloak)."""
