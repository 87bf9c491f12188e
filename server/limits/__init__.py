"""What bounds a hostile or careless client: request bodies read with bounded memory and time
(bodies, budget), long work that pauses for other requests (pauses), login throttling
(throttle), and the HTTP server's own connection settings (serving)."""
