-- The SHIELD-HIT12A input files converted from an editor project at submission (zlib-compressed
-- JSON {name: text}), kept beside the project; NULL when the input was files, or when an
-- operator's converter runs in the workers instead.
ALTER TABLE inputs ADD COLUMN files bytea;
