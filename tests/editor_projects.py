"""Editor projects for the converter's tests, built in the shape the web UI sends: the UI's
example project, and figures, zones, detectors and outputs to put in it."""

import copy
from typing import Any

from tests.helpers import EDITOR, FIXTURES, read_json

Json = dict[str, Any]
MATERIALS = {
    "black": ("BLACK HOLE", 0),
    "vacuum": ("VACUUM", 1000),
    "air": ("AIR, DRY (NEAR SEA LEVEL)", 104),
    "water": ("WATER, LIQUID", 276),
    "lead": ("LEAD", 82),
}


def example() -> Json:
    """The UI's example project ("Proton pencil beam in water"), a fresh copy each time."""
    return copy.deepcopy(read_json(FIXTURES / EDITOR)["input_json"])


def geometry_data(
    kind: str, position: tuple[float, ...], rotation: tuple[float, ...], **parameters: float
) -> Json:
    return {
        "geometryType": kind,
        "position": list(position),
        "rotation": list(rotation),
        "parameters": parameters,
    }


def cylinder(
    name: str, position=(0, 0, 0), rotation=(0, 0, 0), radius=1.0, depth=2.0, inner=0.0
) -> Json:
    data = geometry_data(
        "HollowCylinderGeometry", position, rotation, innerRadius=inner, radius=radius, depth=depth
    )
    return {"name": name, "type": "CylinderFigure", "uuid": f"fig-{name}", "geometryData": data}


def box(name: str, position=(0, 0, 0), rotation=(0, 0, 0), size=(1.0, 1.0, 1.0)) -> Json:
    width, height, depth = size
    data = geometry_data("BoxGeometry", position, rotation, width=width, height=height, depth=depth)
    return {"name": name, "type": "BoxFigure", "uuid": f"fig-{name}", "geometryData": data}


def sphere(name: str, position=(0, 0, 0), radius=1.0) -> Json:
    data = geometry_data("SphereGeometry", position, (0, 0, 0), radius=radius)
    return {"name": name, "type": "SphereFigure", "uuid": f"fig-{name}", "geometryData": data}


def zone(
    name: str,
    *chains: list[tuple[str, str]],
    material: str = "water",
    overrides: Json | None = None,
) -> Json:
    """A zone; each chain is [(mode, figure name), ...] starting with a union."""
    operations = [
        [{"mode": mode, "objectUuid": f"fig-{figure}"} for mode, figure in chain]
        for chain in chains
    ]
    return {
        "uuid": f"zone-{name}",
        "name": name,
        "type": "BooleanZone",
        "materialUuid": f"mat-{material}",
        "materialPropertiesOverrides": overrides or {},
        "unionOperations": operations,
    }


def world(figure: Json, material: str = "black") -> Json:
    return {
        "uuid": "zone-world",
        "type": "WorldZone",
        "name": "World Zone",
        "materialUuid": f"mat-{material}",
        "geometryData": figure["geometryData"],
    }


def project(figures: list[Json], zones: list[Json], world_zone: Json) -> Json:
    """The example project with its geometry replaced; its beam and outputs are kept, the
    outputs rewired to one `All` detector (the example's cylinders may not exist any more)."""
    result = example()
    result["figureManager"]["figures"] = figures
    result["zoneManager"]["zones"] = zones
    result["zoneManager"]["worldZone"] = world_zone
    result["materialManager"]["materials"] = [
        {"uuid": f"mat-{key}", "name": name, "icru": icru, "density": 1}
        for key, (name, icru) in MATERIALS.items()
    ]
    result["detectorManager"]["detectors"] = [detector("Everything", "All")]
    result["scoringManager"]["outputs"] = [output("everything", "Everything", quantity("Dose"))]
    result["scoringManager"]["filters"] = []
    return result


def detector(
    name: str, kind: str, position=(0, 0, 0), rotation=(0, 0, 0), **parameters: Any
) -> Json:
    data = geometry_data(kind, position, rotation, **parameters)
    return {"name": name, "type": "Detector", "uuid": f"det-{name}", "geometryData": data}


def quantity(
    keyword: str, name: str | None = None, filter_name: str | None = None, modifiers=()
) -> Json:
    value: Json = {"name": name or keyword, "keyword": keyword, "modifiers": list(modifiers)}
    if filter_name:
        value["filter"] = f"filter-{filter_name}"
    return value


def output(name: str, detector_name: str, *quantities: Json) -> Json:
    return {
        "name": name,
        "uuid": f"out-{name}",
        "detectorUuid": f"det-{detector_name}",
        "quantities": list(quantities),
        "trace": False,
    }


def modifier(kind: str, low: float, high: float, bins: int, log: bool = False) -> Json:
    return {
        "diffType": kind,
        "lowerLimit": low,
        "upperLimit": high,
        "binsNumber": bins,
        "isLog": log,
    }
