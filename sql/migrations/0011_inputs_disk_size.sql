-- The bytes a simulation's input takes once written into its job directory (`input/`: the
-- input files as text, or input.json for an operator's converter), uncompressed, as the local
-- runner and SLURM write it; counted by the quota (users.sql stored_bytes) beside the
-- compressed rows. zlib does not record the uncompressed length, so SQL cannot learn it for the
-- rows already stored: they count the compressed size of what their workers get once more
-- (at least what they counted before; their job directories go runner.job_dir_ttl after their
-- end). NULL only in rows written by an older server still running during the upgrade.
ALTER TABLE inputs ADD COLUMN disk_size bigint;

UPDATE inputs SET disk_size = octet_length(coalesce(files, data));
