"""What the converter refuses: every refusal names the project item and what is wrong, and
reaches the user as a 400 at submission, before anything is stored."""

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from server.editor import ConversionError, convert
from tests.editor_projects import (
    box,
    cylinder,
    detector,
    example,
    modifier,
    output,
    quantity,
    sphere,
    world,
    zone,
)
from tests.editor_projects import project as build
from tests.helpers import login

Json = dict[str, Any]


def small() -> Json:
    figures = [box("B", size=(10, 10, 10)), sphere("S", radius=2)]
    zones = [zone("Z", [("union", "B"), ("subtraction", "S")]), zone("Core", [("union", "S")])]
    return build(figures, zones, world(box("W", size=(20, 20, 20))))


def figure(value: Json, name: str) -> Json:
    return next(f for f in value["figureManager"]["figures"] if f["name"] == name)


def first_zone(value: Json) -> Json:
    return value["zoneManager"]["zones"][0]


def _set(path: str, new: Any) -> Callable[[Json], None]:
    """A change of the small project: `new` at a dotted path (numbers index lists)."""

    def change(value: Json) -> None:
        *parents, last = path.split(".")
        for key in parents:
            value = value[int(key)] if key.isdigit() else value[key]
        value[last] = new  # type: ignore[index]

    return change


def _add_output(*quantities: Json) -> Callable[[Json], None]:
    def change(value: Json) -> None:
        value["scoringManager"]["outputs"] = [output("O", "Everything", *quantities)]

    return change


def _add_detector(detector_value: Json) -> Callable[[Json], None]:
    def change(value: Json) -> None:
        value["detectorManager"]["detectors"] = [detector_value]
        value["scoringManager"]["outputs"] = [output("O", detector_value["name"], quantity("Dose"))]

    return change


def _mesh(**changes: Any) -> Json:
    """A one-bin mesh detector "D" of 1 cm sides, with `changes`."""
    sides = {"width": 1, "height": 1, "depth": 1, "xSegments": 1, "ySegments": 1, "zSegments": 1}
    return detector("D", "Mesh", **(sides | changes))


def _tubes_subtracted(count: int) -> Callable[[Json], None]:
    def change(value: Json) -> None:
        tubes = [cylinder(f"T{i}", position=(i, 0, 0), radius=0.4, inner=0.2) for i in range(count)]
        value["figureManager"]["figures"] += tubes
        chain = first_zone(value)["unionOperations"][0]
        chain += [{"mode": "subtraction", "objectUuid": tube["uuid"]} for tube in tubes]

    return change


REFUSALS: list[tuple[str, Callable[[Json], None], str]] = [
    (
        "unknown figure type",
        lambda v: figure(v, "S")["geometryData"].update(geometryType="TorusGeometry"),
        "figure 'S': figures of type 'TorusGeometry' cannot be converted",
    ),
    (
        "tube without wall",
        lambda v: v["figureManager"]["figures"].append(cylinder("T", radius=2, inner=2)),
        "figure 'T': 'innerRadius' (2) must be smaller than 'radius'",
    ),
    (
        "negative size",
        lambda v: figure(v, "B")["geometryData"]["parameters"].update(width=-1),
        "figure 'B': 'width' must be greater than 0 (got -1)",
    ),
    (
        "size below what geo.dat shows",  # 4e-8 was written 0.0: a body holding no space
        lambda v: figure(v, "S")["geometryData"]["parameters"].update(radius=4e-8),
        "figure 'S': 'radius' must be at least 1e-05 cm (got 4e-08): geo.dat cannot show it",
    ),
    (
        "box edge below what geo.dat shows",
        lambda v: figure(v, "B")["geometryData"]["parameters"].update(depth=9e-6),
        "figure 'B': 'depth' must be at least 1e-05 cm (got 9e-06): geo.dat cannot show it",
    ),
    (
        "tube hole below what geo.dat shows",
        lambda v: v["figureManager"]["figures"].append(cylinder("T", radius=2, inner=1e-7)),
        "figure 'T': 'innerRadius' must be at least 1e-05 cm (got 1e-07): geo.dat cannot show it",
    ),
    (
        "missing position",
        lambda v: figure(v, "B")["geometryData"].pop("position"),
        "figure 'B': 'position' must be a list of 3 numbers",
    ),
    (
        "number too wide",
        lambda v: figure(v, "B")["geometryData"].update(position=[0, 123456789012, 0]),
        "figure 'B': the number 1.23457e+11 does not fit a 10-character field",
    ),
    (
        "corner past the largest float",  # finite numbers whose sum overflows: never `inf`
        lambda v: figure(v, "B")["geometryData"].update(
            position=[-1.7e308, 0, 0], parameters={"width": 1.7e308, "height": 1, "depth": 1}
        ),
        "figure 'B': the number -inf does not fit a 10-character field",
    ),
    (
        "mesh edge past the largest float",
        _add_detector(_mesh(position=(1.7e308, 0, 0), width=1.7e308)),
        "detector 'D': the number inf does not fit its field",
    ),
    (
        "count past a 32-bit integer",  # 1e308 is whole: it was written as a 309-digit count
        _add_detector(_mesh(zSegments=1e308)),
        f"detector 'D': 'zSegments' must be at most 2147483647 (got {int(1e308)})",
    ),
    (
        "mesh narrower than its position can show",  # 1e17 +- 0.5 printed 1e+17 twice
        _add_detector(_mesh(position=(0, 0, 1e17))),
        "detector 'D': its Z range (1e+17 to 1e+17) is too narrow to write",
    ),
    (
        "zone on a missing figure",
        lambda v: first_zone(v)["unionOperations"][0].append(
            {"mode": "subtraction", "objectUuid": "nope"}
        ),
        "zone 'Z': an operation refers to a figure that does not exist",
    ),
    (
        "zone starting with a subtraction",
        lambda v: first_zone(v).update(
            unionOperations=[[{"mode": "subtraction", "objectUuid": "fig-B"}]]
        ),
        "zone 'Z': its first operation must be a union",
    ),
    (
        "unknown zone operation",
        lambda v: first_zone(v)["unionOperations"][0][1].update(mode="xor"),
        "zone 'Z': each operation must have a 'mode' of union, intersection or subtraction",
    ),
    (
        "empty zone",
        lambda v: first_zone(v).update(
            unionOperations=[
                [
                    {"mode": "union", "objectUuid": "fig-S"},
                    {"mode": "subtraction", "objectUuid": "fig-S"},
                ]
            ]
        ),
        "zone 'Z': its operations cancel out: the zone holds no space",
    ),
    (
        "zone of an unknown material",
        lambda v: first_zone(v).update(materialUuid="gold"),
        "zone 'Z': its material is not one of the project's materials",
    ),
    (
        "unknown material override",
        lambda v: first_zone(v).update(materialPropertiesOverrides={"customStoppingPower": True}),
        "zone 'Z': the material override 'customStoppingPower' cannot be converted",
    ),
    (
        "density of vacuum",
        lambda v: first_zone(v).update(
            materialUuid="mat-vacuum", materialPropertiesOverrides={"density": 2}
        ),
        "zone 'Z': the density of vacuum or the black hole cannot be set",
    ),
    (
        "world of an unknown shape",
        lambda v: v["zoneManager"]["worldZone"]["geometryData"].update(geometryType="Cone"),
        "world zone: figures of type 'Cone' cannot be converted",
    ),
    (
        "rotated detector",
        _add_detector(_mesh(rotation=(0, 10, 0))),
        "detector 'D': SHIELD-HIT12A cannot score in a rotated detector",
    ),
    (
        "cylinder detector off the z axis",
        _add_detector(
            detector(
                "D", "Cyl", position=(1, 0, 0), radius=1, depth=1, radialSegments=1, zSegments=1
            )
        ),
        "detector 'D': a cylinder detector must lie on the z axis (x = y = 0)",
    ),
    (
        "mesh without bins",
        _add_detector(
            detector("D", "Mesh", width=1, height=1, depth=1, xSegments=0, ySegments=1, zSegments=1)
        ),
        "detector 'D': 'xSegments' must be at least 1 (got 0)",
    ),
    (
        "zone detector on no zone",
        _add_detector(detector("D", "Zone", zoneUuid="zone-Nowhere")),
        "detector 'D': its zone is not one of the project's zones",
    ),
    (
        "unknown detector type",
        _add_detector(detector("D", "Sphere")),
        "detector 'D': detectors of type 'Sphere' cannot be converted",
    ),
    (
        "output on a missing detector",
        _set("scoringManager.outputs.0.detectorUuid", "det-gone"),
        "output 'everything': its detector is not one of the project's detectors",
    ),
    (
        "output without quantities",
        _set("scoringManager.outputs.0.quantities", []),
        "output 'everything': an output needs at least one quantity",
    ),
    (
        "trace output",
        _set("scoringManager.outputs.0.trace", True),
        "output 'everything': trace outputs cannot be converted",
    ),
    (
        "no outputs",
        _set("scoringManager.outputs", []),
        "scoringManager: the project has no outputs: nothing would be scored",
    ),
    (
        "three modifiers",
        _add_output(quantity("Fluence", "Q", modifiers=[modifier("E", 0, 1, 1)] * 3)),
        "output 'O' quantity 'Q': at most 2 differential modifiers can be converted",
    ),
    (
        "reversed modifier",
        _add_output(quantity("Fluence", "Q", modifiers=[modifier("E", 5, 1, 1)])),
        "output 'O' quantity 'Q': a modifier needs lower < upper limit (and lower > 0 when logarithmic)",
    ),
    (  # written with 12 digits, they were "Diff1 1.0 1.0 10": a range of no width
        "modifier limits equal in 12 digits",
        _add_output(
            quantity(
                "Fluence", "Q", modifiers=[modifier("E", 1.0000000000001, 1.0000000000002, 10)]
            )
        ),
        "output 'O' quantity 'Q': a modifier needs lower < upper limit (and lower > 0 when logarithmic)",
    ),
    (
        "quantity of an unknown filter",
        _add_output(quantity("Fluence", "Q", filter_name="gone")),
        "output 'O' quantity 'Q': its filter is not one of the project's filters",
    ),
    (
        "quantity keyword with a space",
        _add_output(quantity("Dose Gy", "Q")),
        "output 'O' quantity 'Q': the quantity 'Dose Gy' is not a SHIELD-HIT12A keyword",
    ),
    (
        "filter without rules",
        _set("scoringManager.filters", [{"uuid": "f", "name": "F", "rules": []}]),
        "filter 'F': a filter needs at least one rule",
    ),
    (
        "filter with an unknown operator",
        _set(
            "scoringManager.filters",
            [{"uuid": "f", "name": "F", "rules": [{"keyword": "Z", "operator": "~", "value": 1}]}],
        ),
        "filter 'F': unknown operator '~' (expected == != < <= > >=)",
    ),
    (
        "unknown particle",
        _set("beam.particle", {"id": 6, "a": 1, "z": 0}),
        "beam particle: id 6 is not one of 1 (neutron), 2 (proton), 3 (pi-), 4 (pi+), 5 (pi0), 7 (anti-proton), "
        "15 (mu-), 16 (mu+), 21 (deuteron), 22 (triton), 23 (He-3), 24 (He-4), 25 (heavy ion)",
    ),
    (
        "heavy ion with Z above A",
        _set("beam.particle", {"id": 25, "a": 4, "z": 6}),
        "beam particle: Z (6) must not exceed A (4)",
    ),
    (
        "negative energy",
        _set("beam.energy", -150),
        "beam: 'energy' must be greater than 0 (got -150)",
    ),
    (
        "zero direction",
        _set("beam.direction", [0, 0, 0]),
        "beam: 'direction' must not be the zero vector",
    ),
    (
        "unknown sigma type",
        _set("beam.sigma", {"type": "Triangular", "x": 1, "y": 1}),
        "beam sigma: unknown 'type' 'Triangular' (expected one of: gaussian, flat square, flat circular)",
    ),
    (
        "flat circle whose radius is a hidden x",
        _set("beam.sigma", {"type": "Flat circular", "x": 0.7, "y": 0}),
        "beam sigma: a flat circular beam needs a radius 'y' greater than 0",
    ),
    (
        "divergence",
        _set("beam.divergence", {"distanceToFocal": 100, "x": 2, "y": 2}),
        "beam divergence: cannot be converted yet: set x and y to 0",
    ),
    ("empty source file", _set("beam.sourceType", "file"), "beam source file: is empty"),
    (
        "unknown straggling",
        _set("physic.energyModelStraggling", "Landau"),
        "physics: unknown 'energyModelStraggling' 'Landau' (expected one of: none, no straggling, gaussian, vavilov)",
    ),
    (
        "beam modulator",
        _set("specialComponentsManager.modulator", {"name": "Ripple filter"}),
        "beam modulator: beam modulators cannot be converted yet",
    ),
    (
        "CT cube",  # the editor's special component: a voxel phantom from a file on the server
        _set("specialComponentsManager.CTCube", {"name": "CT Cube", "pathOnServer": "ct/a.ctx"}),
        "CT cube: CT cubes cannot be converted yet",
    ),
    (
        "zone of too many terms",  # each tube subtracted doubles the terms: 2**8 > 200
        _tubes_subtracted(8),
        "zone 'Z': needs more than 200 terms",
    ),
    (
        "two figures of one uuid",  # the zones' operations name figures by uuid
        lambda v: v["figureManager"]["figures"].append({**sphere("S2"), "uuid": "fig-B"}),
        "figure 'S2': its uuid 'fig-B' is another item's too (uuids are unique)",
    ),
    (
        "two zones of one uuid",  # a Zone-scoring output names its zone by uuid
        _set("zoneManager.zones.1.uuid", "zone-Z"),
        "zone 'Core': its uuid 'zone-Z' is another item's too (uuids are unique)",
    ),
    (
        "the world zone of a zone's uuid",
        _set("zoneManager.worldZone.uuid", "zone-Core"),
        "world zone: its uuid 'zone-Core' is another item's too (uuids are unique)",
    ),
    (
        "two materials of one uuid",  # a zone names its material by uuid
        lambda v: v["materialManager"]["materials"].append(
            {"uuid": "mat-water", "name": "Heavy water", "icru": 277, "density": 1.1}
        ),
        "material 'Heavy water': its uuid 'mat-water' is another item's too (uuids are unique)",
    ),
    (
        "two detectors of one uuid",  # an output names its detector by uuid
        lambda v: v["detectorManager"].update(detectors=[_mesh(), {**_mesh(), "name": "D2"}]),
        "detector 'D2': its uuid 'det-D' is another item's too (uuids are unique)",
    ),
    (
        "two filters of one uuid",  # a quantity names its filter by uuid
        _set(
            "scoringManager.filters",
            [
                {
                    "uuid": "f",
                    "name": name,
                    "rules": [{"keyword": "Z", "operator": "==", "value": 1}],
                }
                for name in ("F", "G")
            ],
        ),
        "filter 'G': its uuid 'f' is another item's too (uuids are unique)",
    ),
    (
        "no figure manager",
        lambda v: v.pop("figureManager"),
        "project: 'figureManager' must be an object",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_item_and_the_problem(
    change: Callable[[Json], None], message: str
) -> None:
    value = small()
    convert(value, 10)  # the unchanged project converts
    change(value)
    with pytest.raises(ConversionError) as error:
        convert(value, 10)
    assert str(error.value) == message


def test_no_primaries_is_refused() -> None:
    with pytest.raises(
        ConversionError, match=r"^beam: the number of primaries per task must be at least 1$"
    ):
        convert(example(), 0)


@pytest.mark.parametrize("value", [[], "project", None, 3])
def test_a_project_that_is_not_an_object_is_refused(value: Any) -> None:
    with pytest.raises(ConversionError, match=r"^project: must be a JSON object$"):
        convert(value, 10)


async def test_refusals_are_400s_at_submission_and_store_nothing(client, conn) -> None:
    await login(client)
    answers, expected = [], []
    for _, change, message in REFUSALS:
        value = small()
        change(value)
        body = {"sim_type": "shieldhit", "input_type": "editor", "ntasks": 2, "input_json": value}
        response = await client.post("/jobs/direct", json=body)
        answers.append((response.status, await response.json()))
        prefix = "The project cannot be converted to SHIELD-HIT12A input: "
        expected.append((400, {"message": prefix + message}))
    assert answers == expected
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0


@pytest.mark.parametrize("path", ["scoringManager.outputs.0.name", "beam.sourceType"])
async def test_a_value_nested_near_the_parsers_limit_is_a_400(client, conn, path: str) -> None:
    """orjson reads 1,024 levels; a name (or a value a refusal quotes) nested 1,000 deep exhausts
    Python's recursion limit where the converter prints it: a 400, never a 500."""
    await login(client)
    value = small()
    _set(path, "DEEP")(value)
    body = {"sim_type": "shieldhit", "input_type": "editor", "ntasks": 1, "input_json": value}
    deep = "[" * 1000 + "]" * 1000
    data = orjson.dumps(body).replace(b'"DEEP"', deep.encode())
    headers = {"Content-Type": "application/json"}
    response = await client.post("/jobs/direct", data=data, headers=headers)
    found = (response.status, await response.json())
    assert found == (400, {"message": "Invalid input: nested too deeply"})
    assert await conn.fetchval("SELECT count(*) FROM simulations") == 0
