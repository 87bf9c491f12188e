"""Parsing a large `POST /logfiles` body without holding the event loop for all its text.

Parsed whole, 200 MB of log text held the event loop for about a second (orjson holds the GIL:
a thread would not free it). Instead, one scan for quotes finds the long strings (over LONG
bytes), the rest of the body is parsed with each replaced by a placeholder, and each long string
is decoded a piece at a time, with pauses between pieces (server/limits/pauses.py), and kept
as its pieces (store.logfiles.Pieces: its parts are cut across them when stored, the text is
never joined). A piece ends only where no escape sequence, surrogate pair or UTF-8 character is
cut, so the pieces decode to what the whole string does and fail where it does: the stored texts
and the 400s are those of the whole parse. A body whose placeholders do not all stand where log
texts are read (`logfiles.<name>`, once each, in order) is parsed whole, as is a stranger's, a
small one, or one of more than MAX_QUOTES quotes.
"""

import re
import secrets
from typing import Any

import orjson
from aiohttp import web

from server.errors import BadRequest
from server.limits.bodies import hold_for_parsing
from server.limits.budget import STRANGER, wide_text
from server.limits.pauses import Pauses
from server.parsing import parse_json
from server.results.pagesplit import SPLIT_ABOVE
from server.store.logfiles import Pieces

LONG = 1 << 20  # strings of more bytes are decoded apart
PIECE = 1 << 20  # bytes of a string decoded at once: ~2 ms
MAX_QUOTES = 2_000_000  # quotes looked at, at most (about a second): past it, parsed whole
QUOTES_BETWEEN_PAUSES = 4096
_LOW = re.compile(rb"\\u[dD][c-fC-F]")  # the second half of a surrogate pair: no cut before it
CUT_TRIES = 64  # looks for a place to cut a piece, at most: then the rest is one piece


async def parse_logfiles_body(
    request: web.Request, raw: bytearray, pauses: Pauses
) -> dict[str, Any]:
    """The body as a JSON object, what its parse takes held from the budget first."""
    large = len(raw) > SPLIT_ABOVE and not request.get(STRANGER, True)
    spans = await long_strings(raw, pauses) if large else None
    data = await _parsed_around(request, raw, spans, pauses) if spans else None
    if data is not None:
        return data
    await hold_for_parsing(request, raw, pauses=pauses)
    return parse_json(raw)


async def _parsed_around(
    request: web.Request, raw: bytearray, spans: list[tuple[int, int]], pauses: Pauses
) -> dict[str, Any] | None:
    """The body parsed around its long strings, then each decoded into its place; None when
    they are not all log texts."""
    prefix = f"\0{secrets.token_hex(8)}:"  # no body can name a placeholder of its own
    wide, size = await wide_text(raw, pauses), sum(end - start for start, end in spans)
    texts, others = size * (4 if wide else 1), len(raw) - size + 40 * len(spans)
    await hold_for_parsing(request, b"", plus=texts + others)  # the skeleton, before it is made
    rest = skeleton(raw, spans, prefix)
    await hold_for_parsing(request, rest, plus=texts + len(rest), wide=wide)
    data = parse_json(rest)
    files = data.get("logfiles")
    if not isinstance(files, dict) or _placed(files, prefix) != list(range(len(spans))):
        return None
    for name, text in files.items():
        if isinstance(text, str) and text.startswith(prefix):
            start, end = spans[int(text[len(prefix) :])]
            files[name] = await decode(raw, start, end, pauses)
    return data


async def long_strings(body: bytes | bytearray, pauses: Pauses) -> list[tuple[int, int]] | None:
    """(start, end) of each string of more than LONG bytes, its quotes included; None past
    MAX_QUOTES quotes. Exact for JSON (outside strings, a quote opens one)."""
    spans: list[tuple[int, int]] = []
    opened, position = -1, 0
    for count in range(MAX_QUOTES):
        quote = body.find(b'"', position)
        if quote < 0:
            return spans
        position = quote + 1
        if opened < 0:
            opened = quote
        elif not _escaped(body, opened, quote):
            if quote - opened > LONG:
                spans.append((opened, position))
            opened = -1
        if count % QUOTES_BETWEEN_PAUSES == 0:
            await pauses()
    return None


def _escaped(body: bytes | bytearray, opened: int, quote: int) -> bool:
    """Whether the quote at `quote`, in the string opened at `opened`, follows an odd number of
    backslashes."""
    return body[quote - 1] == 0x5C and (quote - _run_start(body, opened + 1, quote)) % 2 == 1


def _run_start(body: bytes | bytearray, floor: int, end: int) -> int:
    """Where the run of backslashes before `end` begins (not before `floor`), looked for in
    windows growing from 64 bytes."""
    window = 64
    while True:
        start = max(floor, end - window)
        kept = len(bytes(body[start:end]).rstrip(b"\\"))
        if kept or start == floor:
            return start + kept
        end, window = start, window * 2


def skeleton(body: bytes | bytearray, spans: list[tuple[int, int]], prefix: str) -> bytearray:
    """The body with each long string (at `spans`) replaced by the text `<prefix><number>`."""
    escaped, view = prefix.replace("\0", "\\u0000").encode(), memoryview(body)
    rest, position = bytearray(), 0
    for number, (start, end) in enumerate(spans):
        rest += view[position:start]
        rest += b'"%s%d"' % (escaped, number)
        position = end
    rest += view[position:]
    return rest


def _placed(files: dict[str, Any], prefix: str) -> list[int]:
    """The numbers of the placeholders among the log texts, in order: 0, 1, ... unless a
    duplicate key dropped one, or a long string stood somewhere else."""
    texts = [text for text in files.values() if isinstance(text, str)]
    return [int(text[len(prefix) :]) for text in texts if text.startswith(prefix)]


async def decode(body: bytes | bytearray, start: int, end: int, pauses: Pauses) -> Pieces:
    """The string at body[start:end] (its quotes included), decoded PIECE bytes at a time; 400
    "Malformed JSON body" where the whole would have been."""
    pieces, position, last = Pieces(), start + 1, end - 1
    view = memoryview(body)
    while position < last:
        cut = _cut(body, position, position + PIECE, last)
        pieces.append(_string(b'"' + view[position:cut] + b'"'))
        position = cut
        await pauses()
    return pieces


def _cut(body: bytes | bytearray, position: int, at: int, last: int) -> int:
    """The first place at or after `at` where the piece from `position` (a place to cut) of the
    string ending at `last` may end: 6 bytes past `at` when no backslash comes in the 10 bytes
    from it (past any escape `at` fell in), moved to the start of a UTF-8 character; else
    between two escapes: before a run of backslashes, unless it is the second half of a
    surrogate pair, or inside one, an even number of backslashes from its start."""
    for _ in range(CUT_TRIES):
        if at + 6 >= last:
            return last
        slash = body.find(b"\\", at, min(at + 10, last))
        if slash < 0:
            return _character_start(body, at + 6, last)
        if body[slash - 1] == 0x5C:  # in a run: it began at or after `position`
            return slash + (slash - _run_start(body, position, slash)) % 2
        if not _LOW.match(body, slash):
            return slash
        at = slash + 6
    return last


def _character_start(body: bytes | bytearray, at: int, last: int) -> int:
    while at < last and 0x80 <= body[at] < 0xC0:  # a UTF-8 continuation byte (3 at most)
        at += 1
    return at


def _string(piece: bytes) -> str:
    try:
        text = orjson.loads(piece)
    except orjson.JSONDecodeError:
        raise BadRequest("Malformed JSON body") from None
    assert isinstance(text, str)
    return text
