"""The database: the pool, migrations and checks (db), the named-query loader (sql), and the
embedded PostgreSQL (embedded, postmaster)."""
