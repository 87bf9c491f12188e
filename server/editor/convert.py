"""The conversion of a whole project: the four SHIELD-HIT12A files (plus a beam source file)."""

import threading

from server.editor.beam import beam_files
from server.editor.detectors import read_detectors
from server.editor.geofile import geo_dat
from server.editor.materials import media, read_materials
from server.editor.project import ConversionError, Json
from server.editor.scoring import scoring_blocks
from server.editor.zones import read_geometry


def convert(project: Json, primaries: int, stop: threading.Event | None = None) -> dict[str, str]:
    """File name -> text of the SHIELD-HIT12A input for `primaries` per task.

    Raises ConversionError naming the project item that cannot be expressed, and
    logic.Stopped once `stop` is set.
    """
    if not isinstance(project, dict):
        raise ConversionError("project", "must be a JSON object")
    if not isinstance(primaries, int) or isinstance(primaries, bool) or primaries < 1:
        raise ConversionError("beam", "the number of primaries per task must be at least 1")
    _no_modulator(project)
    catalogue = read_materials(project)
    geometry = read_geometry(project, catalogue, stop)
    zone_media = media([zone.material for zone in geometry.zones])
    detectors = read_detectors(project, geometry.zone_numbers)
    icru = {uuid: material.icru for uuid, material in catalogue.items()}
    blocks = detectors.blocks + scoring_blocks(project, detectors.names, icru)
    beam = beam_files(project, primaries)
    return {
        "beam.dat": beam.pop("beam.dat"),
        "mat.dat": zone_media.text,
        "geo.dat": geo_dat(_title(project), geometry.bodies, geometry.zones, zone_media.numbers),
        "detect.dat": "\n\n".join(blocks) + "\n",
        **beam,  # the beam's source file, if any
    }


def _title(project: Json) -> str:
    about = project.get("project")
    title = about.get("title") if isinstance(about, dict) else None
    return title if isinstance(title, str) else ""


def _no_modulator(project: Json) -> None:
    components = project.get("specialComponentsManager")
    if isinstance(components, dict) and components.get("modulator"):
        raise ConversionError("beam modulator", "beam modulators cannot be converted yet")
    if isinstance(components, dict) and components.get("CTCube"):
        raise ConversionError("CT cube", "CT cubes cannot be converted yet")
