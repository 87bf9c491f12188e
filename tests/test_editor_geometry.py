"""The converter's geo.dat and mat.dat, mapping by mapping, with hand-computed expectations."""

import itertools
import math

import pytest

from server.editor import ConversionError, convert
from tests.editor_projects import box, cylinder, project, sphere, world, zone

WORLD_BOX = box("World", size=(100, 100, 100))


def geo_lines(figures, zones, world_zone=None) -> list[str]:
    files = convert(project(figures, zones, world_zone or world(WORLD_BOX)), 1000)
    return files["geo.dat"].splitlines()


def section(lines: list[str], number: int) -> list[str]:
    """The bodies (0), the zones (1) or the medium table (2) of geo.dat."""
    ends = [index for index, line in enumerate(lines) if line == "  END"]
    starts = [1, ends[0] + 1, ends[1] + 1]
    return lines[starts[number] : [*ends, len(lines)][number]]


def body_numbers(lines: list[str]) -> list[list[float]]:
    """Each body card's numbers, read in columns: 10-character fields from column 11."""
    cards: list[list[float]] = []
    for line in section(lines, 0):
        if line[2:5].strip():  # a code: a new body; else a continuation line
            cards.append([])
        cards[-1] += [float(line[i : i + 10]) for i in range(10, len(line), 10)]
    return cards


def rotated(vector: tuple[float, ...], degrees: tuple[float, float, float]) -> list[float]:
    """Independently of the converter's matrix: Rodrigues' formula about z, then y, then x
    (a three.js Euler 'XYZ' rotation applies Rz first: R v = Rx (Ry (Rz v)))."""
    result = list(vector)
    for axis, angle in zip(((0, 0, 1), (0, 1, 0), (1, 0, 0)), reversed(degrees), strict=True):
        result = rodrigues(axis, math.radians(angle), result)
    return result


def rodrigues(axis: tuple[int, int, int], angle: float, v: list[float]) -> list[float]:
    k = axis
    cross = [k[1] * v[2] - k[2] * v[1], k[2] * v[0] - k[0] * v[2], k[0] * v[1] - k[1] * v[0]]
    dot = sum(a * b for a, b in zip(k, v, strict=True))
    return [
        v[i] * math.cos(angle) + cross[i] * math.sin(angle) + k[i] * dot * (1 - math.cos(angle))
        for i in range(3)
    ]


def test_rodrigues_agrees_with_a_hand_computed_quarter_turn() -> None:
    # Rx(90) turns +z to -y; Ry(90) turns +z to +x; with both, Rx(Ry(z)) = Rx(x) = x.
    assert rotated((0, 0, 1), (90, 0, 0)) == pytest.approx([0, -1, 0], abs=1e-12)
    assert rotated((0, 0, 1), (0, 90, 0)) == pytest.approx([1, 0, 0], abs=1e-12)
    assert rotated((0, 1, 0), (90, 0, 90)) == pytest.approx([-1, 0, 0], abs=1e-12)


def test_a_cylinder_rotated_about_two_axes_becomes_an_rcc_along_its_rotated_axis() -> None:
    angles = (30.0, 45.0, 0.0)
    figure = cylinder("Rotated", position=(1, 2, 3), rotation=angles, radius=2, depth=10)
    (card, _) = body_numbers(geo_lines([figure], [zone("Z", [("union", "Rotated")])]))
    axis = rotated((0, 0, 10), angles)
    base = [c - a / 2 for c, a in zip((1, 2, 3), axis, strict=True)]
    # By hand: Ry(45) (0,0,10) = (7.0711, 0, 7.0711); Rx(30) of it = (7.0711, -3.5355, 6.1237).
    assert axis == pytest.approx([7.0710678, -3.5355339, 6.1237244], abs=1e-6)
    assert card == pytest.approx([*base, *axis, 2.0], abs=1e-6)


def test_a_box_rotated_about_two_axes_has_rotated_edges_from_its_corner() -> None:
    angles = (30.0, 0.0, 60.0)  # x then z: the order matters (Rx Rz != Rz Rx)
    figure = box("Tilted", position=(0, 0, 5), rotation=angles, size=(2, 4, 6))
    (card, _) = body_numbers(geo_lines([figure], [zone("Z", [("union", "Tilted")])]))
    edges = [rotated(edge, angles) for edge in ((2, 0, 0), (0, 4, 0), (0, 0, 6))]
    corner = [c - sum(edge[i] for edge in edges) / 2 for i, c in enumerate((0, 0, 5))]
    assert card == pytest.approx([*corner, *edges[0], *edges[1], *edges[2]], abs=1e-6)
    assert edges[0] == pytest.approx([1.0, 1.5, math.sqrt(3) / 2], abs=1e-9)  # by hand


def test_a_sphere_is_written_as_sph_with_its_centre_and_radius() -> None:
    lines = geo_lines(
        [sphere("Ball", position=(1, -2, 3.25), radius=4)], [zone("Z", [("union", "Ball")])]
    )
    assert section(lines, 0)[0] == "  SPH    1       1.0      -2.0      3.25       4.0"


def test_a_number_with_no_room_for_decimals_keeps_its_blank_column() -> None:
    """Numbers of 8 digits and more before the point: written "-1234568." (rounded, one blank
    column before it, as every field has). They were "-1234568.0", filling all 10 columns, so
    the field touched the one before it (readers that split on spaces read one number)."""
    lines = geo_lines(
        [sphere("Ball", position=(-1234567.5, 99999999.0, 0), radius=4)],
        [zone("Z", [("union", "Ball")])],
    )
    assert section(lines, 0)[0] == "  SPH    1 -1234568. 99999999.       0.0       4.0"


def test_a_tube_is_two_cylinders_and_zones_use_outer_minus_inner() -> None:
    tube = cylinder("Tube", position=(0, 0, 5), radius=5, depth=10, inner=2)
    figures = [box("Block", size=(20, 20, 20)), tube]
    zones = [
        zone("Pipe", [("union", "Tube")]),
        zone("Around", [("union", "Block"), ("subtraction", "Tube")]),
    ]
    lines = geo_lines(figures, zones)
    assert section(lines, 0)[2:6] == [
        "  RCC    2       0.0       0.0       0.0       0.0       0.0      10.0",
        "                 5.0",
        "  RCC    3       0.0       0.0       0.0       0.0       0.0      10.0",
        "                 2.0",
    ]
    # Block minus (outer and not inner) = (Block and not outer) or (Block and inner).
    assert section(lines, 1)[:2] == [
        "  001          +2     -3",
        "  002          +1     -2OR   +1     +3",
    ]


def test_the_world_zone_is_the_world_minus_every_zone_expanded_and_reduced() -> None:
    figures = [sphere(name, position=(i * 10, 0, 0)) for i, name in enumerate("ABCD", start=-2)]
    zones = [
        zone("AandB", [("union", "A"), ("intersection", "B")]),
        zone("C", [("union", "C")]),
        zone("DnotA", [("union", "D"), ("subtraction", "A")]),
    ]
    lines = geo_lines(figures, zones)
    # W and not(A and B) and not C and not(D and not A), W = body 5:
    # (-1 or -2) and -3 and (-4 or +1) -> {-1 -3 -4}, {-1 -3 +1} (empty), {-2 -3 -4}, {-2 -3 +1}.
    assert section(lines, 1)[3:] == [
        "  004          +5     -1     -3     -4",
        "  005          +5     -2     -3     -4",
        "  006          +5     -2     -3     +1",
    ]
    assert section(lines, 2) == ["    1    2    3    4    5    6", "    1    1    1    0    0    0"]
    terms = [{+5, -1, -3, -4}, {+5, -2, -3, -4}, {+5, -2, -3, +1}]
    for inside in itertools.product((False, True), repeat=5):  # every point class of 5 bodies
        a, b, c, d, w = inside
        expected = w and not (a and b) and not c and not (d and not a)
        found = any(all(inside[abs(n) - 1] == (n > 0) for n in term) for term in terms)
        assert found == expected


def test_absorbed_world_terms_are_dropped() -> None:
    zones = [zone("A", [("union", "A")]), zone("AandB", [("union", "A"), ("intersection", "B")])]
    lines = geo_lines([sphere("A"), sphere("B", position=(1, 0, 0))], zones)
    # W and not A and (not A or not B) = W and not A: the term {W, -A, -B} is absorbed.
    assert section(lines, 1)[2:] == ["  003          +3     -1"]


def test_a_world_of_vacuum_gets_a_wrapper_one_centimetre_larger_as_black_hole() -> None:
    world_cylinder = cylinder("World", position=(0, 0, 10), rotation=(90, 0, 0), radius=6, depth=24)
    lines = geo_lines([sphere("A")], [zone("A", [("union", "A")])], world(world_cylinder, "vacuum"))
    assert section(lines, 0)[1:] == [
        "  RCC    2       0.0      12.0      10.0       0.0     -24.0       0.0",
        "                 6.0",
        "  RCC    3       0.0      13.0      10.0       0.0     -26.0       0.0",
        "                 7.0",
    ]
    assert section(lines, 1)[1:] == ["  002          +2     -1", "  003          +3     -2"]
    assert section(lines, 2) == ["    1    2    3", "    1 1000    0"]


def test_box_and_sphere_worlds_grow_by_one_centimetre_on_every_side() -> None:
    for world_figure, wrapper in [
        (
            box("W", position=(0, 1, 0), size=(22, 44, 22)),
            [-12, -22, -12, 24, 0, 0, 0, 46, 0, 0, 0, 24],
        ),
        (sphere("W", position=(0, 0, 1), radius=30), [0, 0, 1, 31]),
    ]:
        lines = geo_lines([sphere("A")], [zone("A", [("union", "A")])], world(world_figure, "air"))
        assert body_numbers(lines)[-1] == wrapper


def test_the_world_expansion_is_capped() -> None:
    # Each zone is one term of 3 bodies, so "not zone" has 3 terms: n zones give 3**n terms.
    def triples(count: int) -> tuple[list, list]:
        figures = [sphere(f"S{i}", position=(i, 0, 0)) for i in range(3 * count)]
        chains = [
            zone(
                f"Z{i}",
                [
                    ("union", f"S{3 * i}"),
                    ("intersection", f"S{3 * i + 1}"),
                    ("intersection", f"S{3 * i + 2}"),
                ],
            )
            for i in range(count)
        ]
        return figures, chains

    lines = geo_lines(*triples(4))
    assert len(section(lines, 1)) == 4 + 3**4
    with pytest.raises(ConversionError) as error:
        convert(project(*triples(5), world(WORLD_BOX)), 1000)
    assert str(error.value) == (
        "world zone: the space around the zones needs more than 200 zones; "
        "use fewer subtractions or simpler zones"
    )


def test_zone_cards_continue_after_nine_groups() -> None:
    figures = [sphere(f"S{i}", position=(i, 0, 0)) for i in range(11)]
    chain = [("union", "S0")] + [("subtraction", f"S{i}") for i in range(1, 11)]
    lines = geo_lines(figures, [zone("Many", chain)])
    assert section(lines, 1)[:2] == [
        "  001          +1     -2     -3     -4     -5     -6     -7     -8     -9",
        "              -10    -11",
    ]


def test_media_number_used_materials_in_material_order_with_density_overrides() -> None:
    figures = [sphere(name, position=(i * 3, 0, 0)) for i, name in enumerate("ABCD")]
    zones = [
        zone("A", [("union", "A")], material="lead"),
        zone("B", [("union", "B")], material="water", overrides={"density": 1.05}),
        zone("C", [("union", "C")], material="water"),
        zone("D", [("union", "D")], material="water", overrides={"density": 1.05}),
    ]
    files = convert(project(figures, zones, world(WORLD_BOX, "air")), 1000)
    assert files["mat.dat"] == (
        "MEDIUM 1\nICRU 104\nEND\n"
        "MEDIUM 2\nICRU 276\nRHO 1.05\nEND\n"
        "MEDIUM 3\nICRU 276\nEND\n"
        "MEDIUM 4\nICRU 82\nEND\n"
    )
    assert section(files["geo.dat"].splitlines(), 2)[1] == "    4    2    3    2    1    0"


def test_the_header_holds_the_title_on_one_line() -> None:
    value = project([sphere("A")], [zone("A", [("union", "A")])], world(WORLD_BOX))
    value["project"]["title"] = "Two\nlines   of title"
    assert convert(value, 10)["geo.dat"].splitlines()[0] == "    0    0          Two lines of title"


def test_body_numbers_in_zone_cards_fit_their_signed_i5_fields() -> None:
    """A zone card's body is an I5 field with its sign: +9999 fits, +10000 (6 characters)
    shifts every later column, so SHIELD-HIT12A would read other bodies. Past 9999 bodies the
    project is refused, never written wrong."""
    figures = [sphere(f"S{i}", position=(i, 0, 0)) for i in range(10_000)]
    zones = [zone("Last", [("union", "S9999")])]
    try:
        lines = geo_lines(figures, zones)
    except ConversionError as error:
        assert str(error) == "figureManager: more than 9999 bodies"
        return
    pytest.fail(f"zone cards with 6-character body fields: {section(lines, 1)}")


def test_the_zone_algebra_has_a_budget() -> None:
    """Every region can stay under 200 terms while each step compares thousands of long
    terms: one zone, the union of 200 intersections of 100 figures (a 1 MB project), took
    about 14 s of CPU to convert, and the work grows with the size of the project. A
    conversion has a budget and past it the project is refused."""
    chains = [
        [("union", f"A{i}")] + [("intersection", f"B{j}") for j in range(99)] for i in range(200)
    ]
    figures = [sphere(f"A{i}", position=(i, 0, 0)) for i in range(200)]
    figures += [sphere(f"B{j}", position=(0, j, 0)) for j in range(99)]
    with pytest.raises(ConversionError) as error:
        convert(project(figures, [zone("Z", *chains)], world(WORLD_BOX)), 1000)
    assert "expanding the zones takes more than" in str(error.value)
