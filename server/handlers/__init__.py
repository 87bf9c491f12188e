"""HTTP handlers, one module per endpoint group; only server.app imports them, and the UI
dialect's own handlers (ui), which build on those of auth and results, and keycloak, whose
sign-out is auth's logout."""
