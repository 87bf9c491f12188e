"""Repository functions: one query each, called by name from sql/queries/."""
