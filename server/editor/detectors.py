"""Detectors -> the `Geometry` blocks of detect.dat (Cyl, Mesh, Zone, All).

An output of the editor's "Zone" scoring type (`scoringType` "ZONE") scores in a zone with no
detector: it gets a `Geometry Zone` block of its own, as a detector of type Zone on that zone
would, named after the output.

A cylinder scores along the z axis from z - depth/2 to z + depth/2 and a mesh spans its full
width, height and depth around its centre. SHIELD-HIT12A's scoring grids are not rotated and
its cylinders sit on the z axis, so a rotated detector or an off-axis cylinder is refused
rather than scored somewhere else.
"""

import math
from dataclasses import dataclass

from server.editor.formatting import UniqueNames, free
from server.editor.project import (
    ConversionError,
    Json,
    by_uuid,
    entries,
    integer,
    label,
    number,
    positive,
    section,
    text,
    vector,
)


@dataclass(frozen=True)
class Detectors:
    names: dict[str, str]  # detect.dat name by detector uuid
    blocks: list[str]


def read_detectors(project: Json, zone_numbers: dict[str, list[int]]) -> Detectors:
    manager = section(project, "detectorManager", "project")
    names = UniqueNames()
    names_by_uuid: dict[str, str] = {}
    blocks = []
    for index, detector in enumerate(entries(manager, "detectors", "detectorManager")):
        item = label("detector", detector, index)
        name = names.take(str(detector.get("name") or ""), f"detector_{index + 1}")
        blocks.append(_block(detector, name, item, zone_numbers))
        by_uuid(names_by_uuid, detector, item, name)
    for index, output in _zone_outputs(project):
        item = label("output", output, index)
        name = names.take(str(output.get("name") or ""), f"zone_{index + 1}")
        blocks.append(_zone_block(name, _zone(output, {}, item, zone_numbers)))
        names_by_uuid[zone_output_key(index)] = name
    return Detectors(names_by_uuid, blocks)


def zone_output_key(index: int) -> str:
    """Where Detectors.names keeps the block made for output `index` of the "Zone" scoring type
    (not a uuid: such an output has no detector)."""
    return f"output {index} in its zone"


def _zone_outputs(project: Json) -> list[tuple[int, Json]]:
    """The outputs of the "Zone" scoring type, with their index (the rest of the scoring
    manager is checked where it is read)."""
    manager = project.get("scoringManager")
    outputs = manager.get("outputs") if isinstance(manager, dict) else None
    if not isinstance(outputs, list):
        return []
    return [
        (index, output)
        for index, output in enumerate(outputs)
        if isinstance(output, dict) and output.get("scoringType") == "ZONE"
    ]


def _zone_block(name: str, number: int) -> str:
    return "\n".join(["Geometry Zone", f"    Name {name}", f"    Zone {number}"])


def _block(detector: Json, name: str, item: str, zone_numbers: dict[str, list[int]]) -> str:
    geometry = section(detector, "geometryData", item)
    kind = text(geometry, "geometryType", item)
    if kind == "Zone":
        lines = [f"Zone {_zone(detector, geometry, item, zone_numbers)}"]
    elif kind == "All":
        lines = []
    elif kind in ("Cyl", "Mesh"):
        position = _unrotated(geometry, item)
        parameters = section(geometry, "parameters", item)
        lines = (
            _cyl(parameters, position, item) if kind == "Cyl" else _mesh(parameters, position, item)
        )
    else:
        raise ConversionError(item, f"detectors of type {kind!r} cannot be converted")
    return "\n".join([f"Geometry {kind}", f"    Name {name}", *(f"    {line}" for line in lines)])


def _unrotated(geometry: Json, item: str) -> tuple[float, float, float]:
    if geometry.get("rotation") is not None and any(vector(geometry, "rotation", item)):
        raise ConversionError(item, "SHIELD-HIT12A cannot score in a rotated detector")
    return vector(geometry, "position", item)


def _axis(name: str, low: float, high: float, bins: int, item: str) -> str:
    for value in (low, high):  # centre +- half a size can overflow to infinity
        if not math.isfinite(value):
            raise ConversionError(item, f"the number {value:g} does not fit its field")
    start, end = free(low), free(high)
    if float(start) >= float(end):  # a size lost beside a far larger position
        raise ConversionError(
            item, f"its {name} range ({low:g} to {high:g}) is too narrow to write"
        )
    return f"{name} {start} {end} {bins}"


def _cyl(parameters: Json, position: tuple[float, float, float], item: str) -> list[str]:
    x, y, z = position
    if x != 0 or y != 0:
        raise ConversionError(item, "a cylinder detector must lie on the z axis (x = y = 0)")
    radius = positive(parameters, "radius", item)
    inner = (
        number(parameters, "innerRadius", item, minimum=0) if "innerRadius" in parameters else 0.0
    )
    if inner >= radius:
        raise ConversionError(item, "'innerRadius' must be smaller than 'radius'")
    depth = positive(parameters, "depth", item)
    return [
        _axis("R", inner, radius, integer(parameters, "radialSegments", item, minimum=1), item),
        _axis(
            "Z",
            z - depth / 2,
            z + depth / 2,
            integer(parameters, "zSegments", item, minimum=1),
            item,
        ),
    ]


def _mesh(parameters: Json, position: tuple[float, float, float], item: str) -> list[str]:
    lines = []
    for axis, centre, size, bins in zip(
        "XYZ",
        position,
        ("width", "height", "depth"),
        ("xSegments", "ySegments", "zSegments"),
        strict=True,
    ):
        half = positive(parameters, size, item) / 2
        count = integer(parameters, bins, item, minimum=1)
        lines.append(_axis(axis, centre - half, centre + half, count, item))
    return lines


def _zone(detector: Json, geometry: Json, item: str, zone_numbers: dict[str, list[int]]) -> int:
    parameters = geometry.get("parameters")
    places = [detector, geometry, parameters if isinstance(parameters, dict) else {}]
    uuid = next((place["zoneUuid"] for place in places if place.get("zoneUuid")), None)
    if uuid is None:  # a Zone-scoring output (or zone detector) before a zone is picked
        raise ConversionError(item, "no zone is chosen for it")
    numbers = zone_numbers.get(uuid) if isinstance(uuid, str) else None
    if not numbers:
        raise ConversionError(item, "its zone is not one of the project's zones")
    if len(numbers) > 1:
        raise ConversionError(
            item, "the world zone is several zones here: score in a zone of your own"
        )
    return numbers[0]
