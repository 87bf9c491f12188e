"""Repository functions, one module per table (results: estimators and pages), each function
one named query of sql/queries/<module>.sql (results.save: estimators, then their pages;
logfiles.upsert: the file's old parts deleted, then its new ones; logfiles.read_batches: the
names, then the texts a batch at a time); transactions are composed by their callers."""
