"""Parsing a large `POST /results` body one page at a time.

Parsed whole, a body of result pages takes about eight times its size in Python objects (every
number becomes an object). Instead, one scan over the raw bytes finds where each page object of
`estimators[*].pages[*]` starts and ends (only strings, brackets and colons are looked at: the
numbers that make up most of a body are skipped by the regular expression engine); the rest of
the body is parsed with each page replaced by a small placeholder, and each page is parsed when
it is encoded, then dropped. Memory: the body, one page's objects and the encoded pages.

A body whose layout is not the expected one (or that is not valid JSON) is parsed whole, which
gives the same answers (and the same 400s) as before.
"""

import re
from dataclasses import dataclass
from typing import Any

import orjson

from server.errors import BadRequest
from server.limits.pauses import Pauses

# Bodies up to this size are parsed whole: the scan costs more than it saves on small ones.
SPLIT_ABOVE = 16 * 1024 * 1024
PLACEHOLDER_KEY = "\0page"
# A run of anything else (the numbers, mostly: matched in bulk, it is what makes the scan fast),
# a string, or one of the characters that give the layout. A string's content is matched
# possessively (no backtracking), and a string with no closing quote is a token too, up to the
# end of the body (its group "end" unset): the scan stops there. Matched by backtracking, such a
# string took time doubling with each byte after its quote (`"aaaa...` froze the server), and
# every escaped quote after it would have started another scan to the end.
_TOKEN = re.compile(rb'[^"{}\[\]:]+|"(?:[^"\\]++|\\.)*+(?P<end>")?|[{}\[\]:]', re.DOTALL)
_CLOSERS = (0x7D, 0x5D)  # "}", "]"
MAX_DEPTH = 1024  # containers open at once (orjson refuses deeper JSON)
# Tokens scanned at most, about a second of the event loop: a page of the fixture has ~130, and
# an upload at most 10,000 pages (results.upload.MAX_ITEMS).
MAX_TOKENS = 2_000_000
# Scanned between two looks at the clock (server/limits/pauses.py): about 5 ms of either.
SCAN_TOKENS, SCAN_BYTES = 4096, 8 << 20
# The longest key that gives a role (_ROLES); a longer string before a colon is not copied (each
# colon after an 8 MB key copied it again: hours of the event loop for a 17 KB gzip body).
_KEY_LENGTH = len(b'"estimators"')
_ROLES = {
    (None, b"{"): "root",
    ("root", b"[", b'"estimators"'): "estimators",
    ("estimators", b"{"): "estimator",
    ("estimator", b"[", b'"pages"'): "pages",
    ("pages", b"{"): "page",
}


@dataclass
class PageSpans:
    """Where the pages are in the raw body; `load(placeholder)` parses the page it stands for."""

    body: memoryview
    spans: list[tuple[int, int]]

    def load(self, placeholder: dict[str, Any]) -> Any:
        start, end = self.spans[placeholder[PLACEHOLDER_KEY]]
        return _parse(self.body[start:end])

    async def check_json(self, pauses: Pauses) -> None:
        """400 "Malformed JSON body" if any page is not JSON: what parsing the body whole would
        have answered before any other check (each page parsed and dropped in turn)."""
        for start, end in self.spans:
            _parse(self.body[start:end])
            await pauses()


def is_placeholder(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and PLACEHOLDER_KEY in value


def _role(parent: str | None, opening: bytes, key: bytes | None) -> str:
    role = _ROLES.get((parent, opening)) or _ROLES.get((parent, opening, key or b""))
    return role or "other"


class _Scan:
    """find_pages a number of tokens at a time (the event loop may pause in between)."""

    def __init__(self, body: bytes | bytearray, max_pages: int) -> None:
        self.body, self.max_pages = body, max_pages
        self.tokens = enumerate(_TOKEN.finditer(body))
        self.stack: list[tuple[str, int]] = []  # (role, start offset) of each open container
        self.key: bytes | None = None
        self.last_string = (0, 0)
        self.spans: list[tuple[int, int]] = []

    def run(self, tokens: int, size: int) -> tuple[bool, list[tuple[int, int]] | None]:
        """Scan up to `tokens` more tokens, or past `size` more bytes (a run of numbers is one
        token, of megabytes): (finished, the spans or None)."""
        until = None
        for _ in range(tokens):
            found = next(self.tokens, None)
            if found is None:
                return True, self.spans if not self.stack else None
            count, match = found
            if count > MAX_TOKENS or len(self.stack) > MAX_DEPTH or not self._token(match):
                return True, None
            until = until or match.start() + size
            if match.end() >= until:
                break
        return False, None

    def _token(self, match: re.Match[bytes]) -> bool:
        """Take one token in; False when the body is not laid out as JSON pages may be."""
        body, stack, start = self.body, self.stack, match.start()
        char = body[start]
        if char == 0x22:  # a string: a key, if a colon follows
            if match.group("end") is None:  # not closed: not JSON
                return False
            self.last_string = (start, match.end())
        elif char == 0x3A:  # ":"
            named = stack and stack[-1][0] in ("root", "estimator")
            first, end = self.last_string
            short = end - first <= _KEY_LENGTH
            self.key = bytes(body[first:end]) if named and short else None
        elif char in (0x7B, 0x5B):  # "{", "["
            parent = stack[-1][0] if stack else None
            inner = parent in ("page", "other")
            stack.append(("other" if inner else _role(parent, bytes([char]), self.key), start))
            self.key = None
        elif char in _CLOSERS:
            return self._close(char, match.end())
        return True

    def _close(self, char: int, end: int) -> bool:
        if not self.stack:
            return False
        role, opened = self.stack.pop()
        if (self.body[opened] == 0x7B) != (char == 0x7D):
            return False
        if role == "page":
            self.spans.append((opened, end))
        return len(self.spans) <= self.max_pages


def find_pages(body: bytes | bytearray, max_pages: int = 2**63) -> list[tuple[int, int]] | None:
    """(start, end) of every page object, or None when the brackets do not balance, or there are
    more than `max_pages`, or containers nest deeper than MAX_DEPTH, or the body has more than
    MAX_TOKENS tokens (then the whole body is parsed, its parse held from the budget: the spans
    of millions of `{}` pages took gigabytes, held from nothing, 16 MiB of `[` a stack of 1.8 GB
    and 14 s of the event loop, and 17 MiB of `[],` 9 s of it)."""
    return _Scan(body, max_pages).run(MAX_TOKENS + 2, len(body) + 1)[1]


def skeleton(body: bytes | bytearray, spans: list[tuple[int, int]]) -> bytes:
    """The body with each page (at `spans`) replaced by a placeholder naming its number."""
    pieces, position = [], 0
    for number, (start, end) in enumerate(spans):
        pieces.append(bytes(body[position:start]))
        pieces.append(b'{"\\u0000page":%d}' % number)
        position = end
    pieces.append(bytes(body[position:]))
    return b"".join(pieces)


def _placeholders(data: Any) -> list[int]:
    """The numbers of the placeholders where pages are read (`estimators[*].pages[*]`)."""
    estimators = data.get("estimators") if isinstance(data, dict) else None
    if not isinstance(estimators, list):
        return []
    lists = [e.get("pages") for e in estimators if isinstance(e, dict)]
    found = [p for pages in lists if isinstance(pages, list) for p in pages if is_placeholder(p)]
    return [p[PLACEHOLDER_KEY] for p in found]


def _parse(body: bytes | bytearray | memoryview) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed JSON body") from None


async def page_spans(
    body: bytes | bytearray, max_pages: int, pauses: Pauses
) -> list[tuple[int, int]] | None:
    """Where the pages of a large body are (None: parsed whole, small or not so laid out),
    found with `pauses` (a scan of 425 MB takes about a second)."""
    if len(body) <= SPLIT_ABOVE:
        return None
    scan = _Scan(body, max_pages)
    while True:
        finished, spans = scan.run(SCAN_TOKENS, SCAN_BYTES)
        if finished:
            return spans
        await pauses()


def split_upload(
    body: bytes | bytearray, spans: list[tuple[int, int]], rest: bytes
) -> tuple[dict[str, Any], PageSpans] | None:
    """The body parsed, with its pages (at `spans`) left as placeholders (`rest`, its
    skeleton); and the pages.

    None when the body must be parsed whole after all (parsed_whole): unless every
    page's placeholder is found where pages are read, once each and in order, pages the parsed
    body leaves out (a duplicate key replaced them) would never be parsed, and an object the
    client shaped like a placeholder would stand for a page it is not."""
    data = _parse(rest)
    if _placeholders(data) != list(range(len(spans))):
        return None
    return _object(data), PageSpans(memoryview(body), spans)


def parsed_whole(body: bytes | bytearray) -> tuple[dict[str, Any], None]:
    return _object(_parse(body)), None


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest("JSON body must be an object")
    return data
