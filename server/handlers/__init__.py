"""HTTP handlers, one module per endpoint group (the UI dialect's own: ui; Keycloak sign-in:
keycloak); only server.app imports them. What they share lives outside this package
(server.accounts, server.results.fetch.answers, server.http, server.parsing)."""
