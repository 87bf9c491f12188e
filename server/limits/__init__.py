"""What bounds a hostile or careless client: request bodies read with bounded memory and time
(bodies, budget), login throttling (throttle), and the HTTP server's own connection settings
(serving)."""
