"""Simulations as jobs: submission, who may touch one, the states and their moves, and every
write that moves a state (server.jobs.transitions)."""
