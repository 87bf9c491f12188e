"""Golden tests of the converter against input files that were really run for editor projects.

Equality rule (the editor-to-SHIELD-HIT12A spec page the project started from): the same cards with the same numbers,
ignoring comments, blank lines and spacing, and the order of the signed body numbers inside a
zone term. ex2 and ex4 were made by older converter versions from older states of their
projects, so they are compared by meaning, and every known difference is asserted explicitly.
"""

import re
from typing import Any

import pytest

from server.editor import convert
from tests.helpers import FIXTURES, read_json

DAT_FILES = {"beam.dat", "mat.dat", "geo.dat", "detect.dat"}
Card = tuple[str | float, ...]


def load(name: str) -> dict[str, Any]:
    return read_json(FIXTURES / name)


def _value(token: str) -> str | float:
    try:
        return float(token)
    except ValueError:
        return token


def cards(text: str) -> list[Card]:
    """Lines as tuples of tokens (numbers as floats), without comments and blank lines."""
    lines = (re.split(r"[!#]", line, maxsplit=1)[0].split() for line in text.splitlines())
    return [tuple(_value(token) for token in tokens) for tokens in lines if tokens]


def geo(text: str) -> dict[str, Any]:
    """geo.dat by meaning: title, bodies, zones (terms as sets), zone and medium columns."""
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("*")]
    header, rest = lines[0].split(), lines[1:]
    bodies: list[list[Any]] = []
    while rest[0].split() != ["END"]:
        tokens = rest.pop(0).split()
        if tokens[0].isalpha():
            bodies.append([tokens[0], *map(float, tokens[2:])])
        else:
            bodies[-1] += map(float, tokens)
    rest.pop(0)
    zones: list[list[set[int]]] = []
    while rest[0].split() != ["END"]:
        line = rest.pop(0)
        if line[2:5].strip():  # a zone's number in columns 3-5; else a continuation line
            zones.append([set()])
        for start in range(10, len(line.rstrip()), 7):  # groups: A2 (OR or blank), I5
            if line[start : start + 2] == "OR":
                zones[-1].append(set())
            zones[-1][-1].add(int(line[start + 2 : start + 7]))
    rest.pop(0)
    table = [int(token) for line in rest for token in line.split()]
    count = len(zones)
    return {
        "header": header,
        "bodies": bodies,
        "zones": zones,
        "zone_numbers": table[:count],
        "media": table[count:],
    }


def convert_fixture(name: str, primaries: int) -> tuple[dict[str, str], dict[str, str]]:
    fixture = load(name)
    files = fixture["input_files"]
    return convert(fixture["input_json"], primaries), files


@pytest.mark.parametrize(
    ("name", "primaries"),
    [
        ("json_payload_editor.json", 10000),  # its files were written for all 10000 primaries
        ("ui-examples/ex1-shieldhit.json", 10000 // 15),  # 15 tasks: NSTAT 666
    ],
)
def test_the_example_project_converts_card_by_card(name: str, primaries: int) -> None:
    if name == "json_payload_editor.json":
        ours = convert(load(name)["input_json"], primaries)
        theirs = load("shieldhit_json_payload_files.json")["input_files"]
    else:
        ours, theirs = convert_fixture(name, primaries)
    assert set(ours) == DAT_FILES
    for file in ("beam.dat", "mat.dat", "detect.dat"):
        assert cards(ours[file]) == cards(theirs[file]), file
    assert geo(ours["geo.dat"]) == geo(theirs["geo.dat"])


def test_snowman_spheres_and_boxes_by_meaning() -> None:
    """ex2: spheres, rotated cylinders, a box world of air with its wrapper.

    Its files come from an earlier state of the project: the three hat cylinders sat 0.5 cm
    higher (their bases differ by exactly that) and the WaterHead zone was only Head minus
    HatEdge (it now also subtracts HatTop and adds HatInside inside the Head). Bodies are
    numbered differently (the old converter used another order), so they are matched by shape.
    """
    ours, theirs = convert_fixture("ui-examples/ex2-shieldhit.json", 10000)
    assert set(ours) == DAT_FILES
    for file in ("beam.dat", "detect.dat"):
        assert cards(ours[file]) == cards(theirs[file]), file
    mine, old = geo(ours["geo.dat"]), geo(theirs["geo.dat"])
    # Ours: figures in project order (HatTop, HatInside, HatEdge, Head, Body), world, wrapper.
    moved = [old["bodies"][i] for i in (3, 4, 2)]  # the old file's HatTop, HatInside, HatEdge
    for body, before in zip(mine["bodies"][:3], moved, strict=True):
        assert body[0] == before[0] == "RCC"
        assert body[1:2] + body[3:] == pytest.approx(before[1:2] + before[3:], abs=1e-9)
        assert body[2] == pytest.approx(before[2] - 0.5)  # base y: the hat moved 0.5 cm down
    assert mine["bodies"][3:] == [old["bodies"][i] for i in (1, 0, 5, 6)]  # Head, Body, boxes
    # Old body number -> ours: Body 1->5, Head 2->4, HatEdge 3->3, HatTop 4->1, HatInside 5->2.
    mapping = {1: 5, 2: 4, 3: 3, 4: 1, 5: 2, 6: 6, 7: 7}

    def renumbered(zone: list[set[int]]) -> list[set[int]]:
        return [{mapping[abs(n)] * (1 if n > 0 else -1) for n in term} for term in zone]

    assert mine["zones"][0] == renumbered(old["zones"][0])  # WaterBody
    assert mine["zones"][1] == [{4, -3, -1}, {2, 4}]  # WaterHead as the project has it now
    assert mine["zones"][2:4] == [renumbered(zone) for zone in old["zones"][2:4]]  # lead
    assert mine["zones"][-1] == renumbered(old["zones"][-1]) == [{7, -6}]  # the wrapper
    icru = {1: 82, 2: 104, 3: 170, 4: 276, 0: 0}  # the old mat.dat's media
    assert [icru[m] for m in old["media"]] == [276, 276, 82, 82, *[104] * 8, 0]
    assert (
        ours["mat.dat"]
        == "MEDIUM 1\nICRU 82\nEND\nMEDIUM 2\nICRU 104\nEND\nMEDIUM 3\nICRU 276\nEND\n"
    )
    world_terms = len(mine["zones"]) - 5
    assert mine["media"] == [3, 3, 1, 1, *[2] * world_terms, 0]


def test_spread_out_bragg_peak_with_boxes_and_a_source_file_by_meaning() -> None:
    """ex4: boxes, density overrides, a beam from sobp.dat, several mesh detectors.

    The old converter wrote its black-hole world as a box of size 0 filled with water, plus a
    wrapper: ours is the project's 110 cm cube, black hole, without a wrapper.
    """
    ours, theirs = convert_fixture("ui-examples/ex4-shieldhit.json", 100000)
    assert set(ours) == DAT_FILES | {"sobp.dat"}
    assert ours["sobp.dat"] == theirs["sobp.dat"]
    for file in ("beam.dat", "detect.dat"):
        assert cards(ours[file]) == cards(theirs[file]), file
    mine, old = geo(ours["geo.dat"]), geo(theirs["geo.dat"])
    assert mine["header"] == ["0", "0", "Treatment", "plan"] == old["header"]
    assert mine["bodies"][:4] == old["bodies"][:4]
    assert mine["bodies"][4:] == [["BOX", -55, -55, -55, 110, 0, 0, 0, 110, 0, 0, 0, 110]]
    assert mine["zones"] == old["zones"][:5]
    old_media = {1: (104, None), 2: (223, None), 3: (276, None), 4: (276, 1.032), 5: (276, 1.032)}
    assert [old_media[m] for m in old["media"][:4]] == [
        (104, None),
        (276, 1.032),
        (223, None),
        (276, 1.032),
    ]
    assert mine["media"] == [1, 3, 2, 3, 0]
    assert cards(ours["mat.dat"]) == cards(
        "MEDIUM 1\nICRU 104\nEND\nMEDIUM 2\nICRU 223\nEND\nMEDIUM 3\nICRU 276\nRHO 1.032\nEND\n"
    )
