"""The SLURM dispatcher (`runner.kind = "slurm"`, `POST /jobs/batch`): a job array and a merge
job per simulation, on this host or on clusters over SSH, watched by a reconciler."""
