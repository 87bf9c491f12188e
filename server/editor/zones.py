"""Bodies and zones of geo.dat: the figures, the editor's zones, the world zone and its wrapper.

Bodies are numbered in figure order (a tube takes two numbers, outer then inner), then the
world body, then, when the world is not a black hole, the wrapper body (the world grown by
1 cm). Zones are the editor zones in order, then the terms of the world zone (the world body
minus every zone, expanded into a union of intersections, each term its own zone with the
world's material), then the wrapper zone (wrapper minus world, black hole).
"""

import threading
from dataclasses import dataclass, field

from server.editor import logic
from server.editor.figures import Body, bodies, grown, read_shape
from server.editor.materials import BLACK_HOLE, Catalogue, Material, zone_material
from server.editor.project import (
    ConversionError,
    Json,
    by_uuid,
    entries,
    label,
    section,
)

MAX_TERMS = 200  # of one zone's expansion: past this a project is refused, not slowly expanded
MAX_ZONES = 999  # zone names are 3 digits
MAX_BODIES = 9999  # zone cards write them signed in I5 fields: +9999
WRAPPER_MARGIN = 1.0  # cm


@dataclass(frozen=True)
class Zone:
    region: logic.Region
    material: Material
    item: str


@dataclass
class Geometry:
    bodies: list[Body] = field(default_factory=list)
    zones: list[Zone] = field(default_factory=list)
    figure_regions: dict[str, logic.Region] = field(default_factory=dict)  # by figure uuid
    zone_numbers: dict[str, list[int]] = field(default_factory=dict)  # by zone uuid (1-based)
    budget: logic.Budget = field(default_factory=logic.Budget)  # of the zone algebra

    def add(self, new: list[Body]) -> list[int]:
        first = len(self.bodies) + 1
        self.bodies.extend(new)
        return list(range(first, first + len(new)))


def read_geometry(
    project: Json, catalogue: Catalogue, stop: threading.Event | None = None
) -> Geometry:
    """Bodies and zones, the zones filled with the project's materials (logic.Stopped once
    `stop` is set)."""
    geometry = Geometry(budget=logic.Budget(stop=stop))
    figures = entries(section(project, "figureManager", "project"), "figures", "figureManager")
    for index, figure in enumerate(figures):
        _add_figure(geometry, figure, label("figure", figure, index))
    _check_bodies(geometry)  # before any zone is expanded
    manager = section(project, "zoneManager", "project")
    for index, zone in enumerate(entries(manager, "zones", "zoneManager")):
        _add_zone(geometry, zone, label("zone", zone, index), catalogue)
    _add_world(geometry, section(manager, "worldZone", "zoneManager"), catalogue)
    _check_bodies(geometry)
    if len(geometry.zones) > MAX_ZONES:
        raise ConversionError("zoneManager", f"more than {MAX_ZONES} zones after expansion")
    return geometry


def _check_bodies(geometry: Geometry) -> None:
    if len(geometry.bodies) > MAX_BODIES:
        raise ConversionError("figureManager", f"more than {MAX_BODIES} bodies")


def _add_figure(geometry: Geometry, figure: Json, item: str) -> None:
    numbers = geometry.add(bodies(read_shape(figure, item)))
    region = [logic.term((numbers[0], *(-n for n in numbers[1:])))]
    by_uuid(geometry.figure_regions, figure, item, region)


def _add_zone(geometry: Geometry, zone: Json, item: str, catalogue: Catalogue) -> None:
    region = _zone_region(geometry, zone, item)
    if not region:
        raise ConversionError(item, "its operations cancel out: the zone holds no space")
    geometry.zones.append(Zone(region, zone_material(zone, item, catalogue), item))
    by_uuid(geometry.zone_numbers, zone, item, [len(geometry.zones)])


def _add_world(geometry: Geometry, world: Json, catalogue: Catalogue) -> None:
    item = "world zone"
    material = zone_material(world, item, catalogue)
    shape = read_shape(world, item, solid=True)
    (world_body,) = geometry.add(bodies(shape))
    first = len(geometry.zones) + 1
    terms = _outside_zones(geometry, world_body, item)
    geometry.zones.extend(Zone([term], material, item) for term in terms)
    by_uuid(geometry.zone_numbers, world, item, list(range(first, len(geometry.zones) + 1)))
    if material.icru != BLACK_HOLE:
        (wrapper,) = geometry.add(bodies(grown(shape, WRAPPER_MARGIN)))
        geometry.zones.append(Zone([(wrapper, -world_body)], Material(BLACK_HOLE, 0), item))


def _outside_zones(geometry: Geometry, world_body: int, item: str) -> logic.Region:
    """The world body minus every zone, as a union of terms."""
    region: logic.Region = [(world_body,)]
    try:
        for zone in geometry.zones:
            region = logic.subtract(region, zone.region, MAX_TERMS, geometry.budget)
    except logic.TooComplex as exc:
        raise ConversionError(
            item,
            f"{str(exc) or f'the space around the zones needs more than {MAX_TERMS} zones'}; "
            "use fewer subtractions or simpler zones",
        ) from None
    return region


def _zone_region(geometry: Geometry, zone: Json, item: str) -> logic.Region:
    chains = zone.get("unionOperations")
    if not isinstance(chains, list) or not chains or not all(isinstance(c, list) for c in chains):
        raise ConversionError(item, "'unionOperations' must be a non-empty list of lists")
    operations = [operation for chain in chains for operation in chain]
    if not operations:  # a zone the editor has just added: `[[]]` until a figure is picked
        raise ConversionError(item, "no figure is chosen for it in its Zone Operations")
    return _chains(geometry, operations, item)


def _chains(geometry: Geometry, operations: list[object], item: str) -> logic.Region:
    """The union over chains: `union` starts a chain, then intersect with or subtract figures."""
    result: logic.Region = []
    chain: logic.Region | None = None
    try:
        for operation in operations:
            mode, figure = _operation(geometry, operation, item)
            if mode == "union":
                result = logic.simplify(result + (chain or []), MAX_TERMS, geometry.budget)
                chain = figure
            elif chain is None:
                raise ConversionError(item, "its first operation must be a union")
            elif mode == "intersection":
                chain = logic.intersect(chain, figure, MAX_TERMS, geometry.budget)
            else:
                chain = logic.subtract(chain, figure, MAX_TERMS, geometry.budget)
        return logic.simplify(result + (chain or []), MAX_TERMS, geometry.budget)
    except logic.TooComplex as exc:
        raise ConversionError(item, str(exc) or f"needs more than {MAX_TERMS} terms") from None


def _operation(geometry: Geometry, operation: object, item: str) -> tuple[str, logic.Region]:
    if not isinstance(operation, dict) or operation.get("mode") not in (
        "union",
        "intersection",
        "subtraction",
    ):
        raise ConversionError(
            item, "each operation must have a 'mode' of union, intersection or subtraction"
        )
    figure = geometry.figure_regions.get(str(operation.get("objectUuid")))
    if figure is None:
        raise ConversionError(item, "an operation refers to a figure that does not exist")
    return operation["mode"], figure
