-- A log file is stored in parts of at most 1 Mi characters, in the order of `part`: GET /logfiles
-- reads a large file a part at a time, so a client that does not read holds a part of it, not
-- the whole file (a 48 MB log held ~70 MB for each such client, until body_timeout). A file
-- stored before is one part. Each part counts 64 bytes against the quota, as a file did.
ALTER TABLE logfiles ADD COLUMN part integer NOT NULL DEFAULT 0;
ALTER TABLE logfiles DROP CONSTRAINT logfiles_pkey;
ALTER TABLE logfiles ADD PRIMARY KEY (simulation_id, name, part);
