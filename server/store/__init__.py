"""Repository functions, one module per table (results: estimators and pages), each function
one named query of sql/queries/<module>.sql; transactions are composed by their callers."""
