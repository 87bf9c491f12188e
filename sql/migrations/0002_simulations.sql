-- Simulations, their tasks, inputs, results (estimators and pages) and log files.

CREATE TABLE simulations (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id            text NOT NULL UNIQUE,
    user_id           bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title             text NOT NULL,
    sim_type          text NOT NULL CHECK (sim_type IN ('shieldhit', 'fluka', 'geant4', 'topas')),
    input_type        text NOT NULL CHECK (input_type IN ('editor', 'files')),
    platform          text NOT NULL DEFAULT 'direct' CHECK (platform IN ('direct', 'batch')),
    ntasks            integer NOT NULL CHECK (ntasks > 0),
    job_state         text NOT NULL DEFAULT 'PENDING' CHECK (job_state IN (
                          'UNKNOWN', 'PENDING', 'RUNNING', 'MERGING_QUEUED', 'MERGING_RUNNING',
                          'COMPLETED', 'FAILED', 'CANCELED')),
    start_time        timestamptz NOT NULL DEFAULT now(),
    end_time          timestamptz,
    update_key_sha256 bytea NOT NULL
);
CREATE INDEX simulations_user_start ON simulations (user_id, start_time, job_id);
CREATE INDEX simulations_user_end ON simulations (user_id, end_time, job_id);

CREATE TABLE tasks (
    simulation_id       bigint NOT NULL REFERENCES simulations (id) ON DELETE CASCADE,
    task_id             integer NOT NULL CHECK (task_id > 0),
    task_state          text NOT NULL DEFAULT 'PENDING' CHECK (task_state IN (
                            'UNKNOWN', 'PENDING', 'RUNNING', 'MERGING_QUEUED', 'MERGING_RUNNING',
                            'COMPLETED', 'FAILED', 'CANCELED')),
    requested_primaries bigint NOT NULL DEFAULT 0,
    simulated_primaries bigint NOT NULL DEFAULT 0,
    estimated_time      integer,
    start_time          timestamptz,
    end_time            timestamptz,
    PRIMARY KEY (simulation_id, task_id)
);

-- The submitted input, exactly as sent, as zlib-compressed JSON.
CREATE TABLE inputs (
    simulation_id bigint PRIMARY KEY REFERENCES simulations (id) ON DELETE CASCADE,
    data          bytea NOT NULL
);

CREATE TABLE estimators (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    simulation_id bigint NOT NULL REFERENCES simulations (id) ON DELETE CASCADE,
    name          text NOT NULL,
    position      integer NOT NULL,
    UNIQUE (simulation_id, name)
);

-- A page as the worker sent it, serialised once: `data` is a raw deflate segment (no header,
-- ended by a sync flush on a byte boundary) so that responses can be spliced from stored bytes,
-- identity (inflate) or gzip (segments joined). `crc32` is the CRC of the serialised page and
-- `crc_shift` is x^(8 * raw_size) mod the CRC polynomial, so a response's CRC is combined from
-- the pages' in a few operations, without reading the data again. Pages are already compressed:
-- PostgreSQL is told not to try again (STORAGE EXTERNAL).
-- Every write of a page takes a new version, so servers can cache stored bytes by version.
CREATE SEQUENCE page_versions;

CREATE TABLE pages (
    estimator_id bigint NOT NULL REFERENCES estimators (id) ON DELETE CASCADE,
    page_number  integer NOT NULL,
    name         text NOT NULL,
    dimensions   integer[] NOT NULL,
    data         bytea NOT NULL,
    crc32        bigint NOT NULL,
    crc_shift    bigint NOT NULL,
    raw_size     integer NOT NULL,
    version      bigint NOT NULL DEFAULT nextval('page_versions'),
    PRIMARY KEY (estimator_id, page_number)
);
ALTER TABLE pages ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE logfiles (
    simulation_id bigint NOT NULL REFERENCES simulations (id) ON DELETE CASCADE,
    name          text NOT NULL,
    content       text NOT NULL,
    PRIMARY KEY (simulation_id, name)
);
