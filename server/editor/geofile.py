"""Writing geo.dat: the header, the body cards, the zone cards and the zone -> medium table.

Fixed columns (see tests/fixtures/shieldhit/minimal/geo.dat): a body card is two blanks, the
3-letter code, the number as I5, then six 10-character fields per line, continued on lines
starting with 10 blanks. A zone card is two blanks, the zone number in 3 digits, five blanks,
then up to nine groups per line of a 2-character field (`OR` where a new term starts) and an
I5 signed body number. The table lists zone numbers, then media, as I5 fields, 14 per line.
"""

import re

from server.editor.figures import Body
from server.editor.formatting import fixed
from server.editor.zones import Zone

FIELDS_PER_LINE = 6
GROUPS_PER_LINE = 9
TABLE_PER_LINE = 14
TITLE_WIDTH = 50
CONTINUATION = " " * 10


def geo_dat(title: str, bodies: list[Body], zones: list[Zone], media: list[int]) -> str:
    lines = [f"{0:5d}{0:5d}{'':10}{_title(title)}"]
    for number, body in enumerate(bodies, start=1):
        lines += _body(number, body)
    lines.append("  END")
    for number, zone in enumerate(zones, start=1):
        lines += _zone(number, zone)
    lines.append("  END")
    lines += _table(list(range(1, len(zones) + 1))) + _table(media)
    return "\n".join(lines) + "\n"


def _title(title: str) -> str:
    return re.sub(r"\s+", " ", title).strip()[:TITLE_WIDTH]


def _body(number: int, body: Body) -> list[str]:
    fields = [fixed(value, body.item) for value in body.numbers]
    rows = [fields[i : i + FIELDS_PER_LINE] for i in range(0, len(fields), FIELDS_PER_LINE)]
    first = f"  {body.code}{number:5d}" + "".join(rows[0])
    return [first] + [CONTINUATION + "".join(row) for row in rows[1:]]


def _zone(number: int, zone: Zone) -> list[str]:
    groups = [
        f"{'OR' if index and position == 0 else '  '}{literal:+5d}"
        for index, term in enumerate(zone.region)
        for position, literal in enumerate(term)
    ]
    rows = [groups[i : i + GROUPS_PER_LINE] for i in range(0, len(groups), GROUPS_PER_LINE)]
    first = f"  {number:03d}{'':5}" + "".join(rows[0])
    return [first] + [CONTINUATION + "".join(row) for row in rows[1:]]


def _table(values: list[int]) -> list[str]:
    return [
        "".join(f"{value:5d}" for value in values[i : i + TABLE_PER_LINE])
        for i in range(0, len(values), TABLE_PER_LINE)
    ]
