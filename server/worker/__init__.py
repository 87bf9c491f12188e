"""The built-in worker: runs one task of a simulation (SHIELD-HIT12A or FLUKA), or its merge step.

It is the local runner's default command (`python -m server.worker [merge]`, also
`python run.py worker [merge]`) and runs unchanged on an HPC node: it learns everything from
YAPTIDE_* environment variables (settings.py), talks to the server only over HTTP with the
simulation's update key (client.py), and needs only this package and its dependencies.
"""
