"""Materials -> mat.dat media, and the medium number of every zone.

ICRU 0 is the black hole (medium 0) and ICRU 1000 vacuum (medium 1000): neither is written to
mat.dat. Every other material used by a zone becomes a medium, numbered 1..K in the order of
the project's materials; a zone that overrides the density gets a medium with `RHO` (zones with
the same material and the same override share it). The editor gives such a zone a copy of its
material (`customMaterial`, with `originalMaterialUuid`) that the material list does not hold.
"""

from dataclasses import dataclass

from server.editor.formatting import free
from server.editor.project import (
    ConversionError,
    Json,
    by_uuid,
    entries,
    integer,
    label,
    positive,
    section,
)

BLACK_HOLE, VACUUM = 0, 1000


@dataclass(frozen=True)
class Material:
    """What a zone is filled with: its ICRU number and density override."""

    icru: int
    order: int  # position of the (original) material in the project's list
    density: float | None = None


Catalogue = dict[str, Material]  # by material uuid


def read_materials(project: Json) -> Catalogue:
    manager = section(project, "materialManager", "project")
    catalogue: Catalogue = {}
    for index, material in enumerate(entries(manager, "materials", "materialManager")):
        item = label("material", material, index)
        by_uuid(catalogue, material, item, Material(integer(material, "icru", item), index))
    return catalogue


def zone_material(zone: Json, item: str, catalogue: Catalogue) -> Material:
    """The material of a zone (or of the world zone), with its density override."""
    uuid = zone.get("materialUuid")
    material = catalogue.get(uuid) if isinstance(uuid, str) else None
    custom = zone.get("customMaterial")
    if isinstance(custom, dict) and custom.get("uuid") == uuid:
        original = catalogue.get(str(custom.get("originalMaterialUuid")))
        order = original.order if original else len(catalogue)
        material = Material(integer(custom, "icru", item), order)
    if material is None:
        raise ConversionError(item, "its material is not one of the project's materials")
    density = _density(zone, item)
    if density is not None and material.icru in (BLACK_HOLE, VACUUM):
        raise ConversionError(item, "the density of vacuum or the black hole cannot be set")
    return Material(material.icru, material.order, density)


def _density(zone: Json, item: str) -> float | None:
    overrides = zone.get("materialPropertiesOverrides") or {}
    if not isinstance(overrides, dict):
        raise ConversionError(item, "'materialPropertiesOverrides' must be an object")
    for key, value in overrides.items():
        if key != "density" and value not in (None, False, "", {}):
            raise ConversionError(item, f"the material override {key!r} cannot be converted")
    return None if overrides.get("density") is None else positive(overrides, "density", item)


@dataclass(frozen=True)
class Media:
    numbers: list[int]  # the medium of each zone, in zone order
    text: str  # mat.dat


def media(materials: list[Material]) -> Media:
    """Medium numbers for the zones' materials, and mat.dat."""
    written = [m for m in materials if m.icru not in (BLACK_HOLE, VACUUM)]
    first_use = {material: index for index, material in reversed(list(enumerate(written)))}
    ordered = sorted(first_use, key=lambda m: (m.order, first_use[m]))
    numbered = {material: number for number, material in enumerate(ordered, start=1)}
    numbers = [numbered.get(material, material.icru) for material in materials]
    return Media(numbers, "".join(_medium(number, m) for m, number in numbered.items()))


def _medium(number: int, material: Material) -> str:
    rho = "" if material.density is None else f"RHO {free(material.density)}\n"
    return f"MEDIUM {number}\nICRU {material.icru}\n{rho}END\n"
