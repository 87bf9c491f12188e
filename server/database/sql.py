"""Named SQL queries: every `sql/queries/*.sql` file holds blocks headed `-- name: <name>`.

Store functions fetch their statement with `query("name")`; asyncpg prepares and caches each
statement text per connection, so a name costs one parse per connection, not per call. The files
are read once at import, so a malformed file stops the server at start, not at the first request.
"""

import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


class QueryFileError(ValueError):
    """A query file is malformed: SQL outside a named block, an empty or duplicated name."""


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("--")


def parse_queries(text: str, origin: str) -> dict[str, str]:
    """Split one file into {name: statement}; text before the first header must be comments."""
    parts = _HEADER.split(text)
    if any(_is_code(line) for line in parts[0].splitlines()):
        raise QueryFileError(f"{origin}: SQL before the first '-- name:' header")
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise QueryFileError(f"{origin}: query {name!r} is defined twice")
        if not any(_is_code(line) for line in body.splitlines()):
            raise QueryFileError(f"{origin}: query {name!r} is empty")
        queries[name] = body.strip()
    return queries


def load_queries(directory: Path = SQL_DIR / "queries") -> dict[str, str]:
    """Every named query of every file in `directory`; names are unique across files."""
    if not directory.is_dir():  # e.g. a non-editable install, which leaves sql/ behind
        raise QueryFileError(f"{directory}: no such directory")
    queries: dict[str, str] = {}
    origins: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, statement in parse_queries(path.read_text(encoding="utf-8"), path.name).items():
            if name in queries:
                raise QueryFileError(
                    f"{path.name}: query {name!r} is also defined in {origins[name]}"
                )
            queries[name] = statement
            origins[name] = path.name
    return queries


QUERIES = load_queries()


def query(name: str) -> str:
    try:
        return QUERIES[name]
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/queries/*.sql") from None
