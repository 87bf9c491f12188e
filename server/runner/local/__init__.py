"""The local runner (`[runner] kind = "local"`): one worker process per task on this host.

What it does and promises: dispatcher.py. Its parts are importable alone (the SLURM runner and
the embedded database use process.py and jobfiles.py) without loading the dispatcher.
"""
