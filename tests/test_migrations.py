"""The migrations runner (against a scratch database per test) and the named-query loader."""

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from server.database.db import MIGRATIONS_DIR, MigrationError, migrate, read_migrations
from server.database.sql import QueryFileError, load_queries, parse_queries, query
from server.jobs.states import JOB_STATES, TERMINAL_STATES
from server.processes import one_line
from server.store import logfiles

FIRST = "CREATE TABLE a (id integer PRIMARY KEY);\nINSERT INTO a VALUES (1);\n"
SECOND = "-- b refers to a\nCREATE TABLE b (a_id integer REFERENCES a (id));\n"


@pytest.fixture
async def scratch(scratch_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(scratch_url)
    yield conn
    await conn.close()


def files(directory: Path, **contents: str) -> Path:
    """Write migration files: files(d, **{"0001_a.sql": "..."})."""
    directory.mkdir(exist_ok=True)
    for name, text in contents.items():
        (directory / name).write_text(text)
    return directory


async def recorded(conn: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY 1")
    return [tuple(row) for row in rows]


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row["tablename"] for row in rows}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_applies_once_and_records_checksums(scratch, tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST, "0002_b.sql": SECOND})
    assert await migrate(scratch, directory) == ["0001_a.sql", "0002_b.sql"]
    assert await recorded(scratch) == [
        (1, "0001_a.sql", sha(FIRST)),
        (2, "0002_b.sql", sha(SECOND)),
    ]
    assert await tables(scratch) == {"a", "b", "schema_migrations"}
    assert await migrate(scratch, directory) == []
    assert await scratch.fetchval("SELECT count(*) FROM a") == 1  # not run twice


async def test_real_migrations(scratch):
    names = [m.name for m in read_migrations()]
    assert names[:2] == ["0001_users.sql", "0002_simulations.sql"]
    assert await migrate(scratch) == names
    assert [name for _, name, _ in await recorded(scratch)] == names
    assert await migrate(scratch, MIGRATIONS_DIR) == []


async def test_inputs_stored_before_their_disk_size_count_their_compressed_size(scratch, tmp_path):
    """Migration 0011 adds inputs.disk_size (the quota counts it): zlib does not record the
    uncompressed length, so rows already stored get the compressed size of what their workers
    get (the converted files, or else the submitted input)."""
    before = [m for m in read_migrations() if m.version < 11]
    await migrate(scratch, files(tmp_path / "old", **{m.name: m.sql for m in before}))
    user = await scratch.fetchval("INSERT INTO users (username) VALUES ('old') RETURNING id")
    for n, stored in enumerate([(b"d" * 10, None), (b"d" * 10, b"f" * 3)]):
        sim = await scratch.fetchval(
            "INSERT INTO simulations (job_id, user_id, title, sim_type, input_type, ntasks,"
            " update_key_sha256) VALUES ($1, $2, 't', 'shieldhit', 'files', 1, '') RETURNING id",
            f"job-{n}",
            user,
        )
        await scratch.execute("INSERT INTO inputs VALUES ($1, $2, $3)", sim, *stored)
    assert (await migrate(scratch))[:2] == [
        "0011_inputs_disk_size.sql",
        "0012_simulation_stored_bytes.sql",
    ]
    rows = await scratch.fetch("SELECT disk_size FROM inputs ORDER BY simulation_id")
    assert [row["disk_size"] for row in rows] == [10, 3]
    # and 0012 measured them for the quota: row (1 + 256 + 128), input, disk_size
    sizes = await scratch.fetch("SELECT stored_bytes FROM simulations ORDER BY id")
    assert [row["stored_bytes"] for row in sizes] == [385 + 10 + 10, 385 + 13 + 3]


async def test_logs_and_results_stored_before_parts_and_page_rows_read_back(scratch, tmp_path):
    """Migration 0016 counts a page's row against the quota, recomputing the simulations that
    have results; 0017 stores log files in parts: one stored before is one part, read back
    whole by this code, and replaced by parts."""
    before = [m for m in read_migrations() if m.version < 16]
    await migrate(scratch, files(tmp_path / "old", **{m.name: m.sql for m in before}))
    user = await scratch.fetchval("INSERT INTO users (username) VALUES ('old') RETURNING id")
    sim = await scratch.fetchval(
        "INSERT INTO simulations (job_id, user_id, title, sim_type, input_type, ntasks,"
        " update_key_sha256) VALUES ('job-0', $1, 't', 'shieldhit', 'files', 1, '')"
        " RETURNING id",
        user,
    )
    text = "\U0001f600" + "x" * (3 * logfiles.PART)  # one row, 3 Mi characters and one
    await scratch.execute("INSERT INTO logfiles VALUES ($1, 'big', $2), ($1, 'e', '')", sim, text)
    estimator = await scratch.fetchval(
        "INSERT INTO estimators (simulation_id, name, position, fields) VALUES ($1, 'z', 0, '')"
        " RETURNING id",
        sim,
    )
    await scratch.execute(
        "INSERT INTO pages (estimator_id, page_number, name, dimensions, data, crc32,"
        " crc_shift, raw_size) VALUES ($1, 1, 'dose', '{2,3}', '\\x0102', 0, 0, 2)",
        estimator,
    )
    await scratch.execute("UPDATE simulations SET stored_bytes = simulation_stored_bytes(id)")
    old_bytes = await scratch.fetchval("SELECT stored_bytes FROM simulations")
    applied = await migrate(scratch)
    assert applied[:2] == ["0016_page_rows_in_quota.sql", "0017_logfile_parts.sql"]
    # the page's row (128), name (4) and dimensions (2 x 4) now count
    assert await scratch.fetchval("SELECT stored_bytes FROM simulations") == old_bytes + 140
    batches = [batch async for batch in logfiles.read_batches(scratch, sim)]
    assert [(p.name, p.part, p.content) for b in batches for p in b] == [
        ("big", 0, text),
        ("e", 0, ""),
    ]
    async with scratch.transaction():
        await logfiles.upsert(scratch, sim, {"big": text})
    parts = await scratch.fetch(
        "SELECT part, length(content) AS n FROM logfiles WHERE name = 'big'"
    )
    assert [tuple(row) for row in parts] == [
        (0, logfiles.PART),
        (1, logfiles.PART),
        (2, logfiles.PART),
        (3, 1),
    ]


async def test_a_data_migration_on_a_database_without_statistics_is_not_quadratic(
    scratch, tmp_path
):
    """A database just restored from a dump has no planner statistics (pg_restore brings none)
    until autovacuum analyses it. Migration 0012 sizes each simulation with a function whose
    query, planned without them, read the whole pages table per simulation: 4,000 simulations
    of 40,000 pages took ~9 s (100,000 would take hours, the server down meanwhile). The runner
    analyses an existing database before migrating it."""
    before = [m for m in read_migrations() if m.version < 12]
    await migrate(scratch, files(tmp_path / "old", **{m.name: m.sql for m in before}))
    for table in ("simulations", "estimators", "pages"):  # as right after pg_restore
        await scratch.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    await scratch.execute("INSERT INTO users (username) VALUES ('old')")
    await scratch.execute(
        "INSERT INTO simulations (job_id, user_id, title, sim_type, input_type, ntasks,"
        " job_state, update_key_sha256) SELECT 'job-' || g, 1, 't', 'shieldhit', 'files', 1,"
        " 'COMPLETED', '' FROM generate_series(1, 4000) g"
    )
    await scratch.execute(
        "INSERT INTO estimators (simulation_id, name, position)"
        " SELECT id, 'est' || e, e FROM simulations, generate_series(1, 2) e"
    )
    await scratch.execute(
        "INSERT INTO pages (estimator_id, page_number, name, dimensions, data, crc32,"
        " crc_shift, raw_size) SELECT e.id, p, 'DOSE', ARRAY[100], $1, 0, 0, 800"
        " FROM estimators e, generate_series(1, 5) p",
        b"x" * 100,
    )
    async with asyncio.timeout(4):  # ~0.3 s analysed (quadratic: ~9 s on the machine measured)
        assert (await migrate(scratch))[0] == "0012_simulation_stored_bytes.sql"
    assert await scratch.fetchval("SELECT count(*) FROM simulations WHERE stored_bytes > 0") == 4000


DIRECT = (
    "INSERT INTO simulations (job_id, user_id, title, sim_type, input_type, ntasks,"
    " update_key_sha256, platform) VALUES ($1, 1, 't', 'shieldhit', 'files', 1, '', 'direct')"
)


@pytest.mark.parametrize("first", [19, 21], ids=["through-0019-first", "from-0018-at-once"])
async def test_simulations_stored_before_0019_have_no_known_runner(scratch, tmp_path, first):
    """Migration 0019 took every simulation stored before it for the local runner's (true), an
    external worker's too; 0021 makes theirs unknown (NULL), and keeps those stored since."""
    before = [m for m in read_migrations() if m.version < 19]
    await migrate(scratch, files(tmp_path / "old", **{m.name: m.sql for m in before}))
    await scratch.execute("INSERT INTO users (username) VALUES ('old')")
    await scratch.execute(DIRECT, "old")
    upto = [m for m in read_migrations() if m.version < first]
    await migrate(scratch, files(tmp_path / "new", **{m.name: m.sql for m in upto}))
    if first == 21:  # stored by servers that record the runner
        await scratch.execute(DIRECT, "external")
        await scratch.execute(DIRECT, "local")
        await scratch.execute("UPDATE simulations SET local_runner = true WHERE job_id = 'local'")
    await migrate(scratch)
    rows = await scratch.fetch("SELECT job_id, local_runner FROM simulations")
    expected = {"old": None} | ({"external": False, "local": True} if first == 21 else {})
    assert dict(tuple(row) for row in rows) == expected


async def test_edited_migration_is_refused(scratch, tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST})
    await migrate(scratch, directory)
    files(directory, **{"0001_a.sql": FIRST + "-- a harmless edit\n", "0002_b.sql": SECOND})
    with pytest.raises(MigrationError) as info:
        await migrate(scratch, directory)
    assert str(info.value) == (
        "migration 0001_a.sql was edited after it was applied; "
        "migrations are forward-only: restore the file and add a new migration instead"
    )
    assert await tables(scratch) == {"a", "schema_migrations"}  # 0002 was not applied either


async def test_line_endings_are_not_an_edit(scratch, tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST})
    await migrate(scratch, directory)
    (directory / "0001_a.sql").write_bytes(FIRST.replace("\n", "\r\n").encode())
    assert await migrate(scratch, directory) == []


async def test_renamed_or_missing_migration_is_refused(scratch, tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST})
    await migrate(scratch, directory)
    (directory / "0001_a.sql").rename(directory / "0001_renamed.sql")
    with pytest.raises(MigrationError) as info:
        await migrate(scratch, directory)
    assert str(info.value) == (
        "migration 0001_a.sql was renamed to 0001_renamed.sql after it was applied; "
        "migrations are forward-only: restore the file and add a new migration instead"
    )
    (directory / "0001_renamed.sql").unlink()
    with pytest.raises(MigrationError) as info:
        await migrate(scratch, directory)
    assert str(info.value) == (
        "migration 0001_a.sql is applied in the database but its file is missing "
        "(is this an older version of the server?)"
    )


async def test_new_files_are_applied_in_order(scratch, tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST})
    assert await migrate(scratch, directory) == ["0001_a.sql"]
    third = "CREATE TABLE c (b_id integer);\nINSERT INTO c SELECT count(*) FROM b;\n"
    files(directory, **{"0003_c.sql": third, "0002_b.sql": SECOND})
    assert await migrate(scratch, directory) == ["0002_b.sql", "0003_c.sql"]
    assert [v for v, _, _ in await recorded(scratch)] == [1, 2, 3]


async def test_new_file_numbered_before_an_applied_one_is_refused(scratch, tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST, "0003_b.sql": SECOND})
    await migrate(scratch, directory)
    files(directory, **{"0002_c.sql": "CREATE TABLE c ();"})
    with pytest.raises(MigrationError) as info:
        await migrate(scratch, directory)
    assert str(info.value) == (
        "migration 0002_c.sql is numbered before 0003_b.sql, which is already applied; "
        "renumber it after 0003"
    )


async def test_failing_migration_rolls_back_that_file_only(scratch, tmp_path):
    failing = "CREATE TABLE b (id integer);\nINSERT INTO a VALUES (2);\nSELECT 1 / 0;\n"
    directory = files(
        tmp_path / "m",
        **{"0001_a.sql": FIRST, "0002_b.sql": failing, "0003_c.sql": "CREATE TABLE c ();"},
    )
    with pytest.raises(MigrationError) as info:
        await migrate(scratch, directory)
    assert str(info.value) == "migration 0002_b.sql failed and was rolled back: division by zero"
    assert await tables(scratch) == {"a", "schema_migrations"}
    assert await scratch.fetchval("SELECT array_agg(id) FROM a") == [1]
    assert await recorded(scratch) == [(1, "0001_a.sql", sha(FIRST))]
    # The advisory lock was released and the connection is usable: fix the file and go on.
    files(directory, **{"0002_b.sql": SECOND})
    assert await migrate(scratch, directory) == ["0002_b.sql", "0003_c.sql"]


async def test_concurrent_runners_apply_each_file_once(scratch_url, tmp_path):
    # Not idempotent (a second CREATE TABLE would fail), and slow enough for the runs to overlap.
    slow = "SELECT pg_sleep(0.2);\n" + FIRST
    directory = files(tmp_path / "m", **{"0001_a.sql": slow, "0002_b.sql": SECOND})
    first, second = [await asyncpg.connect(scratch_url) for _ in range(2)]
    try:
        results = await asyncio.gather(migrate(first, directory), migrate(second, directory))
    finally:
        await first.close()
        await second.close()
    assert sorted(results) == [[], ["0001_a.sql", "0002_b.sql"]]
    conn = await asyncpg.connect(scratch_url)
    assert [name for _, name, _ in await recorded(conn)] == ["0001_a.sql", "0002_b.sql"]
    assert await conn.fetchval("SELECT count(*) FROM a") == 1
    await conn.close()


@pytest.mark.parametrize(
    "name", ["1_a.sql", "00001_a.sql", "0001-a.sql", "0001_A.sql", "0001_.sql", "init.sql"]
)
async def test_bad_file_names_are_refused(scratch, tmp_path, name):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST, name: "SELECT 1;"})
    with pytest.raises(MigrationError) as info:
        await migrate(scratch, directory)
    assert str(info.value) == f"{name}: bad migration file name (expected NNNN_lowercase_name.sql)"
    assert await tables(scratch) == set()  # refused before anything was applied


async def test_shared_number_is_refused(tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST, "0001_b.sql": SECOND})
    with pytest.raises(MigrationError) as info:
        read_migrations(directory)
    assert str(info.value) == "0001_a.sql and 0001_b.sql share the number 0001"


def test_missing_directories(tmp_path):
    with pytest.raises(MigrationError, match="no such directory"):
        read_migrations(tmp_path / "absent")
    with pytest.raises(QueryFileError, match="no such directory"):
        load_queries(tmp_path / "absent")


def test_other_files_are_ignored(tmp_path):
    directory = files(tmp_path / "m", **{"0001_a.sql": FIRST, "README.md": "notes"})
    assert [m.name for m in read_migrations(directory)] == ["0001_a.sql"]


# The named-query loader (server/database/sql.py).


def test_parse_queries():
    text = (
        "-- Comments before the first header are fine.\n\n"
        "-- name: one\nSELECT 1\n\n"
        "--name:two\n-- a comment inside is kept\nSELECT $1::int\nFROM t\n"
    )
    assert parse_queries(text, "x.sql") == {
        "one": "SELECT 1",
        "two": "-- a comment inside is kept\nSELECT $1::int\nFROM t",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "x.sql: query 'a' is defined twice"),
        ("SELECT 0;\n-- name: a\nSELECT 1\n", "x.sql: SQL before the first '-- name:' header"),
        ("SELECT 0;\n", "x.sql: SQL before the first '-- name:' header"),
        ("-- name: a\n\n-- name: b\nSELECT 1\n", "x.sql: query 'a' is empty"),
        ("-- name: a\nSELECT 1\n-- name: b\n-- only a comment\n", "x.sql: query 'b' is empty"),
    ],
)
def test_malformed_query_files(text, message):
    with pytest.raises(QueryFileError) as info:
        parse_queries(text, "x.sql")
    assert str(info.value) == message


def test_duplicate_names_across_files(tmp_path):
    (tmp_path / "a.sql").write_text("-- name: same\nSELECT 1\n")
    (tmp_path / "b.sql").write_text("-- name: other\nSELECT 2\n-- name: same\nSELECT 3\n")
    with pytest.raises(QueryFileError) as info:
        load_queries(tmp_path)
    assert str(info.value) == "b.sql: query 'same' is also defined in a.sql"


def test_query_by_name():
    assert query("list_migrations").startswith("SELECT version, name, checksum")
    with pytest.raises(KeyError, match="no query named 'nope'"):
        query("nope")


def test_every_named_query_is_used():
    """A query no code asks for is dead SQL (or a function that forgot to call it)."""
    server = Path(__file__).resolve().parent.parent / "server"
    code = "\n".join(path.read_text() for path in server.rglob("*.py"))
    asked = set(re.findall(r'query\("(\w+)"\)', code))
    assert sorted(set(load_queries()) - asked) == []


async def test_states_match_the_schema(database_url):
    """The job and task states of server.jobs.states are exactly the CHECK constraints' lists."""
    conn = await asyncpg.connect(database_url)
    try:
        checks = await conn.fetch(
            "SELECT conrelid::regclass::text AS table_name, pg_get_constraintdef(oid) AS check"
            " FROM pg_constraint WHERE contype = 'c' AND pg_get_constraintdef(oid) LIKE '%_state%'"
        )
    finally:
        await conn.close()
    found = {row["table_name"]: re.findall(r"'(\w+)'::text", row["check"]) for row in checks}
    assert found == {"simulations": list(JOB_STATES), "tasks": list(JOB_STATES)}
    assert set(JOB_STATES) > TERMINAL_STATES


async def test_pool_connections_learn_every_array_type_of_the_queries(database_url):
    """server.database.db has each new pool connection run `array_types`, so that asyncpg looks
    up the queries' array types there, all at once, and not on a request's first statement (a
    catalog round trip each): it must name every array type a query takes or returns."""
    conn = await asyncpg.connect(database_url)
    try:
        learnt = {a.type.name for a in (await conn.prepare(query("array_types"))).get_attributes()}
        used = set()
        for name, text in load_queries().items():
            statement = await conn.prepare(text)
            types = [*statement.get_parameters(), *(a.type for a in statement.get_attributes())]
            used |= {(t.name, name) for t in types if t.kind == "array"}
    finally:
        await conn.close()
    assert sorted((t, name) for t, name in used if t not in learnt) == []
    assert learnt <= {t for t, _ in used}  # and nothing more


async def test_a_failed_migration_is_one_line_with_postgresqls_hint(scratch, tmp_path):
    """run.py ends with one line for an expected error; PostgreSQL's HINT made it two."""
    directory = files(tmp_path / "m", **{"0001_a.sql": "SELECT nonsense_fn(1);"})
    with pytest.raises(MigrationError) as info:
        await migrate(scratch, directory)
    assert one_line(info.value) == (
        "Error: migration 0001_a.sql failed and was rolled back: function nonsense_fn(integer) "
        "does not exist; HINT:  No function matches the given name and argument types. You "
        "might need to add explicit type casts."
    )
