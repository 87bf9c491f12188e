-- The SLURM jobs of each simulation sent to SLURM (runner.kind = "slurm", or POST /jobs/batch):
-- one job array (one array task per simulation task) and one merge job depending on it.
-- `cluster` is the [[clusters]] name, '' for this host as a login node. `done` turns true once
-- the simulation has ended and nothing of it is left in SLURM: the reconciler stops watching it.
CREATE TABLE slurm_jobs (
    simulation_id bigint PRIMARY KEY REFERENCES simulations (id) ON DELETE CASCADE,
    cluster       text NOT NULL,
    job_dir       text NOT NULL,
    array_job_id  bigint NOT NULL,
    merge_job_id  bigint NOT NULL,
    submitted_at  timestamptz NOT NULL DEFAULT now(),
    done          boolean NOT NULL DEFAULT false
);
CREATE INDEX slurm_jobs_watched ON slurm_jobs (simulation_id) WHERE NOT done;
