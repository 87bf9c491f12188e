"""Named SQL queries: every `sql/queries/*.sql` file holds blocks headed `-- name: <name>`.

Store functions fetch their statement with `query("name")`; asyncpg prepares and caches each
statement text per connection, so a name costs one parse per connection, not per call.
"""

import re
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def parse_queries(text: str, origin: str) -> dict[str, str]:
    """Split one file into {name: statement}; text before the first header must be comments."""
    parts = _HEADER.split(text)
    preamble = [line for line in parts[0].splitlines() if line.strip()]
    if any(not line.lstrip().startswith("--") for line in preamble):
        raise ValueError(f"{origin}: SQL before the first '-- name:' header")
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        statement = body.strip()
        if not statement:
            raise ValueError(f"{origin}: query {name!r} is empty")
        queries[name] = statement
    return queries


def load_queries(directory: Path = SQL_DIR / "queries") -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, statement in parse_queries(path.read_text(), path.name).items():
            if name in queries:
                raise ValueError(f"{path.name}: query {name!r} is defined twice")
            queries[name] = statement
    return queries


QUERIES = load_queries()


def query(name: str) -> str:
    return QUERIES[name]
