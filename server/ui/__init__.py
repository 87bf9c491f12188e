"""Serving the YAPTIDE web UI: its API dialect, CORS for it, and its built files."""
