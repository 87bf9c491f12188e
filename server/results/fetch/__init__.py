"""GET /results and the UI dialect's results, from query to socket: query filters (filters),
content negotiation and ETags (negotiation), what the endpoints share (answers), the spliced
body (render) with the stores it takes from the process (stores), inflated for identity
clients (inflating), written to its client (writing)."""
