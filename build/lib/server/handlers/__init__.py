"""HTTP handlers, one module per endpoint group; only server.app imports them."""
